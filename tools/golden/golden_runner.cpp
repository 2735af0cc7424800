// Golden-file runner: our implementation vs the reference outputs and gradients, per family.
#include "golden/golden_runner.h"

#include <ATen/core/grad_mode.h>
#include <torch/csrc/autograd/autograd.h>

#include <algorithm>
#include <filesystem>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "core/error.h"
#include "golden/golden_families.h"
#include "golden/golden_moshi.h"
#include "io/safetensors.h"
#include "ttt/hybrid_ttt_path.h"
#include "ttt/inplace_ttt.h"
#include "ttt/ssm_gating.h"
#include "ttt/ttt_inputs.h"
#include "ttt/ttt_layer.h"
#include "ttt/ttt_scan.h"

namespace fs = std::filesystem;

namespace mtt::golden {

bool Report::pass() const {
  if (!error.empty() || tensors.empty()) return false;
  return std::all_of(tensors.begin(), tensors.end(), [](const TensorError& t) { return t.pass; });
}

std::string Report::to_json(int indent) const {
  nlohmann::json j = {{"file", file}, {"case", case_name}, {"family", family}, {"fidelity", fidelity},
                      {"dtype", dtype}, {"reference", reference}, {"pass", pass()}};
  if (!error.empty()) j["error"] = error;
  j["tolerance"] = {{"out", tol_out}, {"grad", tol_grad}};
  double worst_out = 0, worst_grad = 0;
  nlohmann::json ts = nlohmann::json::array();
  for (const auto& t : tensors) {
    (t.is_grad ? worst_grad : worst_out) = std::max(t.is_grad ? worst_grad : worst_out, t.rel);
    nlohmann::json e = {{"name", t.name}, {"grad", t.is_grad}, {"max_abs", t.max_abs}, {"max_rel", t.rel},
                        {"ref_max_abs", t.ref_max_abs}, {"tol", t.tol}, {"pass", t.pass}};
    if (t.exact_zero) e["exact_zero"] = true;
    ts.push_back(e);
  }
  j["worst_rel"] = {{"out", worst_out}, {"grad", worst_grad}};
  j["tensors"] = ts;
  return j.dump(indent);
}

namespace {

bool starts_with(const std::string& s, const std::string& p) { return s.rfind(p, 0) == 0; }

struct Run {
  std::map<std::string, at::Tensor> outs;    // name without "out."
  std::map<std::string, at::Tensor> leaves;  // name as in "grad.<name>"
  at::Tensor loss;
};

at::Tensor leaf(const GoldenFile& g, const std::string& key, at::ScalarType dt) {
  return g.tensor(key).to(dt).detach().clone().requires_grad_(true);
}

at::Tensor cot(const GoldenFile& g, const at::Tensor& like) {
  const at::Tensor& G = g.tensor("cot.G");
  if (G.sizes() != like.sizes())
    throw Error(g.path(), "cot.G", "shape " + c10::str(G.sizes()) + ", the main output has " + c10::str(like.sizes()));
  return G.to(like.scalar_type());
}

// vdit_op: the op itself on [B,H,NC,b,d] inputs, initial states per batch element.
Run run_vdit_op(const GoldenFile& g, at::ScalarType dt) {
  Run r;
  const VditOpSettings s = vdit_op_settings(g);
  for (const char* k : {"XQ", "XK", "XV", "eta", "ttt_norm_weight", "ttt_norm_bias"})
    r.leaves[k] = leaf(g, std::string("in.") + k, dt);
  std::vector<std::string> wn, bn;
  inner_tensor_names(g, "in.", wn, bn);
  if (wn.empty()) throw Error(g.path(), "in.W1", "no inner-model states in the file");
  std::vector<at::Tensor> W, B;
  for (size_t k = 0; k < wn.size(); ++k) {
    W.push_back(r.leaves[wn[k]] = leaf(g, "in." + wn[k], dt));
    B.push_back(r.leaves[bn[k]] = leaf(g, "in." + bn[k], dt));
  }
  ttt::ScanInputs si;
  si.XQ = r.leaves["XQ"];
  si.XK = r.leaves["XK"];
  si.XV = r.leaves["XV"];
  si.eta = r.leaves["eta"];
  si.ln_weight = r.leaves["ttt_norm_weight"];
  si.ln_bias = r.leaves["ttt_norm_bias"];
  si.ln_eps = s.inner_ln_eps;
  si.checkpoint_group = s.checkpoint_group;
  ttt::ScanOutputs so = ttt::ttt_scan_reference(si, W, B);
  r.outs["XQW"] = so.XQW.permute({0, 2, 3, 1, 4});  // [B, NC, b, H, d] as the op returns it
  for (size_t k = 0; k < wn.size(); ++k) {
    r.outs["final_" + wn[k]] = so.weights[k];
    r.outs["final_" + bn[k]] = so.biases[k];
  }
  r.loss = (r.outs["XQW"] * cot(g, r.outs["XQW"])).sum();
  return r;
}

// Replaces the layer's parameters by leaves made from the file (names mapped), recorded in r.leaves.
void bind_params(ttt::TTTLayer& layer, const GoldenFile& g, Run& r, const std::string& prefix,
                 const std::map<std::string, std::string>& rename, at::ScalarType dt) {
  for (auto& [name, t] : layer.named_parameters()) {
    std::string key = name;
    for (auto& [ours, theirs] : rename)
      if (starts_with(name, ours)) key = theirs + name.substr(ours.size());
    key = prefix + key;
    if (!g.has(key)) continue;  // e.g. q_proj.* in the dual-form files
    if (g.tensor(key).sizes() != t.sizes())
      throw Error(g.path(), key, "shape " + c10::str(g.tensor(key).sizes()) + ", the layer configured from the file expects " + c10::str(t.sizes()));
    at::Tensor l = leaf(g, key, dt);
    layer.param(name) = l;
    r.leaves[key] = l;
  }
}

Run run_vdit_layer(const GoldenFile& g, at::ScalarType dt) {
  Run r;
  const ttt::TTTConfig cfg = vdit_layer_config(g);
  ttt::TTTLayer layer(cfg);
  layer.to(dt);
  bind_params(layer, g, r, "ttt.", {}, dt);
  at::Tensor x = r.leaves["x"] = leaf(g, "in.x", dt);
  ttt::ForwardResult f = layer.forward_detailed(x, nullptr);
  const int64_t B = x.size(0), H = cfg.num_heads, L = x.size(1), b = cfg.mini_batch_size, d = cfg.head_dim();
  r.outs["y"] = f.y;
  r.outs["XQW"] = f.XQW;
  if (L % b == 0) {
    // process_input's dict: [B, H, NC, b, d] and the b x b eta.
    const int64_t NC = L / b;
    r.outs["proc_XQ"] = f.XQ.reshape({B, H, NC, b, d});
    r.outs["proc_XK"] = f.XK.reshape({B, H, NC, b, d});
    r.outs["proc_XV"] = f.XV.reshape({B, H, NC, b, d});
    r.outs["proc_eta"] = ttt::make_eta(f.lr, at::Tensor(), ttt::Eta::dit, b);
  }
  r.loss = (f.y * cot(g, f.y)).sum();
  return r;
}

Run run_lmpt_layer(const GoldenFile& g, at::ScalarType dt) {
  Run r;
  ttt::TTTLayer layer(lmpt_config(g));
  layer.to(dt);
  bind_params(layer, g, r, "", {{"wq.", "q_proj."}, {"wk.", "k_proj."}, {"wv.", "v_proj."}, {"wo.", "o_proj."}}, dt);
  at::Tensor x = r.leaves["x"] = leaf(g, "in.x", dt);
  at::Tensor y = layer.forward(x, nullptr);
  r.outs["y"] = y;
  r.loss = (y * cot(g, y)).sum();
  return r;
}

Run run_lmpt_dual(const GoldenFile& g, at::ScalarType dt) {
  Run r;
  const ttt::TTTConfig cfg = lmpt_config(g);
  ttt::TTTLayer layer(cfg);
  layer.to(dt);
  bind_params(layer, g, r, "", {}, dt);
  for (const char* k : {"X", "XQ", "XK", "XV"}) r.leaves[k] = leaf(g, std::string("in.") + k, dt);
  ttt::TTTState st = layer.init_state(r.leaves["X"].size(0), dt);
  ttt::ForwardResult f = layer.forward_core(r.leaves["X"], r.leaves["XQ"], r.leaves["XK"], r.leaves["XV"], &st);
  const int64_t B = f.XQ.size(0), H = f.XQ.size(1), L = f.XQ.size(2), b = cfg.mini_batch_size, NC = L / b;
  r.outs["XQW"] = f.XQW;
  // get_ttt_inputs' tensors over the full mini-batches.
  at::Tensor tok = ttt::token_factor(layer.param("learnable_token_idx"), b, dt);
  at::Tensor lr = f.lr.narrow(2, 0, NC * b).reshape({B, H, NC, 1, b});
  r.outs["ttt_lr_eta"] = lr;
  r.outs["token_eta"] = tok.view({1, 1, 1, b, 1}).expand({B, H, NC, b, 1});
  r.outs["eta"] = tok.view({1, 1, 1, b, 1}) * lr;
  auto eff = layer.effective_weights(st);
  const size_t n = eff.size() / 2;
  std::vector<std::string> wn, bn;
  inner_tensor_names(g, "", wn, bn);
  for (size_t k = 0; k < n && k < wn.size(); ++k) {
    r.outs["final_" + wn[k]] = eff[k];
    r.outs["final_" + bn[k]] = eff[n + k];
  }
  r.loss = (f.XQW * cot(g, f.XQW)).sum();
  return r;
}

Run run_ln_target(const GoldenFile& g, at::ScalarType dt) {
  Run r;
  at::Tensor loss;
  for (const LnTargetVariant& v : ln_target_variants(g)) {
    const std::string p = v.name + ".";
    for (const char* k : {"XV", "XK", "ttt_norm_weight", "ttt_norm_bias"}) r.leaves[p + k] = leaf(g, std::string("in.") + k, dt);
    at::Tensor xv = ttt::reconstruction_target(r.leaves[p + "XV"], r.leaves[p + "XK"], r.leaves[p + "ttt_norm_weight"],
                                               r.leaves[p + "ttt_norm_bias"], v.target, v.eps);
    r.outs[p + "XV_out"] = xv;
    r.outs[p + "target"] = xv - r.leaves[p + "XK"];
    at::Tensor l = (xv * cot(g, xv)).sum();
    loss = loss.defined() ? loss + l : l;
  }
  r.loss = loss;
  return r;
}

Run run_ssm_gating(const GoldenFile& g, at::ScalarType dt) {
  Run r;
  at::Tensor loss;
  for (const std::string& v : variants(g)) {
    ttt::SSMGating gate(ssm_gating_options(g, v));
    const std::string p = v + ".";
    at::Tensor x = r.leaves[p + "x"] = leaf(g, "in.x", dt);
    gate.gating_alpha = r.leaves[p + "gating_alpha"] = leaf(g, "gating_alpha", dt);
    at::Tensor y = gate.forward(x);
    r.outs[p + "y"] = y;
    at::Tensor l = (y * cot(g, y)).sum();
    loss = loss.defined() ? loss + l : l;
  }
  if (!loss.defined()) throw Error(g.path(), "out.<variant>.y", "no gating variants in the file");
  r.loss = loss;
  return r;
}

Run run_fork_hybrid(const GoldenFile& g, at::ScalarType dt) {
  Run r;
  ttt::HybridTTTPath path(fork_hybrid_options(g));
  path.to(dt);
  path.load(g.tensors(), "", g.path());
  path.set_requires_grad(true);
  for (auto& [name, t] : path.named_parameters()) r.leaves[name] = t;
  at::Tensor x = r.leaves["x"] = leaf(g, "in.x", dt);
  auto o = path.forward(x);
  r.outs["y"] = o.y;
  r.outs["ttt_out"] = o.ttt_out;
  r.loss = (o.y * cot(g, o.y)).sum();
  return r;
}

Run run_inplace(const GoldenFile& g, at::ScalarType dt) {
  Run r;
  auto block = std::make_shared<ttt::InPlaceTTT>(inplace_options(g));
  if (dt != at::kFloat) block->to(dt);
  block->load(g.tensors(), "", g.path());
  for (auto& p : block->named_parameters(true)) {
    p.value().requires_grad_(true);
    r.leaves[p.key()] = p.value();
  }
  at::Tensor x = r.leaves["x"] = leaf(g, "in.x", dt);
  at::Tensor e = r.leaves["token_embeddings"] = leaf(g, "in.token_embeddings", dt);
  auto o = block->forward(x, e);
  r.outs["y"] = o.y;
  r.outs["V_hat"] = o.v_hat;
  r.loss = (o.y * cot(g, o.y)).sum();
  return r;
}

TensorError compare(const std::string& key, const at::Tensor& ours, const at::Tensor& ref, bool is_grad, double tol) {
  TensorError e;
  e.name = key;
  e.is_grad = is_grad;
  e.tol = tol;
  at::Tensor refd = ref.to(at::kDouble);
  e.ref_max_abs = refd.numel() ? refd.abs().max().item<double>() : 0.0;
  if (!ours.defined() || ours.sizes() != ref.sizes()) {
    e.max_abs = e.rel = std::numeric_limits<double>::infinity();
    return e;
  }
  at::Tensor diff = (ours.detach().to(at::kDouble) - refd).abs();
  e.max_abs = diff.numel() ? diff.max().item<double>() : 0.0;
  e.rel = e.ref_max_abs > 0 ? e.max_abs / e.ref_max_abs : e.max_abs;
  // A reference that is exactly zero (a dead parameter, a zero target) must be exactly zero here
  // too: a relative bound would let a leak of any size below tol through.
  e.exact_zero = refd.numel() > 0 && e.ref_max_abs == 0.0;
  e.pass = e.exact_zero ? e.max_abs == 0.0 : e.rel <= e.tol;
  return e;
}

Report run_ttt_file(const GoldenFile& g, Family fam, const RunOptions& opt) {
  const at::ScalarType dt = opt.dtype;
  Report rep;
  rep.file = g.path();
  rep.case_name = g.case_name();
  rep.family = family_name(fam);
  const Fidelity fid = fidelity_of(g, fam);
  rep.fidelity = fidelity_name(fid);
  rep.dtype = dt == at::kDouble ? "f64" : "f32";
  rep.reference = opt.against_f32 ? "f32" : "f64";
  const Tolerance tol = readme_tolerance(fid, dt == at::kDouble, opt.against_f32);
  rep.tol_out = opt.tol_out >= 0 ? opt.tol_out : tol.out;
  rep.tol_grad = opt.tol_grad >= 0 ? opt.tol_grad : tol.grad;

  at::AutoGradMode grad_on(true);
  Run r;
  switch (fam) {
    case Family::vdit_op: r = run_vdit_op(g, dt); break;
    case Family::vdit_layer: r = run_vdit_layer(g, dt); break;
    case Family::lmpt_dual: r = run_lmpt_dual(g, dt); break;
    case Family::lmpt_layer: r = run_lmpt_layer(g, dt); break;
    case Family::ln_reconstruction_target: r = run_ln_target(g, dt); break;
    case Family::ssm_gating: r = run_ssm_gating(g, dt); break;
    case Family::fork_hybrid_ttt_path: r = run_fork_hybrid(g, dt); break;
    case Family::inplace_ttt: r = run_inplace(g, dt); break;
    case Family::moshi_lm: check_internal(false, "moshi_lm goes through run_moshi_lm"); break;
  }

  // Gradients of L = sum(main_output * cot.G) w.r.t. every leaf (README "Tensor naming").
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

  const std::string out_prefix = opt.against_f32 ? "out_f32." : "out.";
  const std::string grad_prefix = opt.against_f32 ? "grad_f32." : "grad.";
  for (const auto& [key, ref] : g.tensors()) {
    const bool is_out = starts_with(key, out_prefix), is_grad = starts_with(key, grad_prefix);
    if (!is_out && !is_grad) continue;
    const std::string name = key.substr((is_out ? out_prefix : grad_prefix).size());
    const auto& src = is_out ? r.outs : gmap;
    auto it = src.find(name);
    rep.tensors.push_back(compare(key, it == src.end() ? at::Tensor() : it->second, ref, is_grad,
                                  is_grad ? rep.tol_grad : rep.tol_out));
  }
  if (rep.tensors.empty())
    throw Error(g.path(), out_prefix + "*", "no reference tensors (" + out_prefix + "*, " + grad_prefix + "*) in the file");
  return rep;
}

// A file that belongs to a Moshi LM triple and carries no TTT case metadata.
bool is_moshi_lm(const std::string& path) {
  if (!moshi_lm_files(path)) return false;
  auto f = io::SafetensorsFile::open(path);
  auto it = f->metadata().find("case");
  if (it == f->metadata().end()) return true;
  return starts_with(it->second, "moshi_lm") || starts_with(it->second, "test_lm");
}

}  // namespace

std::optional<MoshiLMFiles> moshi_lm_files(const std::string& path) {
  const fs::path p(path);
  if (p.extension() != ".safetensors") return std::nullopt;
  const std::string stem = p.stem().string();
  for (const char* suffix : {"_model", "_codes", "_out"}) {
    const std::string s(suffix);
    if (stem.size() > s.size() && stem.compare(stem.size() - s.size(), s.size(), s) == 0) {
      MoshiLMFiles m;
      m.stem = stem.substr(0, stem.size() - s.size());
      const fs::path dir = p.parent_path();
      m.model = (dir / (m.stem + "_model.safetensors")).string();
      m.codes = (dir / (m.stem + "_codes.safetensors")).string();
      m.out = (dir / (m.stem + "_out.safetensors")).string();
      if (fs::is_regular_file(m.model) && fs::is_regular_file(m.codes) && fs::is_regular_file(m.out)) return m;
      return std::nullopt;
    }
  }
  return std::nullopt;
}

namespace {

Report run_golden_impl(const std::string& path, const RunOptions& opt) {
  if (!fs::is_regular_file(path)) throw Error(path, "", "no such golden file");
  // A TTT golden file names its reference; a Moshi LM triple (upstream's test assets) names none.
  {
    auto f = io::SafetensorsFile::open(path);
    const bool ttt_meta = f->metadata().count("case") || f->metadata().count("reference");
    if (!ttt_meta && is_moshi_lm(path)) return run_moshi_lm(*moshi_lm_files(path), opt);
  }
  GoldenFile g = GoldenFile::open(path);
  const Family fam = require_family(g);
  if (fam == Family::moshi_lm) {
    auto m = moshi_lm_files(path);
    if (!m) throw Error(path, "", "a Moshi LM golden needs <stem>_model, _codes and _out.safetensors side by side");
    return run_moshi_lm(*m, opt);
  }
  return run_ttt_file(g, fam, opt);
}

}  // namespace

Report run_golden(const std::string& path, const RunOptions& opt) {
  if (opt.dtype != at::kFloat && opt.dtype != at::kDouble)
    throw Error(path, "dtype", "the golden runner computes in float32 or float64", ErrorKind::Usage);
  // Whatever the file makes our code reject (a configuration it implies, tensors that do not fit
  // it) is a property of the input: an input error naming the file.
  try {
    return run_golden_impl(path, opt);
  } catch (const Error& e) {
    if (e.kind() == ErrorKind::Input) throw;
    throw Error(path, e.key(), e.reason(), ErrorKind::Input);
  } catch (const c10::Error& e) {
    throw Error(path, "", std::string("cannot run this file: ") + e.what_without_backtrace(), ErrorKind::Input);
  }
}

std::vector<std::string> golden_cases(const std::string& dir) {
  if (!fs::is_directory(dir)) throw Error(dir, "", "not a directory");
  std::vector<std::string> files;
  for (const auto& e : fs::directory_iterator(dir))
    if (e.is_regular_file() && e.path().extension() == ".safetensors") files.push_back(e.path().string());
  std::sort(files.begin(), files.end());
  std::vector<std::string> cases;
  std::set<std::string> lm_stems;
  for (const auto& f : files) {
    auto m = moshi_lm_files(f);
    bool lm = false;
    try {
      lm = m && is_moshi_lm(f);
    } catch (const Error&) {
      lm = false;  // unreadable: run_golden reports it
    }
    if (lm) {
      if (lm_stems.insert(m->stem).second) cases.push_back(m->model);
    } else {
      cases.push_back(f);
    }
  }
  return cases;
}

std::vector<std::string> golden_cases_of(const std::vector<std::string>& dirs, Family family) {
  std::vector<std::string> out;
  for (const std::string& d : dirs) {
    if (!fs::is_directory(d)) continue;
    for (const std::string& c : golden_cases(d)) {
      try {
        if (is_moshi_lm(c)) {
          if (family == Family::moshi_lm) out.push_back(c);
          continue;
        }
        if (detect_family(GoldenFile::open(c)) == family) out.push_back(c);
      } catch (const Error&) {
      }
    }
  }
  return out;
}

std::vector<Report> run_golden_dir(const std::string& dir, const RunOptions& opt) {
  std::vector<Report> out;
  for (const std::string& c : golden_cases(dir)) {
    try {
      out.push_back(run_golden(c, opt));
    } catch (const Error& e) {
      if (e.kind() != ErrorKind::Input) throw;
      Report r;
      r.file = c;
      r.case_name = fs::path(c).stem().string();
      r.dtype = opt.dtype == at::kDouble ? "f64" : "f32";
      r.reference = opt.against_f32 ? "f32" : "f64";
      r.error = e.what();
      out.push_back(r);
    }
  }
  return out;
}

}  // namespace mtt::golden
