#include "moshi/hybrid.h"

#include <algorithm>

#include "core/error.h"
#include "moshi/inplace.h"

namespace mtt::moshi {

ttt::HybridTTTPathOptions hybrid_path_options(const LMConfig& cfg, int layer) {
  const TTTSettings& s = cfg.ttt;
  // The fork's TTTWrapper (docs/ttt.md §6; FORK models/ssm/ttt_layer.py): H = the LM's num_heads
  // (ttt_integration.py:L69-86), VDIT layer with target LN eps 1e-5, inner LN eps 1e-8, dit eta,
  // RoPE off unless use_rope (the fork's audio RoPE), post_norm/wo skipped unless output_post_norm_wo.
  ttt::HybridTTTPathOptions o =
      ttt::HybridTTTPathOptions::fork(cfg.dim, cfg.num_heads, s.mini_batch_size, s.base_lr, s.initial_gating_alpha);
  ttt::TTTConfig& t = o.ttt;
  if (s.ttt_mlp_layers <= 1) t.inner = ttt::InnerModel::linear;  // the fork's TTTLinear
  t.ttt_mlp_layers = std::max<int64_t>(2, s.ttt_mlp_layers);
  t.ttt_mlp_expansion_factor = s.ttt_mlp_expansion_factor;
  // The fork reads ttt_mlp_hidden_dims only in TTTMLPMultiLayer (>= 3 layers, ttt_layer.py:L482-523).
  if (s.ttt_mlp_layers >= 3) t.ttt_mlp_hidden_dims = s.ttt_mlp_hidden_dims;
  t.output_path = s.output_post_norm_wo ? ttt::OutputPath::post_norm_wo : ttt::OutputPath::skip;
  if (s.use_rope) {
    t.rope = ttt::Rope::fork_audio;
    t.rope_theta = s.rope_theta;
  }
  t.scan_checkpoint_group_size = s.scan_checkpoint_group_size;
  t.multilayer_query = s.multilayer_query;
  t.layer_index = layer;
  t.name = "layer" + std::to_string(layer) + ".ttt";
  o.streaming_state = s.streaming_state;
  return o;
}

HybridBlock::HybridBlock(const LMConfig& cfg, int layer)
    : path_(std::make_unique<ttt::HybridTTTPath>(hybrid_path_options(cfg, layer), static_cast<uint64_t>(layer))) {}

at::Tensor HybridBlock::forward(const at::Tensor& h, LayerTTTState* state) {
  // Full sequence: zero pads up to a multiple of b that take part in the inner updates (the fork
  // builds a pad mask but never uses it, docs/ttt.md §6), trimmed. Streaming: the fork's eta is the DiT
  // one (identical rows, no tril), so a partial mini-batch cannot be continued causally; as the fork
  // does (hybrid_layer.py:L330-348, docs/ttt.md §6-7) every call is padded the same way, and the
  // persistent per-element state keeps the result (or, fork_restart, nothing is kept).
  if (state == nullptr) return path_->forward(h, nullptr).y;
  if (!state->ttt.defined()) state->ttt = ttt_layer().init_state(h.size(0));
  return path_->forward(h, &state->ttt).y;
}

void HybridBlock::collect(const std::string& p, ParamList& out) {
  // The TTT layer and its gates keep their own initialisation and stay f32 (docs/ttt.md §1.1, §2).
  const nn::ParamSpec ttt{nn::ParamInit::own, nn::ParamDType::f32};
  ttt::TTTLayer& t = ttt_layer();
  for (const auto& kv : t.named_parameters())
    out.push_back({p + "seq_modeling_block.ttt_layer.ttt." + kv.first, &t.param(kv.first), ttt});
  out.push_back({p + "seq_modeling_block.forward_ssm_gating.gating_alpha", &forward_gate().gating_alpha, ttt});
  out.push_back({p + "seq_modeling_block.backward_ssm_gating.gating_alpha", &backward_gate().gating_alpha, ttt});
}

void HybridBlock::to(at::ScalarType dtype) {
  // The LM assigns its loaded tensors to the handles collect() hands out, so the gates' members
  // (not the nn::Module registry, which still holds the construction-time tensor) are cast.
  ttt_layer().to(dtype);
  for (ttt::SSMGating* g : {&forward_gate(), &backward_gate()}) g->gating_alpha = g->gating_alpha.to(dtype);
}

void HybridBlock::set_requires_grad(bool on) { path_->set_requires_grad(on); }

void LayerTTTState::reset(const at::Tensor& mask) {
  // TTTState::reset: masked elements back to W0, accumulators zeroed, position 0 (docs/ttt.md §7).
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
  st->ttt = path_->ttt_layer().init_state(batch);
  return st;
}

}  // namespace mtt::moshi
