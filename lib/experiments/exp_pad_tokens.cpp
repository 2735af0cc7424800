// `pad-tokens`: the fork's zero pads (docs/ttt.md §6: "Sequences are right-padded with zeros to a
// multiple of b ... pad tokens take part in the inner updates") and the gradient they send into the
// TTT parameters. A pad token is x = 0, so its key before the L2 norm (§1.1 steps 1-2) is
// XK = wk(0) = wk.bias, and F.normalize(x) = x / max(||x||, 1e-12) has a Jacobian of size
// 1 / max(||x||, 1e-12): a small (or zero) wk.bias turns any gradient reaching a pad key into a huge
// one. PadUpdates::masked (lib/ttt/ttt_layer.h) gives pads lr 0, so nothing reaches them.
//
// One grid point = one pad mode x one sequence length x one init of the projection biases, on the
// fork's hybrid TTT path (lib/ttt/hybrid_ttt_path.h: VDIT layer, dit eta, target LN eps 1e-5, no
// post_norm/wo, tanh gate). Measured after one forward + backward of a loss on the real tokens only:
// the gradient norm of every TTT parameter, the norm of the pad keys before the L2 norm, the real
// tokens' outputs against the other pad mode and against the unpadded sequence run alone. With the
// fork's pads (legacy) the tiny Moshi LM (lib/moshi/hybrid.cpp pads the same way) is measured too.
#include <ATen/ATen.h>
#include <c10/core/GradMode.h>
#include <torch/csrc/autograd/autograd.h>

#include <cmath>
#include <cstdio>
#include <functional>
#include <map>
#include <memory>
#include <tuple>

#include "core/error.h"
#include "io/strict_json.h"
#include "experiments/builtin.h"
#include "experiments/config_keys.h"
#include "moshi/lm.h"
#include "ttt/hybrid_ttt_path.h"

