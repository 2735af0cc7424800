#include "ttt/hybrid_ttt_path.h"

#include <ATen/core/grad_mode.h>

#include "core/error.h"

namespace mtt::ttt {

namespace {
const char* kTTTPrefix = "ttt_layer.ttt.";
const char* kFwdGate = "forward_ssm_gating.";
const char* kBwdGate = "backward_ssm_gating.";
}  // namespace

HybridTTTPathOptions HybridTTTPathOptions::fork(int64_t D, int64_t H, int64_t b, double base_lr,
                                                double gating_alpha_init) {
  HybridTTTPathOptions o;
  // The fork's TTTWrapper (models/ssm/ttt_layer.py): VDIT's layer with the target LN eps 1e-5
  // (L287-297), inner LN eps 1e-8 (ops/utils.py), dit eta (L362-363), RoPE off by default
  // (config.py use_rope False), and forward() returning the op output directly (L80-117).
  o.ttt = TTTConfig::vdit(D, H, b, InnerModel::mlp);
  o.ttt.ttt_base_lr = base_lr;
  o.ttt.recon_target = ReconTarget::correct;
  o.ttt.recon_target_eps = 1e-5;
  o.ttt.inner_ln_eps = 1e-8;
  o.ttt.eta = Eta::dit;
  o.ttt.rope = Rope::none;
  o.ttt.output_path = OutputPath::skip;
  o.gating = SSMGatingOptions::fork(D, gating_alpha_init);
  o.direction = HybridDirection::forward_only;
  o.pad_updates = PadUpdates::legacy;
  return o;
}

HybridTTTPath::HybridTTTPath(const HybridTTTPathOptions& options, uint64_t seed) : options_(options) {
  options_.ttt.validate();
  if (options_.gating.dim != options_.ttt.model_dim) {
    throw Error("", "gating_alpha", "gating dim " + std::to_string(options_.gating.dim) + " != model dim " +
                                        std::to_string(options_.ttt.model_dim),
                ErrorKind::Usage);
  }
  ttt_ = std::make_unique<TTTLayer>(options_.ttt, seed);
  forward_gate_ = std::make_shared<SSMGating>(options_.gating);
  backward_gate_ = std::make_shared<SSMGating>(options_.gating);
}

at::Tensor HybridTTTPath::run_ttt(const at::Tensor& x, TTTState* state) {
  const int64_t B = x.size(0), L = x.size(1), D = x.size(2), b = options_.ttt.mini_batch_size;
  const int64_t pad = (b - L % b) % b;
  Options opt;
  opt.pad_updates = options_.pad_updates;
  at::Tensor xp = x;
  if (pad > 0) {
    // Zero tokens on the right up to a multiple of b (hybrid_layer.py:L330-348); with
    // PadUpdates::legacy they update the inner state exactly as in the fork.
    xp = at::cat({x, at::zeros({B, pad, D}, x.options())}, 1);
    at::Tensor mask = at::ones({B, L + pad}, x.options().dtype(at::kBool));
    mask.narrow(1, L, pad).fill_(false);
    opt.pad_mask = mask;
  }
  at::Tensor out = ttt_->forward(xp, state, opt);
  return out.narrow(1, 0, L);
}

HybridTTTPath::Output HybridTTTPath::forward(const at::Tensor& x, TTTState* state) {
  if (x.dim() != 3 || x.size(2) != options_.ttt.model_dim) {
    throw Error("", "x", "HybridTTTPath: expected [B, L, " + std::to_string(options_.ttt.model_dim) + "], got " +
                             c10::str(x.sizes()),
                ErrorKind::Internal);
  }
  Output o;
  // The TTT runs in its parameters' dtype (docs/ttt.md §2: the inner loop in f32 whatever the LM's dtype).
  const at::ScalarType tdt = ttt_->param("wq.weight").scalar_type();
  if (options_.streaming_state == StreamingState::fork_restart) state = nullptr;  // never written back
  o.ttt_out = run_ttt(x.to(tdt), state);
  if (state && options_.streaming_state == StreamingState::fork_batch0 && state->batch_size() > 1) {
    // TTTMLPMultiLayer.ttt (eval): weights[i].data.copy_(updated[0]), then the next call tiles the
    // parameters over the batch: every element continues from element 0's end state.
    at::NoGradGuard ng;
    auto row0 = [&](std::vector<at::Tensor>& v) {
      for (auto& t : v) t = t.narrow(0, 0, 1).expand(t.sizes()).clone();
    };
    row0(state->weights);
    row0(state->biases);
    row0(state->acc_weights);
    row0(state->acc_biases);
  }
  // Gated residual; the fork casts the gated branch back to the residual's dtype.
  at::Tensor e = x + forward_gate_->forward(o.ttt_out).to(x.scalar_type());
  if (options_.direction == HybridDirection::forward_only) {
    o.y = e;
    return o;
  }
  // VDIT's backward pass: same TTT parameters over the reversed sequence, un-reversed, own gate.
  at::Tensor rev = at::flip(e, {1});
  o.ttt_out_back = at::flip(run_ttt(rev.to(tdt), nullptr), {1});
  o.y = e + backward_gate_->forward(o.ttt_out_back).to(x.scalar_type());
  return o;
}

std::vector<std::pair<std::string, at::Tensor>> HybridTTTPath::named_parameters() const {
  std::vector<std::pair<std::string, at::Tensor>> v;
  for (const auto& [name, t] : ttt_->named_parameters()) v.emplace_back(kTTTPrefix + name, t);
  v.emplace_back(std::string(kFwdGate) + "gating_alpha", forward_gate_->gating_alpha);
  v.emplace_back(std::string(kBwdGate) + "gating_alpha", backward_gate_->gating_alpha);
  return v;
}

std::vector<std::string> HybridTTTPath::consumed_names() const {
  std::vector<std::string> v;
  for (const auto& [name, t] : ttt_->named_parameters()) {
    const bool out_path = name.rfind("wo.", 0) == 0 || name.rfind("post_norm.", 0) == 0;
    if (out_path && options_.ttt.output_path == OutputPath::skip) continue;
    v.push_back(kTTTPrefix + name);
  }
  v.push_back(std::string(kFwdGate) + "gating_alpha");
  if (options_.direction == HybridDirection::bidirectional) v.push_back(std::string(kBwdGate) + "gating_alpha");
  return v;
}

void HybridTTTPath::load(const std::map<std::string, at::Tensor>& tensors, const std::string& prefix,
                         const std::string& file) {
  ttt_->load(tensors, prefix + kTTTPrefix, file);
  load_module_tensors(*forward_gate_, tensors, prefix + kFwdGate, file);
  load_module_tensors(*backward_gate_, tensors, prefix + kBwdGate, file);
}

void HybridTTTPath::to(at::ScalarType dtype) {
  ttt_->to(dtype);
  forward_gate_->to(dtype);
  backward_gate_->to(dtype);
}

void HybridTTTPath::set_requires_grad(bool on) {
  ttt_->set_requires_grad(on);
  forward_gate_->gating_alpha.requires_grad_(on);
  backward_gate_->gating_alpha.requires_grad_(on);
}

}  // namespace mtt::ttt
