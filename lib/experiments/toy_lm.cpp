#include "experiments/toy_lm.h"

#include "experiments/ttt_settings.h"

namespace mtt::experiments {

ToyLMConfig toy_config_from_json(const nlohmann::json& cfg, const std::string& where) {
  ToyLMConfig c;
  c.vocab = cfg.value("vocab", 64);
  c.ttt = ttt_config_from_json(cfg, where);
  const auto t = cfg.value("ttt", nlohmann::json::object());
  c.gating_alpha_init = t.value("initial_gating_alpha", 0.1);
  c.clamp_alpha = t.value("clamp_gating_alpha", true);
  return c;
}

ToyTTTLM::ToyTTTLM(const ToyLMConfig& cfg, uint64_t seed) : cfg_(cfg) {
  at::manual_seed(seed);
  const int64_t D = cfg.ttt.model_dim;
  embed_ = (at::randn({cfg.vocab, D}) * 0.5).requires_grad_(true);
  out_norm_w_ = at::ones({D}).requires_grad_(true);
  out_norm_b_ = at::zeros({D}).requires_grad_(true);
  ttt_ = std::make_unique<ttt::TTTLayer>(cfg.ttt, seed + 1);
  ttt::SSMGatingOptions g = ttt::SSMGatingOptions::fork(D, cfg.gating_alpha_init);
  g.clamp_alpha = cfg.clamp_alpha;
  fwd_gate_ = std::make_shared<ttt::SSMGating>(g);
  bwd_gate_ = std::make_shared<ttt::SSMGating>(g);
}

void ToyTTTLM::to(const at::Device& device) {
  auto move = [&](at::Tensor& t) { t = t.detach().to(device).requires_grad_(t.requires_grad()); };
  move(embed_);
  move(out_norm_w_);
  move(out_norm_b_);
  move(fwd_gate_->gating_alpha);
  move(bwd_gate_->gating_alpha);
  ttt_->to(device);
}

at::Tensor ToyTTTLM::forward(const at::Tensor& tokens_in, ttt::TTTState* state, const ttt::Options& opt) {
  const at::Tensor tokens = tokens_in.to(embed_.device());
  at::Tensor h = embed(tokens);
  h = h + fwd_gate_->forward(ttt_->forward(h, state, opt));
  h = at::layer_norm(h, {cfg_.ttt.model_dim}, out_norm_w_, out_norm_b_, 1e-5);
  return at::matmul(h, embed_.t());
}

at::Tensor ToyTTTLM::lm_loss(const at::Tensor& tokens, ttt::TTTState* state, const ttt::Options& opt) {
  at::Tensor logits = forward(tokens, state, opt);
  const int64_t L = tokens.size(1);
  at::Tensor pred = logits.narrow(1, 0, L - 1).reshape({-1, cfg_.vocab});
  at::Tensor tgt = tokens.narrow(1, 1, L - 1).reshape({-1}).to(logits.device());
  return at::cross_entropy_loss(pred.to(at::kFloat), tgt);
}

NamedParams ToyTTTLM::named_parameters() {
  NamedParams p = {{"embed.weight", embed_}, {"out_norm.weight", out_norm_w_}, {"out_norm.bias", out_norm_b_}};
  for (auto& [n, t] : ttt_->named_parameters()) p.push_back({std::string(kPrefix) + "ttt_layer.ttt." + n, t});
  p.push_back({std::string(kPrefix) + "forward_ssm_gating.gating_alpha", fwd_gate_->gating_alpha});
  p.push_back({std::string(kPrefix) + "backward_ssm_gating.gating_alpha", bwd_gate_->gating_alpha});
  return p;
}

nlohmann::json ToyTTTLM::config_json() const {
  return {{"model", "moshi-ttt/toy-ttt-lm"},
          {"vocab", cfg_.vocab},
          {"dim", cfg_.ttt.model_dim},
          {"num_heads", cfg_.ttt.num_heads},
          {"ttt", {{"layers", "0"}, {"mini_batch_size", cfg_.ttt.mini_batch_size}, {"base_lr", cfg_.ttt.ttt_base_lr},
                   {"initial_gating_alpha", cfg_.gating_alpha_init}}}};
}

}  // namespace mtt::experiments
