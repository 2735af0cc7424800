#pragma once
// Causal streaming convolutions (docs/moshi.md §5.7, upstream `modules/conv.py`).
// forward() is the offline call; step() carries state across calls. forward(x) equals step(x)
// on a fresh state, so streaming is exact for convolutions.
#include <ATen/ATen.h>

#include <string>

namespace mtt::mimi {

class WeightStore;

struct Conv1d {
  at::Tensor weight;  // [out, in/groups, k]
  at::Tensor bias;    // [out] or undefined
  int stride = 1;
  int dilation = 1;
  int groups = 1;
  bool replicate = false;  // pad_mode "replicate" (downsample, §5.4) instead of zeros

  // P = (k-1)*dilation + 1 - stride: the left context a causal step needs (§5.7).
  int64_t padding_total() const { return (weight.size(2) - 1) * dilation + 1 - stride; }

  struct State {
    at::Tensor previous;  // [B, in, P], last P input samples
    bool first = true;    // replicate mode: fill `previous` with the first sample on first call
  };
  // x [B, in, T] with T a positive multiple of stride -> [B, out, T/stride].
  at::Tensor forward(const at::Tensor& x) const;
  at::Tensor step(const at::Tensor& x, State& st) const;

  static Conv1d load(WeightStore& w, const std::string& prefix, int in, int out, int k, int stride, int dilation,
                     int groups, bool bias, bool replicate);
  void to(const at::TensorOptions& o);
};

struct ConvTranspose1d {
  at::Tensor weight;  // [in, out/groups, k]
  at::Tensor bias;    // [out] or undefined
  int stride = 1;
  int groups = 1;

  struct State {
    at::Tensor partial;  // [B, out, k - stride], overlap carried to the next call, bias removed
  };
  // x [B, in, T] -> [B, out, T*stride] (the trailing k-stride samples are trimmed offline,
  // carried to the next call when streaming; trim_right_ratio 1, §5.7).
  at::Tensor forward(const at::Tensor& x) const;
  at::Tensor step(const at::Tensor& x, State& st) const;

  static ConvTranspose1d load(WeightStore& w, const std::string& prefix, int in, int out, int k, int stride,
                              int groups, bool bias);
  void to(const at::TensorOptions& o);
};

}  // namespace mtt::mimi