namespace mtt::experiments {

namespace {

using nlohmann::json;

const char* kTTTPrefix = "ttt_layer.ttt.";

struct PadSetup {
  int64_t D = 16, H = 2, b = 8, L = 12;
  double base_lr = 1.0, gating_alpha = 0.1;
  std::string bias_init = "zero";
  uint64_t seed = 0;
};

// The projection biases wq/wk/wv/wo: zero (a careless init: what a zero-initialising port gets), or
// PyTorch's nn.Linear default U(+-1/sqrt(D)), the values that reach the fork's training (spec
// docs/ttt.md §1.1, init-order note) and our TTTLayer's default, redrawn here per seed.
void torch_default_bias_(at::Tensor& t, int64_t fan_in) {
  at::NoGradGuard ng;
  const double k = 1.0 / std::sqrt(static_cast<double>(fan_in));
  t.copy_(at::rand(t.sizes(), t.options()) * (2 * k) - k);
}

void init_proj_biases(const std::function<at::Tensor&(const std::string&)>& param, const PadSetup& s) {
  if (s.bias_init == "zero") {
    at::NoGradGuard ng;
    for (const char* p : {"wq", "wk", "wv", "wo"}) param(std::string(p) + ".bias").zero_();
    return;
  }
  at::manual_seed(s.seed + 101);
  for (const char* p : {"wq", "wk", "wv", "wo"}) torch_default_bias_(param(std::string(p) + ".bias"), s.D);
}

bool ends_with(const std::string& s, const std::string& tail) {
  return s.size() >= tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
}

// Zero pads on the right up to a multiple of b, as the fork and HybridTTTPath::run_ttt do, with the
// mask of real tokens (used by PadUpdates::masked only).
std::pair<at::Tensor, at::Tensor> pad_to_b(const at::Tensor& x, int64_t b) {
  const int64_t B = x.size(0), L = x.size(1), D = x.size(2), pad = (b - L % b) % b;
  at::Tensor mask = at::ones({B, L + pad}, x.options().dtype(at::kBool));
  if (pad == 0) return {x, mask};
  mask.narrow(1, L, pad).fill_(false);
  return {at::cat({x, at::zeros({B, pad, D}, x.options())}, 1), mask};
}

struct LayerRun {
  at::Tensor out;                        // [1, L, D] TTT branch output at the real tokens
  std::vector<std::string> names;        // parameter names (without the ttt_layer.ttt. prefix)
  std::vector<at::Tensor> grads;         // undefined where no gradient reached the parameter
  double loss = 0;
};

// The fork's hybrid TTT path with the given pad mode; the same seed and bias init give the same
// parameters for both modes.
std::unique_ptr<ttt::HybridTTTPath> make_path(const PadSetup& s, ttt::PadUpdates mode) {
  auto o = ttt::HybridTTTPathOptions::fork(s.D, s.H, s.b, s.base_lr, s.gating_alpha);
  o.pad_updates = mode;
  auto path = std::make_unique<ttt::HybridTTTPath>(o, s.seed);
  init_proj_biases([&](const std::string& n) -> at::Tensor& { return path->ttt_layer().param(n); }, s);
  return path;
}

LayerRun run_layer(ttt::HybridTTTPath& path, const at::Tensor& x, const at::Tensor& target) {
  // HybridTTTPath pads with zeros and trims itself (the library's fork path, hybrid_layer.py:L330-348).
  auto o = path.forward(x, nullptr);
  at::Tensor loss = 0.5 * (o.y - target).pow(2).mean();  // real tokens only: y is trimmed to L
  LayerRun r;
  std::vector<at::Tensor> params;
  for (const auto& [n, t] : path.named_parameters()) {
    r.names.push_back(n.rfind(kTTTPrefix, 0) == 0 ? n.substr(std::string(kTTTPrefix).size()) : n);
    params.push_back(t);
  }
  r.grads = torch::autograd::grad({loss}, params, {}, /*retain_graph=*/false, /*create_graph=*/false,
                                  /*allow_unused=*/true);
  r.out = o.ttt_out.detach();
  r.loss = loss.item<double>();
  return r;
}

double max_abs_diff(const at::Tensor& a, const at::Tensor& b) {
  if (!a.defined() && !b.defined()) return 0;
  if (!a.defined()) return b.abs().max().item<double>();
  if (!b.defined()) return a.abs().max().item<double>();
  return (a.to(at::kDouble) - b.to(at::kDouble)).abs().max().item<double>();
}

double norm_or_zero(const at::Tensor& g) { return g.defined() ? g.to(at::kDouble).norm().item<double>() : 0.0; }

std::string metric_name(std::string n) {
  for (auto& c : n)
    if (c == '.') c = '_';
  return "grad_" + n;
}

// The tiny Moshi LM with hybrid TTT layers, full-sequence forward (HybridBlock pads the fork's way,
// always legacy), text cross-entropy on random targets, one backward.
void run_tiny_moshi(const PadSetup& s, RunResult& r) {
  moshi::LMConfig c = moshi::LMConfig::tiny();
  c.ttt.enable = true;
  c.ttt.layers = "middle";
  c.ttt.mini_batch_size = s.b;
  c.ttt.base_lr = s.base_lr;
  c.ttt.initial_gating_alpha = s.gating_alpha;
  moshi::LMModel m(c);
  m.init_random(s.seed);
  std::map<std::string, at::Tensor*> ttt_params;
  const std::string marker = "seq_modeling_block.ttt_layer.ttt.";
  for (auto& [n, t] : m.named_parameters()) {
    if (n.find(marker) != std::string::npos) ttt_params[n] = t;
  }
  at::manual_seed(s.seed + 101);
  {
    at::NoGradGuard ng;
    for (auto& [n, t] : ttt_params)
      for (const char* p : {".wq.bias", ".wk.bias", ".wv.bias", ".wo.bias"})
        if (ends_with(n, p)) {
          if (s.bias_init == "zero") t->zero_();
          else torch_default_bias_(*t, c.dim);
        }
  }
  m.set_requires_grad(true);
  const int64_t K = c.num_codebooks();
  at::manual_seed(s.seed + 7);
  at::Tensor seq = at::empty({1, K, s.L}, at::kLong);
  seq.select(1, 0).copy_(at::randint(0, c.text_card, {1, s.L}, at::kLong));
  for (int64_t k = 1; k < K; ++k) seq.select(1, k).copy_(at::randint(0, c.card, {1, s.L}, at::kLong));
  at::Tensor tgt = at::randint(0, c.text_out_card(), {s.L}, at::kLong);
  auto [h, text_logits] = m.forward_text(seq, nullptr);
  at::Tensor logits = text_logits.reshape({s.L, -1}).to(at::kFloat);
  at::Tensor loss = at::cross_entropy_loss(logits, tgt);
  std::vector<at::Tensor> params;
  std::vector<std::string> names;
  for (auto& [n, t] : ttt_params) {
    names.push_back(n);
    params.push_back(*t);
  }
  auto grads = torch::autograd::grad({loss}, params, {}, false, false, /*allow_unused=*/true);
  double wk_bias2 = 0, total2 = 0;
  for (size_t i = 0; i < grads.size(); ++i) {
    double g = norm_or_zero(grads[i]);
    total2 += g * g;
    if (ends_with(names[i], ".wk.bias")) wk_bias2 += g * g;
  }
  r.metrics["moshi_grad_wk_bias"] = std::sqrt(wk_bias2);
  r.metrics["moshi_grad_ttt_total"] = std::sqrt(total2);
  r.metrics["moshi_wk_bias_share"] = total2 > 0 ? wk_bias2 / total2 : 0.0;
  r.metrics["moshi_loss"] = loss.item<double>();
}

RunResult run_pad_tokens(const RunContext& ctx) {
  const json& cfg = ctx.point.config;
  const std::string& where = ctx.point.id;
  const json t = cfg.value("ttt", json::object());
  PadSetup s;
  try {
    s.D = t.value("model_dim", 16);
    s.H = t.value("num_heads", 2);
    s.b = t.value("mini_batch_size", 8);
    s.base_lr = t.value("base_lr", 1.0);
    s.gating_alpha = t.value("initial_gating_alpha", 0.1);
    s.bias_init = t.value("proj_bias_init", "zero");
    s.L = cfg.value("seq_len", 12);
    s.seed = cfg.value("seed", 0);
  } catch (const json::exception& e) {
    throw Error(where, "ttt", "bad value: " + io::json_error_text(e));
  }
  const std::string pad_name = t.value("pad_updates", "legacy");
  if (pad_name != "legacy" && pad_name != "masked")
    throw Error(where, "ttt.pad_updates", "unknown value '" + pad_name + "' (one of: legacy, masked)");
  if (s.bias_init != "zero" && s.bias_init != "torch_default")
    throw Error(where, "ttt.proj_bias_init", "unknown value '" + s.bias_init + "' (one of: zero, torch_default)");
  if (s.L < 1) throw Error(where, "seq_len", "must be >= 1");
  const ttt::PadUpdates mode = pad_name == "legacy" ? ttt::PadUpdates::legacy : ttt::PadUpdates::masked;
  const ttt::PadUpdates other = mode == ttt::PadUpdates::legacy ? ttt::PadUpdates::masked : ttt::PadUpdates::legacy;

  auto path_main = make_path(s, mode), path_other = make_path(s, other);
  ttt::HybridTTTPath& path = *path_main;
  at::manual_seed(s.seed + 1);
  at::Tensor x = at::randn({1, s.L, s.D});
  at::Tensor target = at::randn({1, s.L, s.D});

  LayerRun primary = run_layer(path, x, target);
  LayerRun alt = run_layer(*path_other, x, target);

  RunResult r;
  const int64_t pad = (s.b - s.L % s.b) % s.b;
  r.metrics["pad_tokens"] = pad;
  r.metrics["loss"] = primary.loss;
  double total2 = 0, grad_diff = 0;
  json grads = json::object();
  for (size_t i = 0; i < primary.names.size(); ++i) {
    double g = norm_or_zero(primary.grads[i]);
    total2 += g * g;
    grads[primary.names[i]] = g;
    r.metrics[metric_name(primary.names[i])] = g;
    grad_diff = std::max(grad_diff, max_abs_diff(primary.grads[i], alt.grads[i]));
  }
  r.metrics["grad_ttt_total"] = std::sqrt(total2);
  r.metrics["wk_bias_share"] = total2 > 0 ? std::pow(grads.value("wk.bias", 0.0), 2) / total2 : 0.0;
  r.metrics["grad_max_diff_other_mode"] = grad_diff;
  r.metrics["real_out_diff_other_mode"] = max_abs_diff(primary.out, alt.out);

  // The unpadded sequence alone: TTTLayer without pads (its tail is a smaller mini-batch with the
  // same eta 1/b per column, spec §1.1 step 7), the reference for what the real tokens should see.
  {
    c10::NoGradGuard ng;
    at::Tensor alone = path.ttt_layer().forward(x, nullptr);
    r.metrics["real_out_diff_unpadded"] = max_abs_diff(primary.out, alone);
  }

  // The pad keys as the layer builds them (after projection and L2 norm), against normalize(wk.bias)
  // per head, and their norm before the L2 norm (= ||wk.bias|| per head: x = 0 at a pad).
  if (pad > 0) {
    c10::NoGradGuard ng;
    auto [xp, mask] = pad_to_b(x, s.b);
    ttt::Options opt;
    opt.pad_updates = mode;
    opt.pad_mask = mask;
    auto d = path.ttt_layer().forward_detailed(xp, nullptr, opt);  // XK [1, H, L + pad, d]
    at::Tensor pad_xk = d.XK.narrow(2, s.L, pad);
    const at::Tensor& wk = path.ttt_layer().param("wk.weight");
    const at::Tensor& bk = path.ttt_layer().param("wk.bias");
    at::Tensor raw = at::linear(xp.narrow(1, s.L, pad), wk, bk).view({pad, s.H, s.D / s.H});
    at::Tensor raw_norm = raw.to(at::kDouble).norm(2, {-1});
    r.metrics["pad_xk_norm_min"] = raw_norm.min().item<double>();
    r.metrics["pad_xk_norm_max"] = raw_norm.max().item<double>();
    at::Tensor bh = bk.detach().view({1, s.H, 1, s.D / s.H});
    at::Tensor expected = bh / bh.norm(2, {-1}, true).clamp_min(1e-12);  // F.normalize, eps 1e-12
    r.metrics["pad_xk_minus_normalized_bias"] = max_abs_diff(pad_xk, expected.expand_as(pad_xk));
  }

  if (mode == ttt::PadUpdates::legacy && cfg.value("tiny_moshi", true)) run_tiny_moshi(s, r);

  r.evidence["pad_updates"] = pad_name;
  r.evidence["proj_bias_init"] = s.bias_init;
  r.evidence["seq_len"] = s.L;
  r.evidence["mini_batch_size"] = s.b;
  r.evidence["grad_norms"] = grads;
  return r;
}

// Points by (bias init, pad mode, whole mini-batches?), the largest ||grad wk.bias|| of each.
Verdict verdict_pad_tokens(const std::vector<PointOutcome>& pts) {
  struct Key {
    std::string init, mode;
    bool whole;
    bool operator<(const Key& o) const { return std::tie(init, mode, whole) < std::tie(o.init, o.mode, o.whole); }
  };
  std::map<Key, double> wk, moshi_wk;
  std::map<std::string, double> pad_norm;  // smallest pad key norm before L2, per init
  std::map<std::string, double> wk_share;  // wk.bias share of the squared gradient, legacy + pads
  for (const auto& p : pts) {
    const auto& e = p.result.evidence;
    const auto& m = p.result.metrics;
    Key k{e.value("proj_bias_init", "zero"), e.value("pad_updates", "legacy"), m.value("pad_tokens", 0) == 0};
    wk[k] = std::max(wk[k], m.value("grad_wk_bias", 0.0));
    if (m.contains("moshi_grad_wk_bias")) moshi_wk[k] = std::max(moshi_wk[k], m.value("moshi_grad_wk_bias", 0.0));
    if (m.contains("pad_xk_norm_min")) {
      double v = m.value("pad_xk_norm_min", 0.0);
      pad_norm[k.init] = pad_norm.count(k.init) ? std::min(pad_norm[k.init], v) : v;
    }
    if (k.mode == "legacy" && !k.whole) wk_share[k.init] = std::max(wk_share[k.init], m.value("wk_bias_share", 0.0));
  }
  Verdict v;
  std::string text, exploded_at, quiet_at;
  bool any = false;
  json ev = json::object();
  for (const std::string init : {"zero", "torch_default"}) {
    Key lp{init, "legacy", false}, mp{init, "masked", false}, lw{init, "legacy", true};
    if (!wk.count(lp) || !wk.count(mp) || !wk.count(lw)) continue;
    any = true;
    auto ratio = [](double a, double b) { return b > 0 ? a / b : (a > 0 ? INFINITY : 1.0); };
    auto num = [](double x) { return std::isfinite(x) ? json(x) : json("inf"); };
    const double vs_masked = ratio(wk[lp], wk[mp]), vs_whole = ratio(wk[lp], wk[lw]);
    json e = {{"grad_wk_bias_legacy_padded", wk[lp]}, {"grad_wk_bias_masked_padded", wk[mp]},
              {"grad_wk_bias_legacy_whole", wk[lw]}, {"blowup_vs_masked", num(vs_masked)},
              {"blowup_vs_whole_minibatches", num(vs_whole)},
              {"pad_xk_norm_before_l2_min", pad_norm.count(init) ? json(pad_norm[init]) : json(nullptr)},
              {"wk_bias_share_legacy_padded", wk_share[init]}};
    char buf[600];
    std::snprintf(buf, sizeof buf,
                  "proj_bias_init=%s: ||grad wk.bias|| with the fork's zero pads (legacy, length not a multiple of b) "
                  "is %.3g, %.3g x the masked pads and %.3g x whole mini-batches (pad keys before the L2 norm: "
                  "||wk.bias|| per head >= %.3g; wk.bias holds %.4f of the squared TTT gradient).",
                  init.c_str(), wk[lp], vs_masked, vs_whole, pad_norm.count(init) ? pad_norm[init] : 0.0,
                  wk_share[init]);
    text += std::string(text.empty() ? "" : " ") + buf;
    if (moshi_wk.count(lp) && moshi_wk.count(lw)) {
      const double mr = ratio(moshi_wk[lp], moshi_wk[lw]);
      e["moshi_grad_wk_bias_padded"] = moshi_wk[lp];
      e["moshi_grad_wk_bias_whole"] = moshi_wk[lw];
      e["moshi_blowup_vs_whole_minibatches"] = num(mr);
      std::snprintf(buf, sizeof buf, " Tiny Moshi LM (its hybrid layers always pad the fork's way): %.3g vs %.3g, %.3g x.",
                    moshi_wk[lp], moshi_wk[lw], mr);
      text += buf;
    }
    ev[init] = e;
    // An explosion: orders of magnitude beyond both controls (the finding: ~1e11 vs ~17).
    std::string& list = (vs_masked > 1e3 && vs_whole > 1e3) ? exploded_at : quiet_at;
    list += (list.empty() ? "" : ", ") + init;
  }
  v.evidence = ev;
  if (!any) {
    v.status = "inconclusive";
    v.text = "the grid needs ttt.pad_updates legacy and masked and a seq_len that is / is not a multiple of b";
    return v;
  }
  if (!exploded_at.empty()) {
    v.status = "confirmed";
    text += " Cause: at a pad x = 0, so XK = wk.bias before F.normalize, whose Jacobian is 1/max(||wk.bias||, 1e-12); "
            "the blow-up needs the fork's zero pads AND a (near-)zero wk.bias (here: proj_bias_init " + exploded_at + ")";
    if (!quiet_at.empty()) text += "; with proj_bias_init " + quiet_at + " it does not occur";
    text += ". Fix: mask the pads (PadUpdates::masked: pads get lr 0 and the real tokens' outputs equal the unpadded "
            "sequence's), or train on windows that are whole TTT mini-batches.";
  } else {
    v.status = "refuted";
    text += " No explosion of grad wk.bias (> 1e3 x both controls) at any bias init in this grid.";
  }
  v.text = text;
  return v;
}

}  // namespace

ExperimentKind make_pad_tokens() {
  ExperimentKind k{"pad-tokens", "the fork's zero pads (legacy, update the state) vs masked pads: TTT gradients, pad keys",
                   run_pad_tokens, verdict_pad_tokens, /*device_aware=*/false, {}};
  k.config = io::ConfigRules()
                 .integer("seed", 0, std::numeric_limits<int64_t>::max())
                 .integer("seq_len", 1, 8192)
                 .boolean("tiny_moshi")
                 .section("ttt", ttt_section_check({"model_dim", "num_heads", "mini_batch_size", "base_lr",
                                                    "initial_gating_alpha", "proj_bias_init", "pad_updates"}));
  return k;
}

}  // namespace mtt::experiments
