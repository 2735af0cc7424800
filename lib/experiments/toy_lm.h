#pragma once
// A one-block TTT language model for fast experiments on CPU: token embedding, the fork's gated TTT
// residual x + tanh(alpha) * TTT(x) (forward gate used, backward gate created and never read, as in
// the fork), a final LayerNorm and a tied output head. Parameter names follow the fork's hybrid layer
// (docs/checkpoint-keys.md §1.2) so that checkpoints of it read like the TTT part of a Moshi-TTT layer.
#include <ATen/ATen.h>

#include <memory>
#include <nlohmann/json.hpp>

#include "experiments/trainer.h"
#include "ttt/ssm_gating.h"
#include "ttt/ttt_layer.h"

namespace mtt::experiments {

struct ToyLMConfig {
  int64_t vocab = 64;
  ttt::TTTConfig ttt;
  double gating_alpha_init = 0.1;
  bool clamp_alpha = true;
};

class ToyTTTLM {
 public:
  ToyTTTLM(const ToyLMConfig& cfg, uint64_t seed);
  // tokens [B, L] -> logits [B, L, vocab]; state may be null (every call starts from W0).
  at::Tensor forward(const at::Tensor& tokens, ttt::TTTState* state, const ttt::Options& opt = {});
  // Mean next-token cross-entropy over positions 0..L-2.
  at::Tensor lm_loss(const at::Tensor& tokens, ttt::TTTState* state, const ttt::Options& opt = {});
  NamedParams named_parameters();
  // Moves every parameter to `device` (leaves keep their requires_grad); inputs follow the model.
  void to(const at::Device& device);
  at::Tensor embed(const at::Tensor& tokens) const { return at::embedding(embed_, tokens); }
  ttt::TTTLayer& ttt_layer() { return *ttt_; }
  ttt::SSMGating& forward_gate() { return *fwd_gate_; }
  nlohmann::json config_json() const;
  static constexpr const char* kPrefix = "transformer.layers.0.seq_modeling_block.";

 private:
  ToyLMConfig cfg_;
  at::Tensor embed_, out_norm_w_, out_norm_b_;
  std::unique_ptr<ttt::TTTLayer> ttt_;
  std::shared_ptr<ttt::SSMGating> fwd_gate_, bwd_gate_;
};

ToyLMConfig toy_config_from_json(const nlohmann::json& cfg, const std::string& where);

}  // namespace mtt::experiments
