#include "ttt/inplace_ttt.h"

#include <cmath>
#include <sstream>

#include "core/error.h"
#include "ttt/ssm_gating.h"

namespace mtt::ttt {

namespace {

// A node of the module tree that only holds tensors, so checkpoint names with dots
// ("target_generator.conv1d.conv.weight") come out of named_parameters() unchanged.
struct Holder : torch::nn::Module {};

torch::nn::Module& child(torch::nn::Module& parent, const std::string& path) {
  torch::nn::Module* m = &parent;
  std::size_t start = 0;
  while (start < path.size()) {
    std::size_t dot = path.find('.', start);
    std::string seg = path.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
    auto kids = m->named_children();
    if (auto* found = kids.find(seg)) {
      m = found->get();
    } else {
      m = m->register_module(seg, std::make_shared<Holder>()).get();
    }
    if (dot == std::string::npos) break;
    start = dot + 1;
  }
  return *m;
}

at::Tensor reg_param(torch::nn::Module& root, const std::string& path, const std::string& name, at::Tensor t) {
  return (path.empty() ? root : child(root, path)).register_parameter(name, std::move(t));
}
at::Tensor reg_buffer(torch::nn::Module& root, const std::string& path, const std::string& name, at::Tensor t) {
  return (path.empty() ? root : child(root, path)).register_buffer(name, std::move(t));
}

// nn.Linear's default init, U(±1/sqrt(fan_in)).
at::Tensor linear_init(int64_t out, int64_t in) {
  const double b = 1.0 / std::sqrt(static_cast<double>(in));
  return at::empty({out, in}, at::kFloat).uniform_(-b, b);
}

// Parameters are stored in fp32; an fp64 run (reference comparisons) promotes them.
at::Tensor cast_to(const at::Tensor& p, at::ScalarType t) { return p.scalar_type() == t ? p : p.to(t); }

std::string shape_str(at::IntArrayRef s) {
  std::ostringstream os;
  os << "[";
  for (size_t i = 0; i < s.size(); ++i) os << (i ? "," : "") << s[i];
  os << "]";
  return os.str();
}

}  // namespace

int64_t moshi_gating_hidden(int64_t dim, int64_t dim_feedforward) {
  // Moshi gating.py:L55-61 (docs/checkpoint-keys.md notation "hid").
  return dim_feedforward == 4 * dim ? (21 * dim) / 8 : (2 * dim_feedforward) / 3;
}

InPlaceTTTOptions InPlaceTTTOptions::moshi_port(int64_t dim, int64_t dim_feedforward) {
  InPlaceTTTOptions o;
  o.variant = InPlaceVariant::moshi_port;
  o.dim = dim;
  o.hidden = moshi_gating_hidden(dim, dim_feedforward);
  return o;  // chunk 256, lr 1e-3, k 2, clip 1e-5, gelu (erf)
}

InPlaceTTTOptions InPlaceTTTOptions::official(int64_t dim, int64_t hidden) {
  InPlaceTTTOptions o;
  o.variant = InPlaceVariant::official;
  o.dim = dim;
  o.hidden = hidden;
  o.chunk_size = 8192;
  o.lr = 0.3;
  o.conv_kernel_size = 5;
  o.delta_clip_fro_norm = std::nullopt;
  o.activation = GatedActivation::silu;
  return o;
}

InPlaceTTT::InPlaceTTT(const InPlaceTTTOptions& options) : options_(options) {
  const int64_t D = options.dim, h = options.hidden, k = options.conv_kernel_size;
  if (D <= 0 || h <= 0 || k <= 0 || options.chunk_size <= 0) {
    throw Error("", "", "InPlaceTTT needs dim, hidden, conv_kernel_size and chunk_size > 0", ErrorKind::Usage);
  }
  if (options.variant == InPlaceVariant::moshi_port) {
    w_gate_up = reg_param(*this, "linear_in", "weight", linear_init(2 * h, D));
    linear_out = reg_param(*this, "linear_out", "weight", linear_init(D, h));
    // The loaders fill w_down (fp32) from linear_out and keep a pretrained copy for resets
    // (IPMOSHI loaders.py:L458-473).
    w_down = reg_param(*this, "", "w_down", linear_out.detach().clone());
    w_down_pretrained = reg_buffer(*this, "", "w_down_pretrained", linear_out.detach().clone());
    // Port init when the target generator is not in the checkpoint: N(0, 1e-4) (loaders.py:L476-499).
    conv_weight = reg_param(*this, "target_generator.conv1d.conv", "weight", at::randn({D, D, k}) * 1e-4);
    target_proj = reg_param(*this, "target_generator.W_target", "weight", at::randn({D, D}) * 1e-4);
  } else {
    w_gate = reg_param(*this, "gate_proj", "weight", linear_init(h, D));
    w_up = reg_param(*this, "up_proj", "weight", linear_init(h, D));
    w_down = reg_param(*this, "down_proj", "weight", linear_init(D, h));
    // Official init: zero conv (the model equals the pretrained one at step 0), square projection
    // zero except a N(0, 0.02) diagonal (IPTTT modeling_qwen3.py:L364-407).
    conv_weight = reg_param(*this, "ttt_conv", "weight", at::zeros({D, 1, k}));
    if (options.use_target_proj) {
      target_proj = reg_param(*this, "ttt_proj", "weight", at::diag(at::randn({D}) * 0.02));
    }
  }
}

at::ScalarType InPlaceTTT::compute_dtype(const at::Tensor& like) const {
  // The port runs the fast-weight algebra in fp32 whatever the activations are (ttt_module.py:L360-373).
  return at::promote_types(at::kFloat, like.scalar_type());
}

std::vector<std::string> InPlaceTTT::consumed_names() const {
  if (options_.variant == InPlaceVariant::moshi_port) {
    return {"linear_in.weight", "w_down", "target_generator.conv1d.conv.weight", "target_generator.W_target.weight"};
  }
  std::vector<std::string> v = {"gate_proj.weight", "up_proj.weight", "down_proj.weight", "ttt_conv.weight"};
  if (options_.use_target_proj) v.push_back("ttt_proj.weight");
  return v;
}

at::Tensor InPlaceTTT::gated_hidden(const at::Tensor& x) const {
  const auto dt = x.scalar_type();
  at::Tensor gate, up;
  if (options_.variant == InPlaceVariant::moshi_port) {
    // linear_in stacks W_gate then W_up along the output (view(B, T, 2, h) in the port).
    at::Tensor hh = at::matmul(x, cast_to(w_gate_up, dt).t());
    gate = hh.narrow(-1, 0, options_.hidden);
    up = hh.narrow(-1, options_.hidden, options_.hidden);
  } else {
    gate = at::matmul(x, cast_to(w_gate, dt).t());
    up = at::matmul(x, cast_to(w_up, dt).t());
  }
  switch (options_.activation) {
    case GatedActivation::gelu_erf: gate = at::gelu(gate); break;
    case GatedActivation::gelu_tanh: gate = at::gelu(gate, "tanh"); break;
    case GatedActivation::silu: gate = at::silu(gate); break;
  }
  return gate * up;
}

at::Tensor InPlaceTTT::conv_chunks(const at::Tensor& chunks) const {
  // chunks [N, n, D]: each row is one chunk; zero padding at its edges keeps the conv from ever
  // crossing a chunk boundary (docs/ttt.md §8; IPMOSHI _apply_conv1d_per_chunk, IPTTT reshape to [B·chunks, D, C]).
  const auto dt = chunks.scalar_type();
  const int64_t k = options_.conv_kernel_size, D = options_.dim;
  at::Tensor u = chunks.transpose(1, 2);  // [N, D, n]
  at::Tensor c;
  if (options_.variant == InPlaceVariant::moshi_port) {
    // Dense conv over the current and the k−1 next tokens (right zero padding, ttt_module.py:L40-56).
    u = at::constant_pad_nd(u, {0, k - 1});
    c = at::conv1d(u, cast_to(conv_weight, dt));
  } else {
    // Depthwise, "same" padding: (k−1)/2 each side for the official odd k (k = 5, padding 2).
    const int64_t left = (k - 1) / 2;
    u = at::constant_pad_nd(u, {left, k - 1 - left});
    c = at::conv1d(u, cast_to(conv_weight, dt), /*bias=*/std::optional<at::Tensor>(), /*stride=*/at::IntArrayRef{1},
                   /*padding=*/at::IntArrayRef{0}, /*dilation=*/at::IntArrayRef{1}, /*groups=*/D);
  }
  c = c.transpose(1, 2);  // [N, n, D]
  if (options_.variant == InPlaceVariant::moshi_port) return at::matmul(c, cast_to(target_proj, dt).t());  // nn.Linear
  if (options_.use_target_proj) return at::matmul(c, cast_to(target_proj, dt));  // einsum "c d, d e": no transpose
  return c;
}

at::Tensor InPlaceTTT::target_chunk(const at::Tensor& source_chunk) const { return conv_chunks(source_chunk); }

at::Tensor InPlaceTTT::target(const at::Tensor& target_source) const {
  const int64_t B = target_source.size(0), T = target_source.size(1), D = options_.dim, C = options_.chunk_size;
  const int64_t n = (T + C - 1) / C;
  at::Tensor t = target_source;
  if (n * C != T) t = at::constant_pad_nd(t, {0, 0, 0, n * C - T});  // zero tokens, as both references pad
  at::Tensor v = conv_chunks(t.reshape({B * n, C, D})).reshape({B, n * C, D});
  return v.narrow(1, 0, T);
}

at::Tensor InPlaceTTT::chunk_delta(const at::Tensor& v_hat, const at::Tensor& z) const {
  // Δ = V̂ᵀ Z summed over the chunk's tokens: [B, D, h].
  at::Tensor delta = at::matmul(v_hat.transpose(-1, -2), z);
  const auto& clip = options_.delta_clip_fro_norm;
  if (clip && *clip > 0) {
    // Port: scale = min(1, c / (‖Δ‖_F + eps)) per chunk and batch element (ttt_module.py:L406-411).
    // At Δ = 0 the scale is clamped to 1, so the clip passes the gradient through unchanged there.
    at::Tensor norm = at::linalg_vector_norm(delta.flatten(-2), 2, {-1}, /*keepdim=*/false);
    at::Tensor scale = at::clamp_max(*clip / (norm + options_.delta_clip_epsilon), 1.0);
    delta = delta * scale.unsqueeze(-1).unsqueeze(-1);
  }
  return delta;
}

InPlaceTTT::Output InPlaceTTT::forward(const at::Tensor& x, const at::Tensor& target_source) const {
  const int64_t D = options_.dim, h = options_.hidden, C = options_.chunk_size;
  if (x.dim() != 3 || x.size(2) != D) {
    throw Error("", "x", "InPlaceTTT: expected [B, T, " + std::to_string(D) + "], got " + shape_str(x.sizes()),
                ErrorKind::Internal);
  }
  if (!target_source.sizes().equals(x.sizes())) {
    throw Error("", "target_source", "InPlaceTTT: target source " + shape_str(target_source.sizes()) +
                                         " must match x " + shape_str(x.sizes()),
                ErrorKind::Internal);
  }
  const int64_t B = x.size(0), T = x.size(1);
  const auto cd = compute_dtype(x);
  Output out;
  at::Tensor z = gated_hidden(x).to(cd);
  out.v_hat = target(target_source);
  at::Tensor v = out.v_hat.to(cd);
  const at::Tensor w0 = cast_to(w_down, cd);

  const int64_t n = (T + C - 1) / C;
  if (n * C != T) {
    // Zero tokens: Z = 0 there, so they add nothing to any delta and their outputs are dropped.
    z = at::constant_pad_nd(z, {0, 0, 0, n * C - T});
    v = at::constant_pad_nd(v, {0, 0, 0, n * C - T});
  }
  at::Tensor zc = z.reshape({B, n, C, h});
  at::Tensor vc = v.reshape({B, n, C, D});
  at::Tensor deltas = chunk_delta(vc, zc);          // [B, n, D, h]
  at::Tensor cum = at::cumsum(deltas, 1);           // inclusive prefix
  // Exclusive prefix S_i = Σ_{j<i} Δ_j: chunk i is computed before its own update (apply, then update).
  at::Tensor excl = at::cat({at::zeros_like(cum.narrow(1, 0, 1)), cum.narrow(1, 0, n - 1)}, 1);
  at::Tensor w_eff = w0 + options_.lr * excl;       // [B, n, D, h]
  at::Tensor o = at::matmul(zc, w_eff.transpose(-1, -2));  // [B, n, C, D]
  out.y = o.reshape({B, n * C, D}).narrow(1, 0, T).to(x.scalar_type());

  const int64_t complete = T / C;
  out.w_final = complete == 0 ? w0.unsqueeze(0).expand({B, D, h}).clone()
                              : w0 + options_.lr * cum.select(1, complete - 1);
  return out;
}

at::Tensor InPlaceTTT::forward_no_ttt(const at::Tensor& x) const {
  at::Tensor z = gated_hidden(x);
  return at::matmul(z.to(compute_dtype(x)), cast_to(w_down, compute_dtype(x)).t()).to(x.scalar_type());
}

InPlaceTTTState InPlaceTTT::init_state(int64_t batch) const {
  InPlaceTTTState s;
  // Kept in the graph of W0 (when grad mode is on), so training through step() reaches w_down too.
  s.w_down = w_down.to(at::promote_types(at::kFloat, w_down.scalar_type()))
                 .unsqueeze(0)
                 .expand({batch, options_.dim, options_.hidden})
                 .clone();
  return s;
}

at::Tensor InPlaceTTT::step(const at::Tensor& x, const at::Tensor& target_source, InPlaceTTTState& state) {
  const int64_t D = options_.dim, C = options_.chunk_size;
  if (x.dim() != 3 || x.size(2) != D || !target_source.sizes().equals(x.sizes())) {
    throw Error("", "x", "InPlaceTTT::step: x " + shape_str(x.sizes()) + " / target source " +
                             shape_str(target_source.sizes()) + " must both be [B, T, " + std::to_string(D) + "]",
                ErrorKind::Internal);
  }
  const int64_t B = x.size(0), T = x.size(1);
  const auto cd = compute_dtype(x);
  if (!state.w_down.defined()) state = init_state(B);
  if (state.w_down.size(0) != B) {
    throw Error("", "state", "InPlaceTTT::step: state batch " + std::to_string(state.w_down.size(0)) +
                                 " != input batch " + std::to_string(B),
                ErrorKind::Internal);
  }
  at::Tensor z = gated_hidden(x).to(cd);

  if (options_.fast_weight_mode == FastWeightMode::legacy_in_place) {
    // The port's eval path (ttt_module.py:L203-269): every token of this call uses the current
    // parameter; V̂ is computed from this call's tokens only; full chunks are then replayed and the
    // result is written into w_down.data. One fast weight for the whole batch, hence batch 1 only.
    if (B != 1) {
      throw Error("", "w_down", "legacy_in_place In-Place TTT supports batch 1 only (got " + std::to_string(B) + ")",
                  ErrorKind::Usage);
    }
    at::Tensor y = at::matmul(z, cast_to(w_down, cd).t());
    at::Tensor v = target(target_source).to(cd);
    state.z_buf = state.buffered() ? at::cat({state.z_buf, z.detach()}, 1) : z.detach();
    state.t_buf = state.t_buf.defined() && state.t_buf.size(1) ? at::cat({state.t_buf, v.detach()}, 1) : v.detach();
    state.tokens_seen += T;
    const int64_t full = (state.buffered() / C) * C;
    if (full > 0) {
      at::NoGradGuard no_grad;
      at::Tensor zc = state.z_buf.narrow(1, 0, full).reshape({1, full / C, C, options_.hidden});
      at::Tensor vc = state.t_buf.narrow(1, 0, full).reshape({1, full / C, C, D});
      at::Tensor total = chunk_delta(vc, zc).sum(1).squeeze(0);  // Σ clipped Δ over the flushed chunks
      w_down.copy_(cast_to(w_down, cd) + options_.lr * total);
      state.chunks_done += full / C;
      state.z_buf = state.z_buf.narrow(1, full, state.buffered() - full).clone();
      state.t_buf = state.t_buf.narrow(1, full, state.t_buf.size(1) - full).clone();
      state.w_down = w_down.detach().to(at::kFloat).unsqueeze(0).clone();
    }
    return y.to(x.scalar_type());
  }

  // Functional: chunk-exact, equal to forward() over the concatenated stream.
  std::vector<at::Tensor> outs;
  int64_t pos = 0;
  while (pos < T) {
    const int64_t n = std::min(C - state.buffered(), T - pos);
    at::Tensor zs = z.narrow(1, pos, n);
    at::Tensor ts = target_source.narrow(1, pos, n);
    outs.push_back(at::matmul(zs, state.w_down.to(cd).transpose(-1, -2)));
    state.z_buf = state.buffered() ? at::cat({state.z_buf, zs}, 1) : zs;
    state.t_buf = state.t_buf.defined() && state.t_buf.size(1) ? at::cat({state.t_buf, ts}, 1) : ts;
    if (state.buffered() == C) {
      // The chunk is complete: its conv now sees all of its tokens (and zeros past its end), as in training.
      at::Tensor v = target_chunk(state.t_buf).to(cd);
      state.w_down = state.w_down.to(cd) + options_.lr * chunk_delta(v, state.z_buf);
      state.z_buf = at::Tensor();
      state.t_buf = at::Tensor();
      state.chunks_done += 1;
    }
    pos += n;
  }
  state.tokens_seen += T;
  return at::cat(outs, 1).to(x.scalar_type());
}

void InPlaceTTT::flush(InPlaceTTTState& state) {
  if (options_.fast_weight_mode != FastWeightMode::legacy_in_place || state.buffered() == 0) return;
  // flush_ttt_buffers(force=True): the partial chunk becomes one (clipped) delta.
  at::NoGradGuard no_grad;
  const auto cd = state.z_buf.scalar_type();
  at::Tensor total = chunk_delta(state.t_buf, state.z_buf).squeeze(0);
  w_down.copy_(cast_to(w_down, cd) + options_.lr * total);
  state.z_buf = at::Tensor();
  state.t_buf = at::Tensor();
  state.chunks_done += 1;
  state.w_down = w_down.detach().to(at::kFloat).unsqueeze(0).clone();
}

void InPlaceTTT::reset(InPlaceTTTState& state) {
  const int64_t B = state.w_down.defined() ? state.w_down.size(0) : 1;
  if (options_.fast_weight_mode == FastWeightMode::legacy_in_place && w_down_pretrained.defined()) {
    at::NoGradGuard no_grad;
    w_down.copy_(w_down_pretrained);  // reset_ttt_state in the port
  }
  state = init_state(B);
}

void InPlaceTTT::load(const std::map<std::string, at::Tensor>& tensors, const std::string& prefix,
                      const std::string& file) {
  std::map<std::string, at::Tensor> m;
  auto want = [&](const std::string& name) { m[prefix + name]; };
  for (auto& p : named_parameters(true)) want(p.key());
  for (auto& b : named_buffers(true)) want(b.key());
  for (auto& [key, value] : m) {
    if (auto it = tensors.find(key); it != tensors.end()) {
      value = it->second;
      continue;
    }
    // LoRA-wrapped Linear (docs/checkpoint-keys.md §2.3): X.frozen_W.weight + scaling · X.lora_B.weight · X.lora_A.weight.
    const std::string suffix = ".weight";
    if (key.size() > suffix.size() && key.compare(key.size() - suffix.size(), suffix.size(), suffix) == 0) {
      const std::string base = key.substr(0, key.size() - suffix.size());
      auto fz = tensors.find(base + ".frozen_W.weight");
      if (fz != tensors.end()) {
        at::Tensor w = fz->second.to(at::kFloat);
        auto a = tensors.find(base + ".lora_A.weight");
        auto b = tensors.find(base + ".lora_B.weight");
        if ((a == tensors.end()) != (b == tensors.end())) {
          throw Error(file, base + (a == tensors.end() ? ".lora_A.weight" : ".lora_B.weight"),
                      "LoRA pair incomplete");
        }
        if (a != tensors.end()) w = w + options_.lora_scaling * at::matmul(b->second.to(at::kFloat), a->second.to(at::kFloat));
        value = w;
      }
    }
  }
  if (options_.variant == InPlaceVariant::moshi_port) {
    // w_down missing: the loaders initialise it from linear_out; w_down_pretrained missing: a copy of w_down.
    auto& wd = m[prefix + "w_down"];
    if (!wd.defined()) wd = m[prefix + "linear_out.weight"];
    auto& wp = m[prefix + "w_down_pretrained"];
    if (!wp.defined()) wp = wd;
  }
  std::map<std::string, at::Tensor> present;
  for (auto& [k, v] : m) {
    if (v.defined()) present.emplace(k, v);
  }
  load_module_tensors(*this, present, prefix, file);
}

}  // namespace mtt::ttt
