#include "golden/golden_moshi.h"

#include <ATen/core/grad_mode.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>

#include "core/error.h"
#include "io/safetensors.h"
#include "moshi/lm.h"
#include "nn/tensor_io.h"

namespace mtt::golden {

namespace {

int64_t count_indexed(const std::map<std::string, at::Tensor>& t, const std::string& prefix, const std::string& suffix) {
  int64_t n = 0;
  while (t.count(prefix + std::to_string(n) + suffix)) ++n;
  return n;
}

const at::Tensor& need(const std::map<std::string, at::Tensor>& t, const std::string& key, const std::string& file) {
  auto it = t.find(key);
  if (it == t.end()) throw Error(file, key, "tensor missing from the Moshi LM golden");
  return it->second;
}

double masked_ce(const at::Tensor& logits, const at::Tensor& targets, const at::Tensor& mask) {
  // logits [B, T, C], targets [B, T], mask [B, T]
  at::Tensor l = logits.index({mask}).to(at::kDouble);
  at::Tensor t = targets.index({mask});
  return at::cross_entropy_loss(l, t).item<double>();
}

TensorError exact_bool(const std::string& name, const at::Tensor& ours, const at::Tensor& ref) {
  TensorError e;
  e.name = name;
  e.tol = 0;
  e.ref_max_abs = 1;
  if (ours.sizes() != ref.sizes()) {
    e.max_abs = e.rel = std::numeric_limits<double>::infinity();
    return e;
  }
  e.max_abs = e.rel = static_cast<double>(ours.ne(ref).sum().item<int64_t>());  // mismatching entries
  e.pass = e.max_abs == 0;
  return e;
}

TensorError masked_values(const std::string& name, const at::Tensor& ours, const at::Tensor& ref,
                          const at::Tensor& mask, double tol) {
  TensorError e;
  e.name = name;
  e.tol = tol;
  if (ours.sizes() != ref.sizes()) {
    e.max_abs = e.rel = std::numeric_limits<double>::infinity();
    return e;
  }
  at::Tensor m = mask.unsqueeze(-1).expand_as(ref);
  at::Tensor r = ref.index({m}).to(at::kDouble), o = ours.index({m}).to(at::kDouble);
  e.ref_max_abs = r.numel() ? r.abs().max().item<double>() : 0.0;
  e.max_abs = r.numel() ? (o - r).abs().max().item<double>() : 0.0;
  e.rel = e.ref_max_abs > 0 ? e.max_abs / e.ref_max_abs : e.max_abs;
  e.pass = std::isfinite(e.rel) && e.rel <= tol;
  return e;
}

TensorError scalar_rel(const std::string& name, double ours, double ref, double tol) {
  TensorError e;
  e.name = name;
  e.tol = tol;
  e.ref_max_abs = std::abs(ref);
  e.max_abs = std::abs(ours - ref);
  e.rel = e.ref_max_abs > 0 ? e.max_abs / e.ref_max_abs : e.max_abs;
  e.pass = std::isfinite(e.rel) && e.rel <= tol;
  return e;
}

}  // namespace

moshi::LMConfig moshi_lm_config(const MoshiLMFiles& files) {
  for (const std::string& f : {files.model, files.out, files.codes}) {
    auto sf = io::SafetensorsFile::open(f);
    auto it = sf->metadata().find("config");
    if (it != sf->metadata().end()) return moshi::LMConfig::from_json(it->second, f);
  }
  auto sf = io::SafetensorsFile::open(files.model);
  std::map<std::string, at::Tensor> t;
  for (const auto& info : sf->tensors()) t[info.name] = at::empty(info.shape, at::TensorOptions().device(at::kMeta));
  const std::string& file = files.model;

  moshi::LMConfig c = moshi::LMConfig::golden_test();  // upstream tests/test_lm.py
  c.n_q = count_indexed(t, "emb.", ".weight");
  c.dep_q = count_indexed(t, "linears.", ".weight");
  if (c.n_q == 0 || c.dep_q == 0) throw Error(file, "emb.0.weight", "not a Moshi LMModel state dict (no emb.* / linears.*)");
  c.card = need(t, "emb.0.weight", file).size(0) - 1;  // + initial token
  c.text_card = need(t, "text_emb.weight", file).size(0) - 1;
  c.dim = need(t, "text_emb.weight", file).size(1);
  const int64_t text_out = need(t, "text_linear.weight", file).size(0);
  if (text_out != c.text_card) c.text_card_out = text_out;
  c.num_layers = count_indexed(t, "transformer.layers.", ".norm1.weight");
  if (t.count("transformer.layers.0.linear1.weight")) {
    c.gating = "none";
    c.hidden_scale = static_cast<double>(t.at("transformer.layers.0.linear1.weight").size(0)) / static_cast<double>(c.dim);
  }
  c.depformer_dim = need(t, "depformer_in.0.weight", file).size(0);
  c.depformer_num_layers = count_indexed(t, "depformer.layers.", ".norm1.weight");
  c.depformer_multi_linear = count_indexed(t, "depformer_in.", ".weight") > 1;
  c.depformer_low_rank_embeddings = t.count("depformer_emb.0.low_rank.weight") ? need(t, "depformer_emb.0.weight", file).size(1) : 0;
  // Settings that shapes cannot carry must agree with the shapes they imply.
  if (static_cast<int64_t>(c.delays.size()) != c.n_q + 1)
    throw Error(file, "delays", "the state dict has " + std::to_string(c.n_q) +
                                    " audio codebooks but upstream test_lm.py's delays have " + std::to_string(c.delays.size() - 1) +
                                    ": give the LMModel config as a 'config' metadata JSON");
  const int64_t sets = count_indexed(t, "depformer.layers.0.gating.", ".linear_in.weight");
  if (c.depformer_weights_per_step && sets > 0 && static_cast<int64_t>(c.depformer_weights_per_step_schedule.size()) != c.dep_q)
    throw Error(file, "depformer_weights_per_step_schedule",
                "does not fit dep_q " + std::to_string(c.dep_q) + ": give the LMModel config as a 'config' metadata JSON");
  c.validate(file);
  return c;
}

Report run_moshi_lm(const MoshiLMFiles& files, const RunOptions& opt) {
  Report rep;
  rep.file = files.model;
  rep.case_name = files.stem;
  rep.family = "moshi_lm";
  rep.fidelity = "fp32";
  rep.dtype = opt.dtype == at::kDouble ? "f64" : "f32";
  rep.reference = "f32";  // upstream stores float32 logits only
  // golden/moshi/README.md: masks exact, cross-entropy within a relative 1e-6 (upstream's check);
  // the logits themselves within the float32 tolerance of the TTT goldens.
  rep.tol_out = opt.tol_out >= 0 ? opt.tol_out : 1e-5;
  rep.tol_grad = 0;
  const double ce_tol = 1e-6;

  moshi::LMModel model(moshi_lm_config(files));
  moshi::LoadOptions lo;
  lo.dtype = opt.dtype;
  model.load(nn::load_tensors(files.model), lo, files.model);
  auto codes_file = nn::load_tensors(files.codes);
  const at::Tensor& codes = need(codes_file, "codes", files.codes);
  auto ref = nn::load_tensors(files.out);
  for (const char* k : {"logits", "text_logits", "mask", "text_mask"}) need(ref, k, files.out);

  at::NoGradGuard ng;
  moshi::LMOutput out = model.forward(codes);
  rep.tensors.push_back(exact_bool("mask", out.mask, ref.at("mask")));
  rep.tensors.push_back(exact_bool("text_mask", out.text_mask, ref.at("text_mask")));
  const at::Tensor& rmask = ref.at("mask");
  const at::Tensor& rtmask = ref.at("text_mask");
  rep.tensors.push_back(masked_values("logits", out.logits, ref.at("logits"), rmask, rep.tol_out));
  rep.tensors.push_back(masked_values("text_logits", out.text_logits, ref.at("text_logits"), rtmask, rep.tol_out));
  if (out.logits.sizes() == ref.at("logits").sizes()) {
    for (int64_t cb = 0; cb < out.logits.size(1); ++cb) {
      at::Tensor m = rmask.select(1, cb);
      const double ce = masked_ce(out.logits.select(1, cb), codes.select(1, cb + 1), m);
      const double ce_ref = masked_ce(ref.at("logits").select(1, cb), codes.select(1, cb + 1), m);
      rep.tensors.push_back(scalar_rel("ce.audio" + std::to_string(cb), ce, ce_ref, ce_tol));
    }
  }
  if (out.text_logits.sizes() == ref.at("text_logits").sizes()) {
    at::Tensor tm = rtmask.select(1, 0);
    const double ce = masked_ce(out.text_logits.select(1, 0), codes.select(1, 0), tm);
    const double ce_ref = masked_ce(ref.at("text_logits").select(1, 0), codes.select(1, 0), tm);
    rep.tensors.push_back(scalar_rel("ce.text", ce, ce_ref, ce_tol));
  }
  return rep;
}

}  // namespace mtt::golden
