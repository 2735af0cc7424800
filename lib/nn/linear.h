#pragma once
// A linear layer with an optional separate LoRA adapter (moshi modules/lora.py LoRALinear,
// docs/moshi.md §4.1): y = x W^T (+ bias) + scaling * (x A^T) B^T. Shared by the Moshi LM's and
// Mimi's transformers, as moshi's transformer.rs is shared by lm.rs and mimi.rs.
#include <ATen/ATen.h>

#include <string>

#include "nn/params.h"

namespace mtt::nn {

struct Linear {
  at::Tensor weight;  // [out, in] (with LoRA: moshi's frozen_W.weight)
  at::Tensor bias;    // undefined when the layer has none
  // LoRA kept separate (moshi/lora.h): lora_A [r, in], lora_B [out, r]. Undefined: no low-rank term.
  at::Tensor lora_A, lora_B;
  double lora_scaling = 0.0;

  bool has_lora() const { return lora_A.defined(); }
  at::Tensor operator()(const at::Tensor& x) const;
  // W + scaling * B @ A in the weight's dtype (W without LoRA), differentiable; for code that
  // needs the matrix itself (In-Place TTT's gate/up projection).
  at::Tensor effective_weight() const;
  // moshi's replace_lora_with_linear: weight = W + scaling * B @ A (computed as moshi does, in the
  // weight's dtype), the low-rank tensors dropped.
  void merge_lora();
  // Names: `weight` (+ `bias`), or with LoRA `frozen_W.weight` (+ `frozen_W.bias`), `lora_A.weight`,
  // `lora_B.weight` (the in-memory state_dict names of a LoRALinear).
  // All declared ParamInit::linear, the biases ParamInit::bias.
  void collect(const std::string& prefix, ParamList& out);
};

}  // namespace mtt::nn
