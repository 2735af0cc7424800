#include "moshi/hybrid.h"

#include <algorithm>

#include "core/error.h"
#include "moshi/inplace.h"

namespace mtt::moshi {

HybridBlock::HybridBlock(const LMConfig& cfg, int layer) {
  const TTTSettings& s = cfg.ttt;
  // The fork's TTTWrapper (ttt.md §6; FORK models/ssm/ttt_layer.py): H = the LM's num_heads
  // (ttt_integration.py:L69-86), VDIT layer with target LN eps 1e-5, inner LN eps 1e-8, dit eta,
  // RoPE off unless use_rope (the fork's audio RoPE), post_norm/wo skipped unless output_post_norm_wo.
  tcfg_ = ttt::TTTConfig::vdit(cfg.dim, cfg.num_heads, s.mini_batch_size,
                               s.ttt_mlp_layers <= 1 ? ttt::InnerModel::linear : ttt::InnerModel::mlp);
  tcfg_.ttt_mlp_layers = std::max<int64_t>(2, s.ttt_mlp_layers);
  tcfg_.ttt_mlp_expansion_factor = s.ttt_mlp_expansion_factor;
  tcfg_.ttt_base_lr = s.base_lr;
  tcfg_.recon_target_eps = 1e-5;
  tcfg_.inner_ln_eps = 1e-8;
  tcfg_.output_path = s.output_post_norm_wo ? ttt::OutputPath::post_norm_wo : ttt::OutputPath::skip;
  if (s.use_rope) {
    tcfg_.rope = ttt::Rope::fork_audio;
    tcfg_.rope_theta = s.rope_theta;
  }
  tcfg_.scan_checkpoint_group_size = s.scan_checkpoint_group_size;
  tcfg_.layer_index = layer;
  tcfg_.name = "layer" + std::to_string(layer) + ".ttt";
  if (!s.ttt_mlp_hidden_dims.empty())
    throw Error("", "ttt.ttt_mlp_hidden_dims", "explicit hidden widths are not supported by the hybrid layer yet",
                ErrorKind::Usage);
  ttt_ = std::make_unique<ttt::TTTLayer>(tcfg_, static_cast<uint64_t>(layer));
  forward_gate_ = std::make_shared<ttt::SSMGating>(ttt::SSMGatingOptions::fork(cfg.dim, s.initial_gating_alpha));
  backward_gate_ = std::make_shared<ttt::SSMGating>(ttt::SSMGatingOptions::fork(cfg.dim, s.initial_gating_alpha));
}

at::Tensor HybridBlock::forward(const at::Tensor& h_in, LayerTTTState* state) {
  // The TTT branch runs in f32 whatever the LM's compute dtype (ttt.md §2); the gated output is
  // cast back to the residual's dtype as the fork does.
  const at::Tensor h = h_in.to(at::kFloat);
  const int64_t B = h.size(0), L = h.size(1), D = h.size(2), b = tcfg_.mini_batch_size;
  at::Tensor y;
  if (state == nullptr) {
    // Full sequence: zero tokens on the right up to a multiple of b that take part in the inner
    // updates (the fork builds a pad mask but never uses it, ttt.md §6), then trim.
    const int64_t pad = (b - L % b) % b;
    at::Tensor xp = pad > 0 ? at::cat({h, at::zeros({B, pad, D}, h.options())}, 1) : h;
    ttt::Options opt;
    opt.pad_updates = ttt::PadUpdates::legacy;
    y = ttt_->forward(xp, nullptr, opt).narrow(1, 0, L);
  } else {
    // Streaming. The fork's eta is the DiT one (identical rows, no tril): a partial mini-batch
    // cannot be continued causally, so, as the fork does in streaming (hybrid_layer.py:L330-348,
    // ttt.md §6-7), every call is right-padded with zeros to whole mini-batches, the pads take part
    // in the inner updates, and the persistent per-element state keeps the result.
    if (!state->ttt.defined()) state->ttt = ttt_->init_state(B);
    if (tcfg_.eta == ttt::Eta::dit && L % b != 0) {
      const int64_t pad = b - L % b;
      at::Tensor xp = at::cat({h, at::zeros({B, pad, D}, h.options())}, 1);
      ttt::Options opt;
      opt.pad_updates = ttt::PadUpdates::legacy;
      y = ttt_->forward(xp, &state->ttt, opt).narrow(1, 0, L);
    } else {
      y = ttt_->forward(h, &state->ttt);
    }
  }
  return h_in + forward_gate_->forward(y).to(h_in.scalar_type());
}

void HybridBlock::collect(const std::string& p, NamedTensors& out) {
  for (const auto& kv : ttt_->named_parameters())
    out.emplace_back(p + "seq_modeling_block.ttt_layer.ttt." + kv.first, &ttt_->param(kv.first));
  out.emplace_back(p + "seq_modeling_block.forward_ssm_gating.gating_alpha", &forward_gate_->gating_alpha);
  out.emplace_back(p + "seq_modeling_block.backward_ssm_gating.gating_alpha", &backward_gate_->gating_alpha);
}

void HybridBlock::to(at::ScalarType dtype) {
  ttt_->to(dtype);
  forward_gate_->gating_alpha = forward_gate_->gating_alpha.to(dtype);
  backward_gate_->gating_alpha = backward_gate_->gating_alpha.to(dtype);
}

void HybridBlock::set_requires_grad(bool on) {
  ttt_->set_requires_grad(on);
  forward_gate_->gating_alpha.requires_grad_(on);
  backward_gate_->gating_alpha.requires_grad_(on);
}

void LayerTTTState::reset(const at::Tensor& mask) {
  // TTTState::reset: masked elements back to W0, accumulators zeroed, position 0 (ttt.md §7).
  if (ttt.defined()) ttt.reset(mask.to(at::kBool));
  if (inplace) reset_rows(*inplace, mask);
}

namespace {
at::Tensor idle_rows(const std::vector<bool>& exec) {
  std::vector<int64_t> idx;
  for (size_t b = 0; b < exec.size(); ++b)
    if (!exec[b]) idx.push_back(static_cast<int64_t>(b));
  return at::tensor(idx, at::TensorOptions().dtype(at::kLong));
}
}  // namespace

std::unique_ptr<LayerTTTState> LayerTTTState::snapshot(const std::vector<bool>& exec) const {
  auto kept = std::make_unique<LayerTTTState>();
  if (ttt.defined()) kept->ttt = ttt.select(idle_rows(exec));
  if (inplace) kept->inplace = copy_rows(*inplace);
  return kept;
}

void LayerTTTState::restore(const LayerTTTState& kept, const std::vector<bool>& exec) {
  if (ttt.defined()) {
    if (kept.ttt.defined()) {
      ttt.assign(idle_rows(exec), kept.ttt);
    } else {  // the state was created by this step: idle rows go back to W0
      at::Tensor m = at::zeros({static_cast<int64_t>(exec.size())}, at::kBool);
      for (size_t b = 0; b < exec.size(); ++b) m[static_cast<int64_t>(b)] = !exec[b];
      ttt.reset(m);
    }
  }
  if (inplace && kept.inplace) restore_rows(*inplace, *kept.inplace, exec);
}

void LayerTTTState::detach_() {
  ttt.detach_();
  if (inplace) detach_rows(*inplace);
}

std::shared_ptr<LayerTTTState> HybridBlock::new_state(int64_t batch) const {
  auto st = std::make_shared<LayerTTTState>();
  st->ttt = ttt_->init_state(batch);
  return st;
}

}  // namespace mtt::moshi
