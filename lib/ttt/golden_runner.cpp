// Golden-file runner: our TTT implementation vs the reference outputs and gradients.
#include "ttt/golden_runner.h"

#include <ATen/core/grad_mode.h>
#include <torch/csrc/autograd/autograd.h>

#include <cctype>
#include <limits>
#include <cstdlib>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/safetensors.h"
#include "nn/tensor_io.h"
#include "ttt/ttt_inputs.h"
#include "ttt/ttt_layer.h"
#include "ttt/ttt_scan.h"

namespace mtt::ttt {

bool GoldenReport::pass() const {
  if (tensors.empty()) return false;
  for (auto& t : tensors)
    if (!t.pass) return false;
  return true;
}

std::string GoldenReport::to_json(int indent) const {
  nlohmann::json j = {{"file", file}, {"case", case_name}, {"family", family}, {"fidelity", fidelity},
                      {"dtype", dtype}, {"reference", reference}, {"pass", pass()}};
  nlohmann::json ts = nlohmann::json::array();
  for (auto& t : tensors)
    ts.push_back({{"name", t.name}, {"grad", t.is_grad}, {"max_abs", t.max_abs}, {"max_rel", t.rel},
                  {"ref_max_abs", t.ref_max_abs}, {"tol", t.tol}, {"pass", t.pass}});
  j["tensors"] = ts;
  return j.dump(indent);
}

double parse_leading_number(const std::string& s, double fallback) {
  const char* p = s.c_str();
  while (*p && std::isspace(static_cast<unsigned char>(*p))) ++p;
  char* end = nullptr;
  double v = std::strtod(p, &end);
  return end == p ? fallback : v;
}

bool find_kv(const std::string& s, const std::string& key, std::string& value) {
  size_t pos = 0;
  while ((pos = s.find(key + "=", pos)) != std::string::npos) {
    if (pos == 0 || !(std::isalnum(static_cast<unsigned char>(s[pos - 1])) || s[pos - 1] == '_')) {
      size_t b = pos + key.size() + 1, e = b;
      while (e < s.size() && s[e] != ',' && s[e] != ' ' && s[e] != ')') ++e;
      value = s.substr(b, e - b);
      return true;
    }
    pos += key.size();
  }
  return false;
}

namespace {

struct Run {
  std::map<std::string, at::Tensor> outs;    // name without "out."
  std::map<std::string, at::Tensor> leaves;  // name as in "grad.<name>"
  at::Tensor loss;
};

bool starts_with(const std::string& s, const std::string& p) { return s.rfind(p, 0) == 0; }
bool ends_with(const std::string& s, const std::string& p) {
  return s.size() >= p.size() && s.compare(s.size() - p.size(), p.size(), p) == 0;
}
bool contains(const std::string& s, const std::string& p) { return s.find(p) != std::string::npos; }

class Golden {
 public:
  Golden(std::string path, at::ScalarType dt) : path_(std::move(path)), dt_(dt) {
    file_ = io::SafetensorsFile::open(path_);
    tensors_ = nn::load_tensors(path_);
  }
  const std::string& path() const { return path_; }
  std::string meta(const std::string& k, const std::string& fallback = "") const {
    auto it = file_->metadata().find(k);
    return it == file_->metadata().end() ? fallback : it->second;
  }
  bool has(const std::string& k) const { return tensors_.count(k) != 0; }
  const at::Tensor& raw(const std::string& k) const {
    auto it = tensors_.find(k);
    if (it == tensors_.end()) throw Error(path_, k, "tensor missing from golden file");
    return it->second;
  }
  // A fresh leaf in the compute dtype.
  at::Tensor leaf(const std::string& k) const { return raw(k).to(dt_).detach().clone().requires_grad_(true); }
  const std::map<std::string, at::Tensor>& all() const { return tensors_; }
  int64_t shape_value(const std::string& key) const {
    std::string v;
    if (!find_kv(meta("shapes"), key, v)) throw Error(path_, "shapes", "no " + key + "= in metadata 'shapes'");
    return std::stoll(v);
  }
  double config_number(const std::string& key, double fallback) const {
    std::string v;
    for (const char* m : {"config", "call"})
      if (find_kv(meta(m), key, v)) return parse_leading_number(v, fallback);
    return fallback;
  }

