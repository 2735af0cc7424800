// The TTT layer: wrapper (docs/ttt.md §1), inner loop via ttt_scan/ttt_step (§2, §3), persistent
// per-element state and streaming over arbitrary chunks (§2.4, §7b/c).
#include "ttt/ttt_layer.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/core/grad_mode.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <string>

#include "core/error.h"
#include "ttt/inner_loop_log.h"
#include "ttt/ttt_inputs.h"
#include "ttt/ttt_scan.h"

namespace mtt::ttt {

// ---------------------------------------------------------------------------------------------
// Config

std::vector<int64_t> TTTConfig::inner_dims() const {
  const int64_t d = head_dim();
  if (inner == InnerModel::linear) return {d, d};
  std::vector<int64_t> dims{d};
  if (!ttt_mlp_hidden_dims.empty()) {  // the fork's [d] + ttt_mlp_hidden_dims + [d]
    dims.insert(dims.end(), ttt_mlp_hidden_dims.begin(), ttt_mlp_hidden_dims.end());
    dims.push_back(d);
    return dims;
  }
  const int64_t e = static_cast<int64_t>(static_cast<double>(d) * ttt_mlp_expansion_factor);
  for (int64_t k = 1; k < ttt_mlp_layers; ++k) dims.push_back(e);
  dims.push_back(d);
  return dims;
}

void TTTConfig::validate() const {
  auto bad = [&](const std::string& key, const std::string& why) { throw Error("", key, why, ErrorKind::Usage); };
  if (model_dim <= 0 || num_heads <= 0) bad("model_dim", "model_dim and num_heads must be positive");
  if (model_dim % num_heads != 0) bad("num_heads", "model_dim " + std::to_string(model_dim) + " is not divisible by num_heads " + std::to_string(num_heads));
  if (mini_batch_size < 1) bad("mini_batch_size", "must be >= 1");
  if (inner == InnerModel::mlp && ttt_mlp_layers < 2) bad("ttt_mlp_layers", "TTT-MLP needs >= 2 layers (1 layer is InnerModel::linear)");
  if (inner == InnerModel::mlp && ttt_mlp_hidden_dims.empty() &&
      static_cast<int64_t>(head_dim() * ttt_mlp_expansion_factor) < 1)
    bad("ttt_mlp_expansion_factor", "hidden width must be >= 1");
  if (!ttt_mlp_hidden_dims.empty()) {
    if (inner != InnerModel::mlp || static_cast<int64_t>(ttt_mlp_hidden_dims.size()) != ttt_mlp_layers - 1)
      bad("ttt_mlp_hidden_dims", "expected " + std::to_string(ttt_mlp_layers - 1) + " hidden widths for " +
                                     std::to_string(ttt_mlp_layers) + " inner layers, got " +
                                     std::to_string(ttt_mlp_hidden_dims.size()));
    for (int64_t h : ttt_mlp_hidden_dims)
      if (h < 1) bad("ttt_mlp_hidden_dims", "hidden widths must be >= 1");
  }
  if (rope != Rope::none && head_dim() % 2 != 0) bad("rope", "RoPE needs an even head dim");
  if (rope == Rope::vdit_frames && head_dim() % 8 != 0) bad("rope", "vdit_frames RoPE needs head dim % 8 == 0");
}

TTTConfig TTTConfig::moshi(int64_t D, int64_t H, int64_t b) {
  TTTConfig c;
  c.model_dim = D;
  c.num_heads = H;
  c.mini_batch_size = b;
  c.inner = InnerModel::mlp;
  c.proj_bias = true;  // the fork's wq..wo carry a bias (docs/checkpoint-keys.md §1.2)
  c.l2_normalize_qk = true;
  c.rope = Rope::minibatch_1d;
  c.recon_target = ReconTarget::correct;
  c.recon_target_eps = 1e-8;
  c.inner_ln_eps = 1e-6;
  c.eta = Eta::causal;  // Moshi is autoregressive (§4 "Causality")
  c.output_path = OutputPath::post_norm_wo;
  return c;
}

TTTConfig TTTConfig::vdit(int64_t D, int64_t H, int64_t b, InnerModel inner) {
  TTTConfig c;
  c.model_dim = D;
  c.num_heads = H;
  c.mini_batch_size = b;
  c.inner = inner;
  c.proj_bias = true;
  c.l2_normalize_qk = true;
  c.rope = Rope::none;
  c.recon_target = ReconTarget::correct;
  c.recon_target_eps = 1e-8;
  c.inner_ln_eps = 1e-8;  // VDIT ops/utils.py
  c.eta = Eta::dit;
  c.output_path = OutputPath::post_norm_wo;
  return c;
}

TTTConfig TTTConfig::lmpt(int64_t D, int64_t H, int64_t b, InnerModel inner) {
  TTTConfig c;
  c.model_dim = D;
  c.num_heads = H;
  c.mini_batch_size = b;
  c.inner = inner;
  c.proj_bias = false;
  c.l2_normalize_qk = false;
  c.rope = Rope::minibatch_1d;
  c.recon_target = ReconTarget::raw;
  c.inner_ln_eps = 1e-6;
  c.eta = Eta::causal;
  c.output_path = OutputPath::post_norm_wo;
  return c;
}

// ---------------------------------------------------------------------------------------------
// State

void TTTState::reset(const at::Tensor& mask) {
  if (!defined()) return;
  const int64_t B = batch_size();
  at::Tensor m = mask.to(at::kBool).to(at::kCPU).reshape({-1});
  if (m.size(0) != B) throw Error("", "reset", "mask has " + std::to_string(m.size(0)) + " elements, state has " + std::to_string(B));
  at::Tensor md = m.to(weights[0].device()).view({B, 1, 1, 1});
  for (size_t k = 0; k < weights.size(); ++k) {
    weights[k] = at::where(md, init_weights[k].to(weights[k].scalar_type()).unsqueeze(0), weights[k]);
    biases[k] = at::where(md, init_biases[k].to(biases[k].scalar_type()).unsqueeze(0), biases[k]);
    if (!acc_weights.empty()) {
      acc_weights[k] = at::where(md, at::zeros_like(acc_weights[k]), acc_weights[k]);
      acc_biases[k] = at::where(md, at::zeros_like(acc_biases[k]), acc_biases[k]);
    }
  }
  auto acc = m.accessor<bool, 1>();
  for (int64_t b = 0; b < B; ++b)
    if (acc[b]) position[b] = 0;
}

void TTTState::reset_all() {
  if (!defined()) return;
  reset(at::ones({batch_size()}, at::kBool));
}

void TTTState::detach_() {
  for (auto* v : {&weights, &biases, &acc_weights, &acc_biases})
    for (auto& t : *v) t = t.detach();
}

TTTState TTTState::select(const at::Tensor& index) const {
  TTTState s;
  at::Tensor idx = index.to(at::kLong);
  auto pick = [&](const std::vector<at::Tensor>& v) {
    std::vector<at::Tensor> r;
    for (auto& t : v) r.push_back(t.index_select(0, idx.to(t.device())));
    return r;
  };
  s.weights = pick(weights);
  s.biases = pick(biases);
  s.acc_weights = pick(acc_weights);
  s.acc_biases = pick(acc_biases);
  at::Tensor ic = idx.to(at::kCPU);
  for (int64_t i = 0; i < ic.size(0); ++i) s.position.push_back(position[ic[i].item<int64_t>()]);
  s.init_weights = init_weights;
  s.init_biases = init_biases;
  return s;
}

void TTTState::assign(const at::Tensor& index, const TTTState& part) {
  at::Tensor idx = index.to(at::kLong);
  auto put = [&](std::vector<at::Tensor>& dst, const std::vector<at::Tensor>& src) {
    if (src.empty()) return;
    if (dst.empty()) {  // this state had no pending accumulators yet
      for (auto& t : src) {
        std::vector<int64_t> shape(t.sizes().begin(), t.sizes().end());
        shape[0] = batch_size();
        dst.push_back(at::zeros(shape, t.options()));
      }
    }
    for (size_t k = 0; k < dst.size(); ++k) dst[k] = dst[k].index_copy(0, idx.to(dst[k].device()), src[k].to(dst[k].scalar_type()));
  };
  put(weights, part.weights);
  put(biases, part.biases);
  put(acc_weights, part.acc_weights);
  put(acc_biases, part.acc_biases);
  at::Tensor ic = idx.to(at::kCPU);
  for (int64_t i = 0; i < ic.size(0); ++i) position[ic[i].item<int64_t>()] = part.position[i];
}

// ---------------------------------------------------------------------------------------------
// Layer: parameters

namespace {

std::vector<std::string> inner_names(const TTTConfig& c, bool weight) {
  const int64_t n = c.num_inner_layers();
  std::vector<std::string> r;
  for (int64_t k = 0; k < n; ++k) {
    if (n <= 2) r.push_back((weight ? "W" : "b") + std::to_string(k + 1));
    else r.push_back((weight ? "weights." : "biases.") + std::to_string(k));
  }
  return r;
}

}  // namespace

TTTLayer::TTTLayer(TTTConfig config, uint64_t seed) : config_(std::move(config)) {
  config_.validate();
  const int64_t D = config_.model_dim, H = config_.num_heads, d = config_.head_dim();
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  auto normal = [&](std::vector<int64_t> shape, double std) { return at::normal(0.0, std, shape, gen); };
  auto f32 = at::TensorOptions().dtype(at::kFloat);
  // Inits of spec §1.1 table: N(0, 0.02) weights, unit norms, zero inner biases; the projection
  // biases keep nn.Linear's default U(+-1/sqrt(D)), untouched by the references' init_weights. (Zero
  // projection biases make a zero-padded token's key wk.bias = 0, whose L2 normalisation sends
  // ~1e12 gradients into wk.bias: experiments/pad-tokens.yaml.)
  const double kb = 1.0 / std::sqrt(static_cast<double>(D));
  for (const char* p : {"wq", "wk", "wv", "wo"}) {
    params_.emplace_back(std::string(p) + ".weight", normal({D, D}, 0.02));
    if (config_.proj_bias) params_.emplace_back(std::string(p) + ".bias", at::rand({D}, gen) * (2 * kb) - kb);
  }
  params_.emplace_back("learnable_ttt_lr_weight", normal({H, 1, D}, 0.02));
  params_.emplace_back("learnable_ttt_lr_bias", at::zeros({H, 1}, f32));
  params_.emplace_back("ttt_norm_weight", at::ones({H, d}, f32));
  params_.emplace_back("ttt_norm_bias", at::zeros({H, d}, f32));
  auto dims = config_.inner_dims();
  auto wn = inner_names(config_, true), bn = inner_names(config_, false);
  for (size_t k = 0; k + 1 < dims.size(); ++k) {
    params_.emplace_back(wn[k], normal({H, dims[k], dims[k + 1]}, 0.02));
    params_.emplace_back(bn[k], at::zeros({H, 1, dims[k + 1]}, f32));
  }
  params_.emplace_back("post_norm.weight", at::ones({D}, f32));
  params_.emplace_back("post_norm.bias", at::zeros({D}, f32));
  if (config_.eta == Eta::causal) params_.emplace_back("learnable_token_idx", at::zeros({config_.mini_batch_size}, f32));
  for (auto& [n, t] : params_) t.requires_grad_(true);
}

std::vector<std::pair<std::string, at::Tensor>> TTTLayer::named_parameters() const { return params_; }

at::Tensor& TTTLayer::param(const std::string& name) {
  for (auto& [n, t] : params_)
    if (n == name) return t;
  throw Error("", name, "no such TTT parameter");
}

const at::Tensor& TTTLayer::param(const std::string& name) const {
  return const_cast<TTTLayer*>(this)->param(name);
}

std::vector<at::Tensor> TTTLayer::inner_weights() const {
  std::vector<at::Tensor> r;
  for (auto& n : inner_names(config_, true)) r.push_back(param(n));
  return r;
}

std::vector<at::Tensor> TTTLayer::inner_biases() const {
  std::vector<at::Tensor> r;
  for (auto& n : inner_names(config_, false)) r.push_back(param(n));
  return r;
}

void TTTLayer::load(const std::map<std::string, at::Tensor>& tensors, const std::string& prefix,
                    const std::string& file, bool allow_missing) {
  at::NoGradGuard ng;
  for (auto& [n, p] : params_) {
    auto it = tensors.find(prefix + n);
    if (it == tensors.end()) {
      if (allow_missing) continue;
      throw Error(file, prefix + n, "missing TTT parameter");
    }
    if (it->second.sizes() != p.sizes())
      throw Error(file, prefix + n, "shape " + c10::str(it->second.sizes()) + ", expected " + c10::str(p.sizes()));
    p.copy_(it->second);
  }
}

void TTTLayer::to(at::ScalarType dtype) {
  for (auto& [n, t] : params_) {
    bool rg = t.requires_grad();
    t = t.detach().to(dtype).requires_grad_(rg);
  }
}

void TTTLayer::to(const at::Device& device) {
  for (auto& [n, t] : params_) {
    bool rg = t.requires_grad();
    t = t.detach().to(device).requires_grad_(rg);
  }
}

void TTTLayer::set_requires_grad(bool on) {
  for (auto& [n, t] : params_) t.requires_grad_(on);
}

TTTState TTTLayer::init_state(int64_t batch, at::ScalarType dtype) const {
  TTTState s;
  s.init_weights = inner_weights();
  s.init_biases = inner_biases();
  for (auto& w : s.init_weights) {
    std::vector<int64_t> shape{batch};
    shape.insert(shape.end(), w.sizes().begin(), w.sizes().end());
    s.weights.push_back(w.to(dtype).unsqueeze(0).expand(shape).clone());  // clone: never alias W0
  }
  for (auto& b : s.init_biases) {
    std::vector<int64_t> shape{batch};
    shape.insert(shape.end(), b.sizes().begin(), b.sizes().end());
    s.biases.push_back(b.to(dtype).unsqueeze(0).expand(shape).clone());
  }
  s.position.assign(batch, 0);
  return s;
}

std::vector<at::Tensor> TTTLayer::effective_weights(const TTTState& state) const {
  std::vector<at::Tensor> r;
  const size_t n = state.weights.size();
  if (state.acc_weights.empty()) {
    r = state.weights;
    r.insert(r.end(), state.biases.begin(), state.biases.end());
    return r;
  }
  const int64_t b = config_.mini_batch_size, B = state.batch_size();
  at::Tensor tok = config_.eta == Eta::causal
                       ? token_factor(param("learnable_token_idx").detach(), b, state.weights[0].scalar_type())
                       : at::full({b}, 1.0 / b, state.weights[0].options());
  std::vector<at::Tensor> f;
  for (int64_t e = 0; e < B; ++e) {
    int64_t ph = state.position[e] % b;
    f.push_back(ph == 0 ? at::zeros({1}, tok.options()) : tok.narrow(0, ph - 1, 1));
  }
  at::Tensor fac = at::cat(f).view({B, 1, 1, 1}).to(state.weights[0].device());
  for (size_t k = 0; k < n; ++k) r.push_back(state.weights[k] - fac * state.acc_weights[k]);
  for (size_t k = 0; k < n; ++k) r.push_back(state.biases[k] - fac * state.acc_biases[k]);
  return r;
}

// ---------------------------------------------------------------------------------------------
// Layer: forward

at::Tensor TTTLayer::forward(const at::Tensor& x, TTTState* state, const Options& opt) {
  return forward_detailed(x, state, opt).y;
}

namespace {

at::ScalarType compute_dtype(const at::Tensor& x) {
  // Inner loop and state in fp32 (fp64 when the caller runs in fp64, e.g. gradcheck).
  return x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

bool uniform_positions(const TTTState* s) {
  if (!s || !s->defined()) return true;
  for (auto p : s->position)
    if (p != s->position[0]) return false;
  return true;
}

// Runs fn on groups of batch elements that share a position, merging outputs and state back.
template <class Fn>
ForwardResult grouped(const at::Tensor& x, TTTState* state, const Options& opt, int64_t batch_dim_count, Fn fn) {
  std::map<int64_t, std::vector<int64_t>> groups;
  for (int64_t b = 0; b < state->batch_size(); ++b) groups[state->position[b]].push_back(b);
  ForwardResult out;
  std::vector<at::Tensor> ys, xqws, xqs, xks, xvs, lrs;
  std::vector<int64_t> order;
  for (auto& [pos, members] : groups) {
    at::Tensor idx = at::tensor(members, at::kLong);
    TTTState sub = state->select(idx);
    Options o = opt;
    if (opt.pad_mask.defined()) o.pad_mask = opt.pad_mask.index_select(0, idx.to(opt.pad_mask.device()));
    ForwardResult r = fn(idx, &sub, o);
    state->assign(idx, sub);
    if (r.y.defined()) ys.push_back(r.y);
    xqws.push_back(r.XQW);
    xqs.push_back(r.XQ);
    xks.push_back(r.XK);
    xvs.push_back(r.XV);
    lrs.push_back(r.lr);
    order.insert(order.end(), members.begin(), members.end());
  }
  // Inverse permutation back to batch order.
  std::vector<int64_t> inv(order.size());
  for (size_t i = 0; i < order.size(); ++i) inv[order[i]] = static_cast<int64_t>(i);
  at::Tensor iv = at::tensor(inv, at::kLong).to(x.device());
  auto merge = [&](std::vector<at::Tensor>& v) { return at::cat(v, 0).index_select(0, iv); };
  if (!ys.empty()) out.y = merge(ys);
  out.XQW = merge(xqws);
  out.XQ = merge(xqs);
  out.XK = merge(xks);
  out.XV = merge(xvs);
  out.lr = merge(lrs);
  return out;
}

}  // namespace

ForwardResult TTTLayer::forward_detailed(const at::Tensor& x, TTTState* state, const Options& opt) {
  if (x.dim() != 3 || x.size(2) != config_.model_dim)
    throw Error("", "x", "expected [B, L, " + std::to_string(config_.model_dim) + "], got " + c10::str(x.sizes()));
  if (state && state->defined() && state->batch_size() != x.size(0))
    throw Error("", "state", "state holds " + std::to_string(state->batch_size()) + " elements, input has " + std::to_string(x.size(0)));
  if (state && opt.state_mode == StateMode::functional && !state->defined()) *state = init_state(x.size(0), compute_dtype(x));
  if (state && opt.state_mode == StateMode::functional && !uniform_positions(state)) {
    return grouped(x, state, opt, 1, [&](const at::Tensor& idx, TTTState* sub, const Options& o) {
      return forward_uniform(x.index_select(0, idx.to(x.device())), sub, o);
    });
  }
  return forward_uniform(x, state, opt);
}

ForwardResult TTTLayer::forward_core(const at::Tensor& x, const at::Tensor& XQ, const at::Tensor& XK,
                                     const at::Tensor& XV, TTTState* state, const Options& opt) {
  if (state && opt.state_mode == StateMode::functional && !state->defined()) *state = init_state(x.size(0), compute_dtype(x));
  if (state && opt.state_mode == StateMode::functional && !uniform_positions(state)) {
    return grouped(x, state, opt, 1, [&](const at::Tensor& idx, TTTState* sub, const Options& o) {
      auto i = idx.to(x.device());
      return core_uniform(x.index_select(0, i), XQ.index_select(0, i), XK.index_select(0, i), XV.index_select(0, i), sub, o);
    });
  }
  at::ScalarType cdt = compute_dtype(x);
  return core_uniform(x.to(cdt), XQ.to(cdt), XK.to(cdt), XV.to(cdt), state, opt);
}

ForwardResult TTTLayer::forward_uniform(const at::Tensor& x, TTTState* state, const Options& opt) {
  const int64_t B = x.size(0), L = x.size(1), D = config_.model_dim, H = config_.num_heads, d = config_.head_dim();
  const at::ScalarType cdt = compute_dtype(x);
  const bool functional = opt.state_mode == StateMode::functional;
  const int64_t start = (state && functional && state->defined()) ? state->position[0] : 0;
  auto proj = [&](const char* p) {
    at::Tensor bias = config_.proj_bias ? param(std::string(p) + ".bias") : at::Tensor();
    return at::linear(x, param(std::string(p) + ".weight"), bias).view({B, L, H, d}).to(cdt);
  };
  at::Tensor XQ = proj("wq"), XK = proj("wk"), XV = proj("wv");  // §1.1 step 1
  if (config_.l2_normalize_qk) {                                 // step 2
    XQ = l2_normalize(XQ);
    XK = l2_normalize(XK);
  }
  XQ = apply_rope(XQ, config_.rope, start, config_.mini_batch_size, config_.rope_theta);  // step 3
  XK = apply_rope(XK, config_.rope, start, config_.mini_batch_size, config_.rope_theta);
  XV = reconstruction_target(XV, XK, param("ttt_norm_weight"), param("ttt_norm_bias"), config_.recon_target,
                             config_.recon_target_eps);  // step 4
  auto heads = [](const at::Tensor& t) { return t.permute({0, 2, 1, 3}).contiguous(); };
  ForwardResult r = core_uniform(x.to(cdt), heads(XQ), heads(XK), heads(XV), state, opt);
  at::Tensor o = r.XQW.to(x.scalar_type());
  if (config_.output_path == OutputPath::post_norm_wo) {  // step 9
    o = at::layer_norm(o, {D}, param("post_norm.weight"), param("post_norm.bias"), config_.post_norm_eps);
    at::Tensor bias = config_.proj_bias ? param("wo.bias") : at::Tensor();
    o = at::linear(o, param("wo.weight"), bias);
  }
  r.y = o;
  return r;
}

ForwardResult TTTLayer::core_uniform(const at::Tensor& xc, const at::Tensor& XQ, const at::Tensor& XK,
                                     const at::Tensor& XV, TTTState* state, const Options& opt) {
  const int64_t B = XQ.size(0), H = XQ.size(1), L = XQ.size(2), d = XQ.size(3), b = config_.mini_batch_size;
  const at::ScalarType cdt = XQ.scalar_type();
  const bool functional = opt.state_mode == StateMode::functional;
  const bool persist = state != nullptr && functional;
  const bool causal = config_.eta == Eta::causal;
  const int64_t start = (persist && state->defined()) ? state->position[0] : 0;
  const int64_t ph = start % b;
  const size_t n = static_cast<size_t>(config_.num_inner_layers());

  // Token-wise learning rate (§1.1 step 6); masked pad tokens get lr 0, so their eta column is 0 and
  // they never contribute a gradient to the state.
  at::Tensor lr = token_lr(xc, param("learnable_ttt_lr_weight"), param("learnable_ttt_lr_bias"), config_.ttt_base_lr, d);
  if (opt.pad_mask.defined() && opt.pad_updates == PadUpdates::masked) {
    if (opt.pad_mask.dim() != 2 || opt.pad_mask.size(0) != B || opt.pad_mask.size(1) != L)
      throw Error("", "pad_mask", "expected [" + std::to_string(B) + ", " + std::to_string(L) + "], got " + c10::str(opt.pad_mask.sizes()));
    lr = lr * opt.pad_mask.to(lr.device()).to(cdt).unsqueeze(1);
  }
  at::Tensor tok = causal ? token_factor(param("learnable_token_idx"), b, cdt) : at::full({b}, 1.0 / b, lr.options());

  // Start weights: W0 tiled over the batch, or the caller's state.
  std::vector<at::Tensor> W, Bv, aW, aB;
  if (persist && state->defined()) {
    for (size_t k = 0; k < n; ++k) {
      W.push_back(state->weights[k].to(cdt));
      Bv.push_back(state->biases[k].to(cdt));
    }
    for (size_t k = 0; k < state->acc_weights.size(); ++k) {
      aW.push_back(state->acc_weights[k].to(cdt));
      aB.push_back(state->acc_biases[k].to(cdt));
    }
  } else {
    auto w0 = inner_weights(), b0 = inner_biases();
    for (size_t k = 0; k < n; ++k) {
      std::vector<int64_t> sw{B}, sb{B};
      sw.insert(sw.end(), w0[k].sizes().begin(), w0[k].sizes().end());
      sb.insert(sb.end(), b0[k].sizes().begin(), b0[k].sizes().end());
      W.push_back(w0[k].to(cdt).unsqueeze(0).expand(sw));
      Bv.push_back(b0[k].to(cdt).unsqueeze(0).expand(sb));
    }
  }
  at::Tensor lnw = param("ttt_norm_weight"), lnb = param("ttt_norm_bias");
  const bool record = opt.inner_loop_log != nullptr;
  std::vector<at::Tensor> outs, lbs, las;

  auto partial_step = [&](int64_t off, int64_t m, int64_t phase, bool commit) {
    StepInputs s;
    s.XQ = XQ.narrow(2, off, m);
    s.XK = XK.narrow(2, off, m);
    s.XV = XV.narrow(2, off, m);
    s.lr = lr.narrow(2, off, m);
    at::Tensor tk = tok.narrow(0, phase, m);
    if (causal) {
      s.eta = at::tril(tk.view({1, 1, m, 1}) * s.lr.unsqueeze(-2));
    } else {
      s.eta = ((1.0 / static_cast<double>(b)) * s.lr.unsqueeze(-2)).expand({B, H, m, m});
    }
    s.row_factor = tk.view({1, 1, m, 1});
    s.ln_weight = lnw;
    s.ln_bias = lnb;
    s.ln_eps = config_.inner_ln_eps;
    s.commit = commit;
    s.record_losses = record;
    s.query = config_.multilayer_query;
    StepOutputs o = ttt_step(s, W, Bv, aW, aB);
    outs.push_back(o.XQW);
    if (record) {
      lbs.push_back(o.loss_before);
      las.push_back(o.loss_after);
    }
    W = std::move(o.weights);
    Bv = std::move(o.biases);
    aW = std::move(o.acc_weights);
    aB = std::move(o.acc_biases);
  };

  int64_t off = 0;
  if (ph > 0) {  // finish the mini-batch a previous call left open (primal form, §2.4)
    if (!causal)
      throw Error("", "eta", "Eta::dit is non-causal: a partial mini-batch cannot be continued; feed chunks that are multiples of b");
    check_internal(!aW.empty(), "TTTState: partial mini-batch without accumulators");
    const int64_t m0 = std::min(b - ph, L);
    partial_step(0, m0, ph, ph + m0 == b);
    off = m0;
  }
  const int64_t K = (L - off) / b;
  if (K > 0) {
    ScanInputs si;
    auto mb = [&](const at::Tensor& t) { return t.narrow(2, off, K * b).reshape({B, H, K, b, d}); };
    si.XQ = mb(XQ);
    si.XK = mb(XK);
    si.XV = mb(XV);
    si.eta = make_eta(lr.narrow(2, off, K * b), tok, config_.eta, b);
    si.ln_weight = lnw;
    si.ln_bias = lnb;
    si.ln_eps = config_.inner_ln_eps;
    si.checkpoint_group = opt.checkpoint_group_override >= 0 ? opt.checkpoint_group_override : config_.scan_checkpoint_group_size;
    si.record_losses = record;
    si.query = config_.multilayer_query;
    ScanOutputs so = ttt_scan(si, W, Bv);
    outs.push_back(so.XQW.reshape({B, H, K * b, d}));
    if (record) {
      lbs.push_back(so.loss_before.reshape({B, H, K * b}));
      las.push_back(so.loss_after.reshape({B, H, K * b}));
    }
    W = std::move(so.weights);
    Bv = std::move(so.biases);
    off += K * b;
  }
  const int64_t r = L - off;
  if (r > 0) {
    if (!causal && persist)
      throw Error("", "eta", "Eta::dit is non-causal: a persistent state cannot hold a partial mini-batch; feed multiples of b");
    // Without a persistent state the tail is its own smaller mini-batch (LMPT's remainder call);
    // with one, it stays pending in the accumulators so the next chunk continues it.
    partial_step(off, r, 0, !persist);
  }
  at::Tensor XQW = outs.size() == 1 ? outs[0] : at::cat(outs, 2);

  // Effective end weights (for legacy copies and logs): pending partial applied.
  auto effective = [&]() {
    std::vector<at::Tensor> We = W, Be = Bv;
    if (!aW.empty()) {
      const int64_t last = (start + L - 1) % b;
      at::Tensor f = tok.narrow(0, last, 1).view({1, 1, 1, 1});
      for (size_t k = 0; k < n; ++k) {
        We[k] = W[k] - f * aW[k];
        Be[k] = Bv[k] - f * aB[k];
      }
    }
    return std::make_pair(We, Be);
  };

  if (persist) {
    state->weights = W;
    state->biases = Bv;
    state->acc_weights = aW;
    state->acc_biases = aB;
    for (auto& p : state->position) p += L;
  } else if (!functional) {
    // The fork's behaviours (§7b/c): batch element 0's final state is written into the parameters
    // through .data (no autograd version bump), in eval only or on every forward.
    bool write = opt.state_mode == StateMode::legacy_write_params || !training_;
    auto [We, Be] = effective();
    if (write) {
      at::NoGradGuard ng;
      auto wn = inner_names(config_, true), bn = inner_names(config_, false);
      for (size_t k = 0; k < n; ++k) {
        param(wn[k]).variable_data().copy_(We[k].select(0, 0));
        param(bn[k]).variable_data().copy_(Be[k].select(0, 0));
      }
    }
    if (state) {
      if (!state->defined()) *state = init_state(B, cdt);
      at::NoGradGuard ng;
      for (size_t k = 0; k < n; ++k) {
        state->weights[k] = We[k].detach();
        state->biases[k] = Be[k].detach();
      }
      state->acc_weights.clear();
      state->acc_biases.clear();
      for (auto& p : state->position) p += L;
    }
  }

  if (record) {
    at::NoGradGuard ng;
    auto w0 = inner_weights(), b0 = inner_biases();
    std::vector<at::Tensor> w0c, b0c;
    for (size_t k = 0; k < n; ++k) {
      w0c.push_back(w0[k].detach().to(cdt).unsqueeze(0));
      b0c.push_back(b0[k].detach().to(cdt).unsqueeze(0));
    }
    at::Tensor g = lnw.detach().to(cdt).view({1, H, 1, d}), be = lnb.detach().to(cdt).view({1, H, 1, d});
    at::Tensor target = (XV - XK).detach();
    at::Tensor lw0 = ln_l2_loss(inner_forward(XK.detach(), w0c, b0c), target, g, be, config_.inner_ln_eps);
    std::vector<int64_t> pos(L);
    for (int64_t t = 0; t < L; ++t) pos[t] = start + t;
    opt.inner_loop_log->append(config_.layer_index, config_.name, b, pos, lw0, at::cat(lbs, 2), at::cat(las, 2));
  }

  ForwardResult res;
  res.XQW = XQW.permute({0, 2, 1, 3}).reshape({B, L, H * d});
  res.XQ = XQ;
  res.XK = XK;
  res.XV = XV;
  res.lr = lr;
  return res;
}

}  // namespace mtt::ttt
