#include "golden/golden_families.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <set>
#include <sstream>

#include "core/error.h"

namespace mtt::golden {

namespace {

bool contains(const std::string& s, const std::string& p) { return s.find(p) != std::string::npos; }
bool starts_with(const std::string& s, const std::string& p) { return s.rfind(p, 0) == 0; }

std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

// Every `reference` / `reference.<variant>` value, joined: what code produced the numbers.
std::string reference_text(const GoldenFile& g) {
  std::string r;
  for (const auto& [k, v] : g.metadata())
    if (k == "reference" || starts_with(k, "reference.")) r += v + "\n";
  return r;
}

std::vector<std::string> split_tokens(const std::string& s) {
  std::vector<std::string> out;
  std::string cur;
  for (char c : s) {
    if (c == '_' || c == '-' || c == '.' || c == ' ') {
      if (!cur.empty()) out.push_back(cur);
      cur.clear();
    } else {
      cur += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    }
  }
  if (!cur.empty()) out.push_back(cur);
  return out;
}

bool has_token(const std::vector<std::string>& t, const std::string& w) { return std::find(t.begin(), t.end(), w) != t.end(); }

std::optional<Family> family_from_reference(const std::string& ref) {
  if (ref.empty()) return std::nullopt;
  // Most specific first: the hybrid path's reference also names the TTT layer and op files.
  if (contains(ref, "hybrid_layer.py") || contains(ref, "HybridSeqModelingBlock")) return Family::fork_hybrid_ttt_path;
  if (contains(ref, "ttt_module.py") || contains(ref, "TTTGating")) return Family::inplace_ttt;
  if (contains(ref, "ln_reconstruction_target")) return Family::ln_reconstruction_target;
  if (contains(ref, "SSMGating") || contains(ref, "ssm_gating.py")) return Family::ssm_gating;
  if (contains(ref, "ttt-video-dit")) {
    if (contains(ref, "TTTWrapper") || contains(ref, "TTTBase.forward")) return Family::vdit_layer;
    if (contains(ref, "ops/ttt_mlp.py") || contains(ref, "ops/ttt_linear.py")) return Family::vdit_op;
  }
  if (contains(ref, "ttt-lm-pytorch")) return contains(ref, ".forward") ? Family::lmpt_layer : Family::lmpt_dual;
  if (contains(ref, "kyutai-labs/moshi") || contains(ref, "LMModel")) return Family::moshi_lm;
  return std::nullopt;
}

std::optional<Family> family_from_case(const std::string& c) {
  const auto t = split_tokens(c);
  if (starts_with(c, "fork_hybrid_ttt_path")) return Family::fork_hybrid_ttt_path;
  if (starts_with(c, "inplace_ttt")) return Family::inplace_ttt;
  if (starts_with(c, "ln_reconstruction_target")) return Family::ln_reconstruction_target;
  if (starts_with(c, "ssm_gating")) return Family::ssm_gating;
  if (starts_with(c, "vdit_ttt_")) {
    if (has_token(t, "layer")) return Family::vdit_layer;
    if (has_token(t, "op")) return Family::vdit_op;
  }
  if (starts_with(c, "lmpt_ttt_")) {
    if (has_token(t, "dual")) return Family::lmpt_dual;
    if (has_token(t, "layer")) return Family::lmpt_layer;
  }
  if (starts_with(c, "moshi_lm") || starts_with(c, "test_lm")) return Family::moshi_lm;
  return std::nullopt;
}

int64_t as_int(const GoldenFile& g, const std::string& key, double v) {
  if (v != std::floor(v)) throw Error(g.path(), key, "expected an integer, got " + std::to_string(v));
  return static_cast<int64_t>(v);
}

// An integer setting (config/call/shapes), or `fallback`; nullopt fallback makes it required.
int64_t int_setting(const GoldenFile& g, const std::string& key, std::optional<int64_t> fallback,
                    const std::vector<std::string>& where = {"config", "call", "shapes"}) {
  if (auto v = g.number(key, where)) return as_int(g, key, *v);
  if (!fallback) throw Error(g.path(), key, "no " + key + "= in the metadata (" + [&] {
    std::string w;
    for (auto& s : where) w += (w.empty() ? "" : ", ") + s;
    return w;
  }() + ")");
  return *fallback;
}

bool bool_setting(const GoldenFile& g, const std::string& key, bool fallback) {
  auto v = g.setting(key);
  if (!v) return fallback;
  const std::string s = lower(*v);
  if (s == "true" || s == "1") return true;
  if (s == "false" || s == "0") return false;
  throw Error(g.path(), key, "expected True/False, got '" + *v + "'");
}

void check_eq(const GoldenFile& g, const std::string& key, int64_t from_meta, int64_t from_tensor, const std::string& tensor) {
  if (from_meta != from_tensor)
    throw Error(g.path(), key, "metadata says " + std::to_string(from_meta) + " but " + tensor + " has " + std::to_string(from_tensor));
}

// Inner model from the stored tensors: W2 / weights.1 present -> MLP (depth = number of weight
// tensors, expansion = hidden width / head dim), else linear.
void set_inner(const GoldenFile& g, const std::string& prefix, ttt::TTTConfig& c) {
  std::vector<std::string> w, b;
  inner_tensor_names(g, prefix, w, b);
  if (w.empty()) throw Error(g.path(), prefix + "W1", "no inner-model weights (W1 or weights.0) in the file");
  if (w.size() == 1) {
    c.inner = ttt::InnerModel::linear;
    return;
  }
  c.inner = ttt::InnerModel::mlp;
  c.ttt_mlp_layers = static_cast<int64_t>(w.size());
  const at::Tensor& w1 = g.tensor(prefix + w[0]);  // [H, d, hidden]
  c.ttt_mlp_expansion_factor = static_cast<double>(w1.size(-1)) / static_cast<double>(w1.size(-2));
}

// Heads and head dim from the per-head target-LN parameters [H, d]; D from the layer input.
void set_dims(const GoldenFile& g, const std::string& norm_key, const std::string& x_key, ttt::TTTConfig& c) {
  const int64_t H = g.dim(norm_key, 0), d = g.dim(norm_key, 1), D = g.dim(x_key, -1);
  if (H * d != D)
    throw Error(g.path(), norm_key, "heads x head dim " + std::to_string(H) + " x " + std::to_string(d) +
                                        " != model dim " + std::to_string(D) + " of " + x_key);
  c.model_dim = D;
  c.num_heads = H;
}

// eps of a target-LN implementation from its reference text: "eps 1e-6", "eps=1e-5", "(std+1e-8)".
std::optional<double> eps_in(const std::string& text) {
  for (const char* marker : {"eps ", "eps=", "eps: ", "std+", "std + "}) {
    size_t p = text.find(marker);
    if (p == std::string::npos) continue;
    if (auto v = leading_number(text.substr(p + std::string(marker).size()))) return v;
  }
  return std::nullopt;
}

}  // namespace

const char* family_name(Family f) {
  switch (f) {
    case Family::vdit_op: return "vdit_op";
    case Family::vdit_layer: return "vdit_layer";
    case Family::lmpt_dual: return "lmpt_dual";
    case Family::lmpt_layer: return "lmpt_layer";
    case Family::ln_reconstruction_target: return "ln_reconstruction_target";
    case Family::ssm_gating: return "ssm_gating";
    case Family::fork_hybrid_ttt_path: return "fork_hybrid_ttt_path";
    case Family::inplace_ttt: return "inplace_ttt";
    case Family::moshi_lm: return "moshi_lm";
  }
  return "?";
}

const char* fidelity_name(Fidelity f) {
  switch (f) {
    case Fidelity::exact: return "exact";
    case Fidelity::rope32: return "rope32";
    case Fidelity::tokidx32: return "tokidx32";
    case Fidelity::fp32: return "fp32";
  }
  return "?";
}

std::optional<Family> detect_family(const GoldenFile& g) {
  if (auto f = family_from_reference(reference_text(g))) return f;
  return family_from_case(g.case_name());
}

Family require_family(const GoldenFile& g) {
  if (auto f = detect_family(g)) return *f;
  std::string ref = reference_text(g);
  if (ref.size() > 80) ref = ref.substr(0, 80) + "...";
  for (char& c : ref)
    if (c == '\n') c = ' ';
  throw Error(g.path(), "reference",
              "unknown golden family (case '" + g.case_name() + "', reference '" + ref +
                  "'); known: vdit_ttt_*_op, vdit_ttt_*_layer, lmpt_ttt_*_dual, lmpt_ttt_*_layer, "
                  "ln_reconstruction_target, ssm_gating, fork_hybrid_ttt_path, inplace_ttt_*, moshi LM");
}

Fidelity fidelity_of(const GoldenFile& g, Family f) {
  // The generator notes where the reference computes in float32 inside its float64 run.
  const std::string note = lower(g.meta("precision_note"));
  if (contains(note, "float32") || contains(note, "fp32")) return Fidelity::fp32;
  switch (f) {
    case Family::vdit_layer: return Fidelity::rope32;  // complex64 RoPE cast, even with identity freqs
    case Family::lmpt_dual:
    case Family::lmpt_layer: return Fidelity::tokidx32;  // fp32 token_idx and RoPE cos/sin
    case Family::fork_hybrid_ttt_path:
    case Family::inplace_ttt:
    case Family::moshi_lm: return Fidelity::fp32;
    default: return Fidelity::exact;
  }
}

Tolerance readme_tolerance(Fidelity f, bool f64_port, bool against_f32) {
  Tolerance t;  // float32 port, or any port against the float32 run (its own noise is ~1e-7..2e-6)
  if (!f64_port || against_f32) return t;
  switch (f) {
    case Fidelity::exact: t.out = t.grad = 1e-9; break;
    case Fidelity::rope32: t.out = t.grad = 3e-7; break;
    case Fidelity::tokidx32: t.out = t.grad = 1e-6; break;
    case Fidelity::fp32: break;
  }
  return t;
}

std::vector<std::string> variants(const GoldenFile& g) {
  std::set<std::string> v;
  for (const auto& [k, t] : g.tensors()) {
    if (!starts_with(k, "out.")) continue;
    const std::string rest = k.substr(4);
    const size_t dot = rest.find('.');
    if (dot != std::string::npos) v.insert(rest.substr(0, dot));
  }
  return {v.begin(), v.end()};
}

VditOpSettings vdit_op_settings(const GoldenFile& g) {
  VditOpSettings s;
  if (auto e = g.meta_number("inner_ln_eps")) s.inner_ln_eps = *e;
  s.checkpoint_group = int_setting(g, "checkpoint_group_size", 0, {"call", "config"});
  for (const char* k : {"in.XQ", "in.XK", "in.XV", "in.eta"})
    if (g.tensor(k).dim() != 5) throw Error(g.path(), k, "expected the op layout [B,H,NC,b,d] / [B,H,NC,b,b]");
  return s;
}

void inner_tensor_names(const GoldenFile& g, const std::string& prefix, std::vector<std::string>& w,
                        std::vector<std::string>& b) {
  w.clear();
  b.clear();
  if (g.has(prefix + "weights.0")) {
    for (int k = 0; g.has(prefix + "weights." + std::to_string(k)); ++k) {
      w.push_back("weights." + std::to_string(k));
      b.push_back("biases." + std::to_string(k));
    }
    return;
  }
  for (int k = 1; g.has(prefix + "W" + std::to_string(k)); ++k) {
    w.push_back("W" + std::to_string(k));
    b.push_back("b" + std::to_string(k));
  }
}

ttt::TTTConfig vdit_layer_config(const GoldenFile& g) {
  ttt::TTTConfig c = ttt::TTTConfig::vdit(1, 1, 1, ttt::InnerModel::mlp);
  set_dims(g, "ttt.ttt_norm_weight", "in.x", c);
  set_inner(g, "ttt.", c);
  c.mini_batch_size = int_setting(g, "mini_batch_size", std::nullopt, {"config"});
  if (auto b = g.number("b", {"shapes"})) check_eq(g, "mini_batch_size", c.mini_batch_size, as_int(g, "b", *b), "shapes b=");
  // VDIT ModelConfig defaults where the file does not say.
  c.ttt_base_lr = g.number("ttt_base_lr", {"config"}).value_or(0.1);
  c.rope_theta = g.number("rope_theta", {"config"}).value_or(10000.0);
  c.scan_checkpoint_group_size = int_setting(g, "scan_checkpoint_group_size", 0, {"config"});
  if (auto e = g.meta_number("inner_ln_eps")) c.inner_ln_eps = *e;
  // RoPE: the generator disables it by an identity freqs_cis ("rope: disabled ..."); otherwise
  // VDIT's 3-D RoPE on a 1 x 1 latent grid with one frame per token.
  const std::string rope = lower(g.meta("rope"));
  const bool off = starts_with(rope, "disabled") || starts_with(rope, "none") || starts_with(rope, "identity") ||
                   (rope.empty() && has_token(split_tokens(g.case_name()), "norope"));
  c.rope = off ? ttt::Rope::none : ttt::Rope::vdit_frames;
  if (!off) {
    const int64_t h = int_setting(g, "latent_height", 1, {"config"}), w = int_setting(g, "latent_width", 1, {"config"});
    if (h != 1 || w != 1)
      throw Error(g.path(), "config", "VDIT RoPE on a " + std::to_string(h) + "x" + std::to_string(w) +
                                          " latent grid: only the 1x1 grid (one frame per token) is implemented");
  }
  c.validate();
  return c;
}

ttt::TTTConfig lmpt_config(const GoldenFile& g) {
  ttt::TTTConfig c = ttt::TTTConfig::lmpt(1, 1, 1, ttt::InnerModel::linear);
  set_dims(g, "ttt_norm_weight", g.has("in.x") ? "in.x" : "in.X", c);
  set_inner(g, "", c);
  c.mini_batch_size = int_setting(g, "mini_batch_size", g.dim("learnable_token_idx", 0), {"config", "call"});
  check_eq(g, "mini_batch_size", c.mini_batch_size, g.dim("learnable_token_idx", 0), "learnable_token_idx");
  // LMPT TTTConfig defaults where the file does not say.
  c.ttt_base_lr = g.number("ttt_base_lr", {"config"}).value_or(1.0);
  c.rope_theta = g.number("rope_theta", {"config"}).value_or(10000.0);
  c.scan_checkpoint_group_size = int_setting(g, "scan_checkpoint_group_size", 0, {"config"});
  if (auto e = g.meta_number("inner_ln_eps")) c.inner_ln_eps = *e;
  for (const char* k : {"use_gate", "share_qk", "pre_conv"})
    if (bool_setting(g, k, false)) throw Error(g.path(), k, std::string("LMPT ") + k + "=True is not implemented");
  c.validate();
  return c;
}

ttt::HybridTTTPathOptions fork_hybrid_options(const GoldenFile& g) {
  const std::string p = "ttt_layer.ttt.";
  const int64_t D = g.dim("in.x", -1), H = g.dim(p + "ttt_norm_weight", 0);
  const int64_t b = int_setting(g, "mini_batch_size", std::nullopt, {"config"});
  // moshi_ttt.config.TTTConfig defaults where the file does not say.
  const double base_lr = g.number("ttt_base_lr", {"config"}).value_or(0.1);
  ttt::HybridTTTPathOptions o = ttt::HybridTTTPathOptions::fork(D, H, b, base_lr);
  set_dims(g, p + "ttt_norm_weight", "in.x", o.ttt);
  set_inner(g, p, o.ttt);
  if (o.ttt.inner == ttt::InnerModel::mlp && o.ttt.ttt_mlp_layers > 2)
    throw Error(g.path(), p + "weights.2", "the fork's multi-layer TTT-MLP (ttt_mlp_layers >= 3) is not covered by this runner");
  o.ttt.scan_checkpoint_group_size = int_setting(g, "scan_checkpoint_group_size", 0, {"config"});
  if (bool_setting(g, "use_rope", false)) {
    o.ttt.rope = ttt::Rope::fork_audio;
    o.ttt.rope_theta = g.number("rope_theta", {"config"}).value_or(10000.0);
  }
  if (auto a = g.number("gating_alpha_init", {"config"})) o.gating.gating_alpha_init = *a;
  o.ttt.validate();
  return o;
}

ttt::InPlaceTTTOptions inplace_options(const GoldenFile& g) {
  const at::Tensor& lin = g.tensor("linear_in.weight");  // [2h, D]
  const int64_t D = lin.size(1), h = lin.size(0) / 2;
  if (lin.size(0) % 2 != 0) throw Error(g.path(), "linear_in.weight", "expected [2h, D] (gate and up rows)");
  check_eq(g, "hidden", h, g.dim("w_down", 1), "w_down [D, h]");
  ttt::InPlaceTTTOptions o = ttt::InPlaceTTTOptions::moshi_port(D, 4 * D);
  o.hidden = h;
  if (auto hm = g.number("hidden", {"shapes"})) check_eq(g, "hidden", as_int(g, "hidden", *hm), h, "linear_in.weight");
  // TTTGating's ttt_config (the port's defaults where absent: chunk 256, lr 1e-3, k 2, clip 1e-5).
  o.chunk_size = int_setting(g, "chunk_size", 256, {"config", "shapes"});
  if (auto lr = g.meta_number("lr")) {
    o.lr = *lr;
  } else if (auto lr2 = g.number("learning_rate", {"config"})) {
    o.lr = *lr2;
  }
  o.conv_kernel_size = g.dim("target_generator.conv1d.conv.weight", 2);
  if (auto k = g.number("conv_kernel_size", {"config"}))
    check_eq(g, "conv_kernel_size", as_int(g, "conv_kernel_size", *k), o.conv_kernel_size, "target_generator.conv1d.conv.weight");
  std::optional<std::string> clip = g.has_meta("delta_clip_fro_norm") ? std::optional<std::string>(g.meta("delta_clip_fro_norm"))
                                                                      : g.setting("delta_clip_fro_norm", {"config"});
  if (clip) {
    const std::string s = lower(*clip);
    if (s == "none" || s == "null") {
      o.delta_clip_fro_norm = std::nullopt;
    } else {
      auto v = leading_number(*clip);
      if (!v) throw Error(g.path(), "delta_clip_fro_norm", "expected a number or None, got '" + *clip + "'");
      // The port turns a clip <= 0 off (ttt_module.py).
      o.delta_clip_fro_norm = *v > 0 ? std::optional<double>(*v) : std::nullopt;
    }
  }
  if (auto e = g.number("delta_clip_epsilon", {"config"})) o.delta_clip_epsilon = *e;
  // The activation TTTGating was given: F.gelu (exact erf, the port's default), F.silu, tanh GELU.
  const std::string act = lower(g.setting("activation", {"config"}).value_or("F.gelu"));
  if (contains(act, "silu")) {
    o.activation = ttt::GatedActivation::silu;
  } else if (contains(act, "gelu") && contains(act, "tanh")) {
    o.activation = ttt::GatedActivation::gelu_tanh;
  } else if (contains(act, "gelu")) {
    o.activation = ttt::GatedActivation::gelu_erf;
  } else {
    throw Error(g.path(), "activation", "unknown TTTGating activation '" + act + "' (F.gelu, F.silu)");
  }
  return o;
}

ttt::SSMGatingOptions ssm_gating_options(const GoldenFile& g, const std::string& variant) {
  const int64_t D = g.dim("gating_alpha", 0);
  // A variant clamps alpha when its reference code does (the fork: tanh(clamp(alpha,-3,3))).
  const std::string ref = g.meta("reference." + variant, g.meta("reference"));
  ttt::SSMGatingOptions o = ttt::SSMGatingOptions::vdit(D);
  const size_t p = ref.find("clamp(");
  if (p != std::string::npos) {
    o.clamp_alpha = true;
    // "clamp(alpha,-3,3)": the limit is the last number before ')'.
    const size_t close = ref.find(')', p);
    const std::string args = ref.substr(p, close == std::string::npos ? std::string::npos : close - p);
    const size_t comma = args.rfind(',');
    if (comma != std::string::npos) {
      if (auto lim = leading_number(args.substr(comma + 1))) o.clamp_limit = std::abs(*lim);
    }
  } else if (ref.empty()) {
    throw Error(g.path(), "reference." + variant, "no reference text for gating variant '" + variant + "'");
  }
  return o;
}

std::vector<LnTargetVariant> ln_target_variants(const GoldenFile& g) {
  std::vector<LnTargetVariant> out;
  for (const std::string& v : variants(g)) {
    const std::string ref = g.meta("reference." + v);
    if (ref.empty()) throw Error(g.path(), "reference." + v, "no reference text for target variant '" + v + "'");
    LnTargetVariant t;
    t.name = v;
    // The fork's legacy method layer-normalises XV alone (F.layer_norm, biased variance) and never
    // subtracts XK; the others normalise XV - XK with the unbiased std and add XK back.
    const bool legacy = contains(ref, "F.layer_norm(XV") || contains(ref, "neither subtracted");
    t.target = legacy ? ttt::ReconTarget::legacy : ttt::ReconTarget::correct;
    auto eps = eps_in(ref);
    if (!eps) throw Error(g.path(), "reference." + v, "no eps in the reference text of variant '" + v + "'");
    t.eps = *eps;
    out.push_back(t);
  }
  if (out.empty()) throw Error(g.path(), "out.<variant>.XV_out", "no target variants in the file");
  return out;
}

}  // namespace mtt::golden