 private:
  std::string path_;
  at::ScalarType dt_;
  std::shared_ptr<io::SafetensorsFile> file_;
  std::map<std::string, at::Tensor> tensors_;
};

// Names of the inner-model tensors present under `prefix` (W1,b1,W2,b2 or weights.k/biases.k).
void inner_names(const Golden& g, const std::string& prefix, std::vector<std::string>& wn, std::vector<std::string>& bn) {
  if (g.has(prefix + "weights.0")) {
    for (int k = 0; g.has(prefix + "weights." + std::to_string(k)); ++k) {
      wn.push_back("weights." + std::to_string(k));
      bn.push_back("biases." + std::to_string(k));
    }
    return;
  }
  for (int k = 1; g.has(prefix + "W" + std::to_string(k)); ++k) {
    wn.push_back("W" + std::to_string(k));
    bn.push_back("b" + std::to_string(k));
  }
}

// vdit_ttt_*_op[_general_eta]: the op itself on [B,H,NC,b,d] inputs.
Run run_op(const Golden& g) {
  Run r;
  for (auto& k : {"XQ", "XK", "XV", "eta", "ttt_norm_weight", "ttt_norm_bias"}) r.leaves[k] = g.leaf(std::string("in.") + k);
  std::vector<std::string> wn, bn;
  inner_names(g, "in.", wn, bn);
  std::vector<at::Tensor> W, B;
  for (size_t k = 0; k < wn.size(); ++k) {
    r.leaves[wn[k]] = g.leaf("in." + wn[k]);
    r.leaves[bn[k]] = g.leaf("in." + bn[k]);
    W.push_back(r.leaves[wn[k]]);
    B.push_back(r.leaves[bn[k]]);
  }
  ScanInputs si;
  si.XQ = r.leaves["XQ"];
  si.XK = r.leaves["XK"];
  si.XV = r.leaves["XV"];
  si.eta = r.leaves["eta"];
  si.ln_weight = r.leaves["ttt_norm_weight"];
  si.ln_bias = r.leaves["ttt_norm_bias"];
  si.ln_eps = parse_leading_number(g.meta("inner_ln_eps"), 1e-8);
  si.checkpoint_group = static_cast<int64_t>(g.config_number("checkpoint_group_size", 0));
  ScanOutputs so = ttt_scan_reference(si, W, B);
  r.outs["XQW"] = so.XQW.permute({0, 2, 3, 1, 4});  // [B, NC, b, H, d] as the op returns it
  for (size_t k = 0; k < wn.size(); ++k) {
    r.outs["final_" + wn[k]] = so.weights[k];
    r.outs["final_" + bn[k]] = so.biases[k];
  }
  r.loss = (r.outs["XQW"] * g.raw("cot.G").to(so.XQW.scalar_type())).sum();
  return r;
}

InnerModel inner_of(const std::string& c) { return contains(c, "linear") ? InnerModel::linear : InnerModel::mlp; }

// Replaces the layer's parameters by leaves made from the file (names mapped), recorded in r.leaves.
void bind_params(TTTLayer& layer, const Golden& g, Run& r, const std::string& prefix,
                 const std::map<std::string, std::string>& rename, at::ScalarType dt) {
  for (auto& [name, t] : layer.named_parameters()) {
    std::string key = name;
    for (auto& [ours, theirs] : rename)
      if (starts_with(name, ours)) key = theirs + name.substr(ours.size());
    key = prefix + key;
    if (!g.has(key)) continue;  // e.g. wq.* in the dual-form files
    if (g.raw(key).sizes() != t.sizes())
      throw Error(g.path(), key, "shape " + c10::str(g.raw(key).sizes()) + ", layer expects " + c10::str(t.sizes()));
    at::Tensor leaf = g.leaf(key);
    layer.param(name) = leaf;
    r.leaves[key] = leaf;
  }
}

TTTConfig layer_config(const Golden& g, const std::string& c, bool vdit) {
  const int64_t D = g.shape_value("D"), H = g.shape_value("H"), b = g.shape_value("b");
  TTTConfig cfg = vdit ? TTTConfig::vdit(D, H, b, inner_of(c)) : TTTConfig::lmpt(D, H, b, inner_of(c));
  cfg.ttt_base_lr = g.config_number("ttt_base_lr", 1.0);
  cfg.rope_theta = g.config_number("rope_theta", 10000.0);
  cfg.scan_checkpoint_group_size = static_cast<int64_t>(g.config_number("scan_checkpoint_group_size", 0));
  std::vector<std::string> wn, bn;
  inner_names(g, vdit ? "ttt." : "", wn, bn);
  if (wn.size() >= 3) cfg.ttt_mlp_layers = static_cast<int64_t>(wn.size());
  if (!wn.empty()) {
    const at::Tensor& w1 = g.raw((vdit ? "ttt." : "") + wn[0]);
    if (cfg.inner == InnerModel::mlp) cfg.ttt_mlp_expansion_factor = static_cast<double>(w1.size(2)) / static_cast<double>(w1.size(1));
  }
  if (vdit) {
    cfg.inner_ln_eps = 1e-8;
    cfg.rope = starts_with(g.meta("rope"), "disabled") || contains(c, "norope") ? Rope::none : Rope::vdit_frames;
  }
  return cfg;
}

Run run_vdit_layer(const Golden& g, const std::string& c, at::ScalarType dt) {
  Run r;
  TTTConfig cfg = layer_config(g, c, true);
  TTTLayer layer(cfg);
  layer.to(dt);
  bind_params(layer, g, r, "ttt.", {}, dt);
  at::Tensor x = g.leaf("in.x");
  r.leaves["x"] = x;
  ForwardResult f = layer.forward_detailed(x, nullptr);
  const int64_t B = x.size(0), H = cfg.num_heads, L = x.size(1), b = cfg.mini_batch_size, d = cfg.head_dim();
  r.outs["y"] = f.y;
  r.outs["XQW"] = f.XQW;
  if (L % b == 0) {
    const int64_t NC = L / b;
    r.outs["proc_XQ"] = f.XQ.reshape({B, H, NC, b, d});
    r.outs["proc_XK"] = f.XK.reshape({B, H, NC, b, d});
    r.outs["proc_XV"] = f.XV.reshape({B, H, NC, b, d});
    r.outs["proc_eta"] = make_eta(f.lr, at::Tensor(), Eta::dit, b);
  }
  r.loss = (f.y * g.raw("cot.G").to(f.y.scalar_type())).sum();
  return r;
}

Run run_lmpt_layer(const Golden& g, const std::string& c, at::ScalarType dt) {
  Run r;
  TTTLayer layer(layer_config(g, c, false));
  layer.to(dt);
  bind_params(layer, g, r, "", {{"wq.", "q_proj."}, {"wk.", "k_proj."}, {"wv.", "v_proj."}, {"wo.", "o_proj."}}, dt);
  at::Tensor x = g.leaf("in.x");
  r.leaves["x"] = x;
  at::Tensor y = layer.forward(x, nullptr);
  r.outs["y"] = y;
  r.loss = (y * g.raw("cot.G").to(y.scalar_type())).sum();
  return r;
}

Run run_lmpt_dual(const Golden& g, const std::string& c, at::ScalarType dt) {
  Run r;
  TTTConfig cfg = layer_config(g, c, false);
  TTTLayer layer(cfg);
  layer.to(dt);
  bind_params(layer, g, r, "", {}, dt);
  for (auto& k : {"X", "XQ", "XK", "XV"}) r.leaves[k] = g.leaf(std::string("in.") + k);
  TTTState st = layer.init_state(r.leaves["X"].size(0), dt);
  ForwardResult f = layer.forward_core(r.leaves["X"], r.leaves["XQ"], r.leaves["XK"], r.leaves["XV"], &st);
  const int64_t B = f.XQ.size(0), H = f.XQ.size(1), L = f.XQ.size(2), b = cfg.mini_batch_size, NC = L / b;
  r.outs["XQW"] = f.XQW;
  at::Tensor tok = token_factor(layer.param("learnable_token_idx"), b, dt);
  at::Tensor lr = f.lr.narrow(2, 0, NC * b).reshape({B, H, NC, 1, b});
  r.outs["ttt_lr_eta"] = lr;
  r.outs["token_eta"] = tok.view({1, 1, 1, b, 1}).expand({B, H, NC, b, 1});
  r.outs["eta"] = tok.view({1, 1, 1, b, 1}) * lr;
  auto eff = layer.effective_weights(st);
  const size_t n = eff.size() / 2;
  std::vector<std::string> wn, bn;
  inner_names(g, "", wn, bn);
  for (size_t k = 0; k < n && k < wn.size(); ++k) {
    r.outs["final_" + wn[k]] = eff[k];
    r.outs["final_" + bn[k]] = eff[n + k];
  }
  r.loss = (f.XQW * g.raw("cot.G").to(f.XQW.scalar_type())).sum();
  return r;
}

Run run_ln_target(const Golden& g) {
  Run r;
  struct V { const char* name; ReconTarget t; double eps; };
  const V variants[] = {{"vdit", ReconTarget::correct, 1e-8}, {"fork_legacy", ReconTarget::legacy, 1e-6},
                        {"fork_current", ReconTarget::correct, 1e-5}};
  at::Tensor loss;
  for (const V& v : variants) {
    std::string p = std::string(v.name) + ".";
    if (!g.has("out." + p + "XV_out")) continue;
    for (auto& k : {"XV", "XK", "ttt_norm_weight", "ttt_norm_bias"}) r.leaves[p + k] = g.leaf(std::string("in.") + k);
    at::Tensor xv = reconstruction_target(r.leaves[p + "XV"], r.leaves[p + "XK"], r.leaves[p + "ttt_norm_weight"],
                                          r.leaves[p + "ttt_norm_bias"], v.t, v.eps);
    r.outs[p + "XV_out"] = xv;
    r.outs[p + "target"] = xv - r.leaves[p + "XK"];
    at::Tensor l = (xv * g.raw("cot.G").to(xv.scalar_type())).sum();
    loss = loss.defined() ? loss + l : l;
  }
  r.loss = loss;
  return r;
}

}  // namespace

GoldenReport run_golden(const std::string& path, const GoldenRunOptions& opt) {
  const at::ScalarType dt = opt.dtype;
  Golden g(path, dt);
  GoldenReport rep;
  rep.file = path;
  rep.case_name = g.meta("case");
  rep.dtype = dt == at::kDouble ? "f64" : "f32";
  rep.reference = opt.against_f32 ? "f32" : "f64";
  const std::string& c = rep.case_name;
  if (c.empty()) throw Error(path, "__metadata__.case", "no case name in the metadata");

  at::AutoGradMode grad_on(true);
  Run r;
  if (starts_with(c, "vdit_ttt_") && (ends_with(c, "_op") || ends_with(c, "_op_general_eta"))) {
    rep.family = "vdit_op";
    rep.fidelity = "exact";
    r = run_op(g);
  } else if (starts_with(c, "vdit_ttt_") && contains(c, "_layer")) {
    rep.family = "vdit_layer";
    rep.fidelity = "rope32";
    r = run_vdit_layer(g, c, dt);
  } else if (starts_with(c, "lmpt_ttt_") && ends_with(c, "_dual")) {
    rep.family = "lmpt_dual";
    rep.fidelity = "tokidx32";
    r = run_lmpt_dual(g, c, dt);
  } else if (starts_with(c, "lmpt_ttt_") && contains(c, "_layer")) {
    rep.family = "lmpt_layer";
    rep.fidelity = "tokidx32";
    r = run_lmpt_layer(g, c, dt);
  } else if (c == "ln_reconstruction_target") {
    rep.family = "ln_reconstruction_target";
    rep.fidelity = "exact";
    r = run_ln_target(g);
  } else {
    throw Error(path, "case", "unsupported case family '" + c + "' (this runner covers the TTT core: vdit_*, lmpt_*, ln_reconstruction_target)");
  }

  // Gradients of L = sum(main_output * cot.G) w.r.t. every leaf.
  std::vector<std::string> names;
  std::vector<at::Tensor> leaves;
  for (auto& [n, t] : r.leaves) {
    names.push_back(n);
    leaves.push_back(t);
  }
  auto grads = torch::autograd::grad({r.loss}, leaves, {}, /*retain_graph=*/false, /*create_graph=*/false,
                                     /*allow_unused=*/true);
  std::map<std::string, at::Tensor> gmap;
  for (size_t i = 0; i < names.size(); ++i) gmap[names[i]] = grads[i].defined() ? grads[i] : at::zeros_like(leaves[i]);

  // Tolerances (README "Tolerances"): fp32 port 1e-5 / 3e-5; fp64 port per fidelity class.
  double tol_out = 1e-5, tol_grad = 3e-5;
  if (dt == at::kDouble && !opt.against_f32) {
    if (rep.fidelity == "exact") tol_out = tol_grad = 1e-9;
    else if (rep.fidelity == "rope32") tol_out = tol_grad = 3e-7;
    else if (rep.fidelity == "tokidx32") tol_out = tol_grad = 1e-6;
  }
  if (opt.tol_out >= 0) tol_out = opt.tol_out;
  if (opt.tol_grad >= 0) tol_grad = opt.tol_grad;

  const std::string out_prefix = opt.against_f32 ? "out_f32." : "out.";
  const std::string grad_prefix = opt.against_f32 ? "grad_f32." : "grad.";
  for (auto& [key, ref] : g.all()) {
    bool is_out = starts_with(key, out_prefix), is_grad = starts_with(key, grad_prefix);
    if (!is_out && !is_grad) continue;
    std::string name = key.substr((is_out ? out_prefix : grad_prefix).size());
    GoldenTensorError e;
    e.name = key;
    e.is_grad = is_grad;
    e.tol = is_grad ? tol_grad : tol_out;
    at::Tensor ours;
    if (is_out) {
      auto it = r.outs.find(name);
      if (it != r.outs.end()) ours = it->second;
    } else {
      auto it = gmap.find(name);
      if (it != gmap.end()) ours = it->second;
    }
    at::Tensor refd = ref.to(at::kDouble);
    e.ref_max_abs = refd.numel() ? refd.abs().max().item<double>() : 0.0;
    if (!ours.defined() || ours.sizes() != ref.sizes()) {
      e.max_abs = e.rel = std::numeric_limits<double>::infinity();
      e.pass = false;
    } else {
      at::Tensor diff = (ours.detach().to(at::kDouble) - refd).abs();
      e.max_abs = diff.numel() ? diff.max().item<double>() : 0.0;
      e.rel = e.ref_max_abs > 0 ? e.max_abs / e.ref_max_abs : e.max_abs;
      e.pass = e.rel <= e.tol;
    }
    rep.tensors.push_back(e);
  }
  return rep;
}

}  // namespace mtt::ttt
