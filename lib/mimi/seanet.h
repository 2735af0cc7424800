#pragma once
// SEANet encoder/decoder (docs/moshi.md §5.2, upstream `modules/seanet.py`): causal convs with
// ELU and residual blocks y = x + conv_k1(elu(conv_k3(elu(x)))) (true_skip: identity shortcut).
#include <ATen/ATen.h>

#include <string>
#include <vector>

#include "mimi/config.h"
#include "mimi/conv.h"

namespace mtt::mimi {

class WeightStore;

struct SeanetLayer {
  enum Kind { Elu, Conv, ConvTr, Residual } kind = Elu;
  Conv1d conv;            // Conv; Residual: first conv (C -> C/compress, k3)
  Conv1d conv2;           // Residual: second conv (C/compress -> C, k1)
  ConvTranspose1d convtr; // ConvTr
};

struct SeanetState {
  std::vector<Conv1d::State> a, b;
  std::vector<ConvTranspose1d::State> t;
};

class Seanet {
 public:
  // prefix "encoder" / "decoder"; keys "<prefix>.model.<i>..." (§5.6).
  static Seanet encoder(WeightStore& w, const SeanetConfig& c, const std::string& prefix = "encoder");
  static Seanet decoder(WeightStore& w, const SeanetConfig& c, const std::string& prefix = "decoder");

  at::Tensor forward(const at::Tensor& x) const;
  at::Tensor step(const at::Tensor& x, SeanetState& st) const;
  SeanetState new_state() const;
  void to(const at::TensorOptions& o);

 private:
  at::Tensor run(const at::Tensor& x, SeanetState* st) const;
  std::vector<SeanetLayer> layers_;
};

}  // namespace mtt::mimi
