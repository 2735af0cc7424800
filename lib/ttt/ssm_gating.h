#pragma once
// SSMGating: the per-channel tanh gate put on a TTT branch (docs/ttt.md §4):
//   out = tanh(alpha) ⊙ y,  alpha ∈ R^D registered as `gating_alpha` (docs/checkpoint-keys.md §1.2).
// VDIT (dit.py:L90-103) applies tanh(alpha) directly; the Moshi-TTT fork clamps alpha to [-3, 3]
// first (FORK moshi_ttt/ssm_gating.py:L40-41), which freezes the gradient of channels outside the
// clamp range. Both are one implementation with the clamp as a named option.
//
// Two overrides serve experiments (`ttt-infer --force-gating-alpha A`): force_alpha() replaces the
// parameter's value in the forward pass (the clamp, when on, and tanh still apply, as if the
// checkpoint held A); force_multiplier() replaces tanh(alpha) itself (e.g. 0 switches the TTT
// branch off, 1 passes it through ungated). Overrides never write the parameter.
#include <map>
#include <optional>
#include <string>

#include <ATen/ATen.h>
#include <torch/nn/module.h>

namespace mtt::ttt {

struct SSMGatingOptions {
  int64_t dim = 0;
  // VDIT configs.py:L44 and the fork's TTTConfig default: 0.1, i.e. an initial gate of ≈ 0.0997.
  double gating_alpha_init = 0.1;
  // The fork's stabilisation clamp of alpha before tanh (off in VDIT).
  bool clamp_alpha = true;
  double clamp_limit = 3.0;

  static SSMGatingOptions fork(int64_t dim, double init = 0.1);  // clamp on
  static SSMGatingOptions vdit(int64_t dim, double init = 0.1);  // clamp off
};

class SSMGating : public torch::nn::Module {
 public:
  explicit SSMGating(const SSMGatingOptions& options);

  // y [..., D] -> multiplier() ⊙ y, broadcast over the leading dimensions.
  at::Tensor forward(const at::Tensor& y) const;
  // The effective per-channel gate [D]: tanh(clamp(alpha)) unless an override is active.
  at::Tensor multiplier() const;

  // Overrides (nullopt clears). A scalar applies to every channel; a tensor must broadcast to [D].
  void force_alpha(std::optional<double> alpha);
  void force_alpha_tensor(std::optional<at::Tensor> alpha);
  void force_multiplier(std::optional<double> multiplier);
  bool overridden() const { return forced_alpha_.has_value() || forced_multiplier_.has_value(); }

  const SSMGatingOptions& options() const { return options_; }
  at::Tensor gating_alpha;  // [D], the learnable parameter

 private:
  SSMGatingOptions options_;
  std::optional<at::Tensor> forced_alpha_;
  std::optional<double> forced_multiplier_;
};

// Copies `prefix + name` from `tensors` into every parameter and buffer of `module` (values are
// converted to the destination dtype; shapes must match). Missing keys or wrong shapes throw
// mtt::Error(file, key, reason). Shared by the TTT modules of this folder.
void load_module_tensors(torch::nn::Module& module, const std::map<std::string, at::Tensor>& tensors,
                         const std::string& prefix, const std::string& file);

}  // namespace mtt::ttt
