#include "nn/linear.h"

#include <ATen/core/grad_mode.h>

namespace mtt::nn {

at::Tensor Linear::operator()(const at::Tensor& x) const {
  at::Tensor y = bias.defined() ? at::linear(x, weight, bias) : at::linear(x, weight);
  if (!lora_A.defined()) return y;
  // LoRALinear.forward: frozen_W(x) + lora_B(lora_A(x)) * scaling.
  return y + at::linear(at::linear(x, lora_A), lora_B) * lora_scaling;
}

at::Tensor Linear::effective_weight() const {
  if (!lora_A.defined()) return weight;
  return weight + lora_scaling * at::matmul(lora_B, lora_A);
}

void Linear::merge_lora() {
  if (!lora_A.defined()) return;
  // replace_lora_with_linear: frozen_W.weight + scaling * (lora_B.weight @ lora_A.weight).
  at::NoGradGuard ng;
  weight = weight + lora_scaling * at::matmul(lora_B, lora_A);
  lora_A = at::Tensor();
  lora_B = at::Tensor();
  lora_scaling = 0.0;
}

void Linear::collect(const std::string& prefix, ParamList& out) {
  const ParamSpec w{ParamInit::linear}, b{ParamInit::bias};
  if (lora_A.defined()) {
    out.push_back({prefix + "frozen_W.weight", &weight, w});
    if (bias.defined()) out.push_back({prefix + "frozen_W.bias", &bias, b});
    out.push_back({prefix + "lora_A.weight", &lora_A, w});
    out.push_back({prefix + "lora_B.weight", &lora_B, w});
    return;
  }
  out.push_back({prefix + "weight", &weight, w});
  if (bias.defined()) out.push_back({prefix + "bias", &bias, b});
}

}  // namespace mtt::nn
