#pragma once
// Mimi's encoder/decoder transformer (docs/moshi.md §5.3, upstream ProjectedTransformer with
// d_model == dimension, so no projections): pre-norm LayerNorm layers with LayerScale, causal
// self-attention with interleaved RoPE (§2.4) and a local window of `context` steps (§2.3),
// GELU MLP without biases. Input/output in conv layout [B, C, T].
#include <ATen/ATen.h>

#include <string>
#include <vector>

#include "mimi/config.h"

namespace mtt::mimi {

class WeightStore;

struct MimiTransformerLayer {
  at::Tensor in_proj;   // [3*C, C]: [Q heads | K heads | V heads] (§2.3)
  at::Tensor out_proj;  // [C, C]
  at::Tensor norm1_w, norm1_b, norm2_w, norm2_b;
  at::Tensor linear1, linear2;  // [F, C], [C, F]
  at::Tensor scale1, scale2;    // LayerScale [C]
};

struct KvCache {
  at::Tensor k, v;       // Exact: [B, H, L, D] past keys, L <= context-1. Ring: [B, H, context, D]
  at::Tensor positions;  // Ring: absolute position of each slot, -1 = empty ([capacity], int64)
  int64_t end = 0;       // Ring: number of steps written
};

struct TransformerState {
  int64_t offset = 0;  // position of the next step (RoPE and mask)
  std::vector<KvCache> layers;
};

class MimiTransformer {
 public:
  // prefix "encoder_transformer" / "decoder_transformer"; accepts the released file's fused
  // legacy names (`in_proj_weight`, `out_proj.weight`) and the module names (§5.6).
  static MimiTransformer load(WeightStore& w, const TransformerConfig& c, const std::string& prefix);

  at::Tensor forward(const at::Tensor& x) const;  // offline, positions 0..T-1
  at::Tensor step(const at::Tensor& x, TransformerState& st, KvMode mode) const;
  TransformerState new_state() const;
  void to(const at::TensorOptions& o);
  const TransformerConfig& config() const { return cfg_; }

 private:
  at::Tensor run(const at::Tensor& x, TransformerState* st, KvMode mode) const;
  TransformerConfig cfg_;
  std::vector<MimiTransformerLayer> layers_;
};

// Interleaved RoPE on [B, H, T, D] at positions offset..offset+T-1, computed in float32 (§2.4).
at::Tensor apply_rope(const at::Tensor& x, int64_t offset, double max_period);

}  // namespace mtt::mimi
