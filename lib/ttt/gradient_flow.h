#pragma once
// Gradient-flow probe of the In-Place TTT block (docs/ttt.md §8; docs/checkpoint-keys.md §2.5): how
// large the gradients of the target generator (conv, W_target) and the fast weight are for given
// init scales, over a few optimisation steps. The `gradient-flow` experiment is built on it.
//
// Why it matters: V̂ = W_target(Conv(t)) is a product of two factors. With both at zero every
// gradient of the target generator is exactly zero and stays so; with exactly one of them at zero
// the chain rule gives the *zero* factor a non-zero gradient (it is multiplied by the other,
// non-zero one) and the non-zero factor an exactly-zero gradient (its upstream V̂-signal is
// multiplied by the zero factor), so one SGD step un-sticks it.
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "ttt/inplace_ttt.h"

namespace mtt::ttt {

enum class TargetInitKind { zero, normal, diagonal };  // diagonal: zero except N(0, std) on the diagonal (W_target only)

struct TargetInit {
  TargetInitKind kind = TargetInitKind::normal;
  double std = 1e-4;
  static TargetInit zero() { return {TargetInitKind::zero, 0.0}; }
  static TargetInit normal(double s) { return {TargetInitKind::normal, s}; }
  static TargetInit diagonal(double s) { return {TargetInitKind::diagonal, s}; }
};

struct GradientFlowConfig {
  InPlaceTTTOptions block = InPlaceTTTOptions::moshi_port(16, 64);  // small by default; any variant
  TargetInit conv_init = TargetInit::normal(1e-4);
  TargetInit target_proj_init = TargetInit::normal(1e-4);
  int64_t batch = 2;
  int64_t seq_len = 16;        // several chunks are needed for any delta to reach an output
  int64_t steps = 3;
  double sgd_lr = 1e-2;        // plain SGD on the trainable set after each step
  bool train_slow_ffn = false; // also train linear_in / gate/up (off: the port's TTT-only mode trains target generator + w_down)
  uint64_t seed = 0;
};

struct GradientFlowStep {
  int64_t step = 0;
  double loss = 0.0;
  std::map<std::string, double> grad_norms;   // checkpoint name -> ‖∂L/∂θ‖_F (0 exactly when no gradient reaches it)
  std::map<std::string, double> param_norms;  // ‖θ‖_F before the step
};

// Builds the block with `config.block`, initialises its target generator per the two inits,
// draws fixed random inputs x, target source t and regression target y* (seeded), and for each
// step computes L = mean((y − y*)²), backpropagates, records every parameter's gradient norm and
// then applies SGD to the trainable parameters. Deterministic for a given seed.
std::vector<GradientFlowStep> gradient_flow_probe(const GradientFlowConfig& config);

// Sets the target generator of `block` (conv weight and W_target / ttt_proj) to the given inits.
void init_target_generator(InPlaceTTT& block, const TargetInit& conv, const TargetInit& target_proj);

}  // namespace mtt::ttt
