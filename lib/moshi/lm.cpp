#include "moshi/lm.h"

#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <set>
#include <sstream>

#include "core/error.h"
#include "io/safetensors.h"
#include "moshi/hybrid.h"
#include "moshi/inplace.h"
#include "nn/tensor_io.h"

namespace mtt::moshi {

namespace {

at::Tensor meta(std::vector<int64_t> shape) {
  return at::empty(shape, at::TensorOptions().dtype(at::kFloat).device(at::kMeta));
}

bool ends_with(const std::string& s, const std::string& suf) {
  return s.size() >= suf.size() && s.compare(s.size() - suf.size(), suf.size(), suf) == 0;
}

// Moves tensors[from] to tensors[to] unless `to` is already there.
void move_key(std::map<std::string, at::Tensor>& tensors, const std::string& from, const std::string& to) {
  auto it = tensors.find(from);
  if (it == tensors.end() || tensors.count(to)) return;
  tensors[to] = it->second;
  tensors.erase(it);
}

std::string shape_str(at::IntArrayRef s) {
  std::ostringstream o;
  o << "[";
  for (size_t i = 0; i < s.size(); ++i) o << (i ? ", " : "") << s[i];
  o << "]";
  return o.str();
}

}  // namespace

std::string LoadReport::summary() const {
  std::ostringstream o;
  o << missing.size() << " missing, " << unexpected.size() << " unexpected, " << mis_shaped.size()
    << " mis-shaped, " << zero_copy << " zero-copy, " << converted << " converted";
  if (lora_linears > 0 || lora_absent > 0)
    o << "; LoRA on " << lora_linears << " linears" << (lora_absent ? " (" + std::to_string(lora_absent) + " without adapters)" : "")
      << (lora_fused ? ", merged" : ", separate");
  auto list = [&](const char* what, const std::vector<std::string>& v) {
    if (v.empty()) return;
    o << "; " << what << ": ";
    for (size_t i = 0; i < v.size() && i < 5; ++i) o << (i ? ", " : "") << v[i];
    if (v.size() > 5) o << ", ... (" << v.size() << ")";
  };
  list("missing", missing);
  list("unexpected", unexpected);
  list("mis-shaped", mis_shaped);
  return o.str();
}

at::Tensor ScaledEmbedding::operator()(const at::Tensor& ids) const {
  // lm_utils.py:108-124: id == -1 (zero_idx) -> exact zeros; ids clamped to >= 0; low-rank after.
  at::Tensor is_zero = (ids == -1).unsqueeze(-1);
  at::Tensor y = at::embedding(weight, ids.clamp_min(0));
  y = at::where(is_zero, at::zeros({1}, y.options()), y);
  if (low_rank.weight.defined()) y = low_rank(y);
  return y;
}

void ScaledEmbedding::collect(const std::string& prefix, ParamList& out) {
  out.push_back({prefix + "weight", &weight, {nn::ParamInit::embedding}});
  if (low_rank.weight.defined()) low_rank.collect(prefix + "low_rank.", out);
}

at::Tensor delay_sequence(const std::vector<int64_t>& delays, const at::Tensor& codes, const at::Tensor& initial) {
  // lm_utils.py:9-20: row k rolled right by delay_k, the first delay_k steps = initial[k].
  std::vector<at::Tensor> outs;
  for (size_t k = 0; k < delays.size(); ++k) {
    at::Tensor line = codes.select(1, static_cast<int64_t>(k)).roll({delays[k]}, {1}).clone();
    if (delays[k] > 0) line.narrow(1, 0, delays[k]).copy_(initial.select(1, static_cast<int64_t>(k)).expand({-1, delays[k]}));
    outs.push_back(line);
  }
  return at::stack(outs, 1);
}

std::pair<at::Tensor, at::Tensor> undelay_sequence(const std::vector<int64_t>& delays, const at::Tensor& t,
                                                   double fill) {
  // lm_utils.py:23-40: row k rolled left by delay_k, the last delay_k steps invalid (fill, mask 0).
  const int64_t B = t.size(0), K = t.size(1), T = t.size(2);
  at::Tensor mask = at::ones({B, K, T}, t.options().dtype(at::kBool));
  bool all_zero = std::all_of(delays.begin(), delays.end(), [](int64_t d) { return d == 0; });
  if (all_zero) return {t, mask};
  std::vector<at::Tensor> outs;
  for (int64_t k = 0; k < K; ++k) {
    const int64_t d = delays[static_cast<size_t>(k)];
    at::Tensor line = t.select(1, k).roll({-d}, {1}).clone();
    if (d > 0) {
      line.narrow(1, T - d, d).fill_(fill);
      mask.select(1, k).narrow(1, T - d, d).fill_(false);
    }
    outs.push_back(line);
  }
  return {at::stack(outs, 1), mask};
}

LMModel::LMModel(LMConfig cfg) : cfg_(std::move(cfg)) {
  cfg_.validate();
  build();
}

LMModel::~LMModel() = default;

void LMModel::build() {
  const int64_t D = cfg_.dim, Dd = cfg_.depformer_dim;
  const int64_t lr = cfg_.depformer_low_rank_embeddings;
  auto make_emb = [&](int64_t num, int64_t dim, int64_t low_rank) {
    ScaledEmbedding e;
    e.weight = meta({num, low_rank > 0 ? low_rank : dim});
    if (low_rank > 0) e.low_rank.weight = meta({dim, low_rank});
    return e;
  };
  auto make_linear = [&](int64_t in, int64_t out, bool bias) {
    Linear l;
    l.weight = meta({out, in});
    if (bias) l.bias = meta({out});
    return l;
  };
  // lm.py:76-243; main embeddings are plain (norm_emb false), text_emb has text_card + 1 rows.
  for (int64_t k = 0; k < cfg_.n_q; ++k) emb_.push_back(make_emb(cfg_.card + 1, D, 0));
  text_emb_ = make_emb(cfg_.text_card + 1, D, 0);
  text_linear_ = make_linear(D, cfg_.text_out_card(), cfg_.bias_proj);
  transformer_ = std::make_unique<StreamingTransformer>(cfg_.main_transformer());
  out_norm_ = make_norm(cfg_.norm, D);
  if (cfg_.dep_q > 0) {
    for (int64_t i = 0; i < cfg_.num_depformer_in(); ++i) depformer_in_.push_back(make_linear(D, Dd, false));
    for (int64_t k = 0; k + 1 < cfg_.dep_q; ++k) depformer_emb_.push_back(make_emb(cfg_.card + 1, Dd, lr));
    depformer_text_emb_ = make_emb(cfg_.text_card + 1, Dd, lr);
    if (cfg_.depformer_norm)
      for (int64_t k = 0; k < cfg_.dep_q; ++k) depformer_norms_.push_back(make_norm(*cfg_.depformer_norm, Dd));
    depformer_ = std::make_unique<StreamingTransformer>(cfg_.depformer_transformer());
  }
  for (int64_t k = 0; k < cfg_.dep_q; ++k) linears_.push_back(make_linear(cfg_.dep_q > 0 ? Dd : D, cfg_.card, cfg_.bias_proj));

  // Hybrid layers (fork layout) on the configured layer indices.
  hybrids_.assign(static_cast<size_t>(cfg_.num_layers), nullptr);
  inplace_.assign(static_cast<size_t>(cfg_.num_layers), nullptr);
  if (cfg_.ttt.enable) {
    for (int l : cfg_.ttt.resolve_layers(cfg_.num_layers)) {
      auto& layer = transformer_->layers()[static_cast<size_t>(l)];
      if (cfg_.ttt.variant == TTTVariant::inplace) {
        // In-Place TTT replaces the gated FFN's down projection (docs/checkpoint-keys.md §2.1-2.2).
        inplace_[static_cast<size_t>(l)] = std::make_shared<InPlaceBlock>(cfg_, l);
        layer.inplace = inplace_[static_cast<size_t>(l)];
      } else {
        hybrids_[static_cast<size_t>(l)] = std::make_shared<HybridBlock>(cfg_, l);
        layer.hybrid = hybrids_[static_cast<size_t>(l)];
      }
    }
  }
}

ParamList LMModel::declared_parameters() {
  ParamList out;
  for (size_t k = 0; k < emb_.size(); ++k) emb_[k].collect("emb." + std::to_string(k) + ".", out);
  text_emb_.collect("text_emb.", out);
  text_linear_.collect("text_linear.", out);
  auto& layers = transformer_->layers();
  for (size_t i = 0; i < layers.size(); ++i) {
    const std::string p = "transformer.layers." + std::to_string(i) + ".";
    if (hybrids_[i]) {
      // Fork layout (docs/checkpoint-keys.md §1.2): the Moshi layer under original_layer.* and again,
      // the same tensors, under seq_modeling_block.original_layer.*.
      layers[i].collect(p + "original_layer.", out);
      layers[i].collect(p + "seq_modeling_block.original_layer.", out);
      hybrids_[i]->collect(p, out);
    } else {
      layers[i].collect(p, out);
      // In-Place layers: plain Moshi keys plus the fast weight and target generator under gating.*
      if (inplace_[i]) inplace_[i]->collect(p + "gating.", out);
    }
  }
  out_norm_.collect("out_norm.", out);
  for (size_t k = 0; k < depformer_in_.size(); ++k) depformer_in_[k].collect("depformer_in." + std::to_string(k) + ".", out);
  for (size_t k = 0; k < depformer_emb_.size(); ++k)
    depformer_emb_[k].collect("depformer_emb." + std::to_string(k) + ".", out);
  if (depformer_) {
    depformer_text_emb_.collect("depformer_text_emb.", out);
    for (size_t k = 0; k < depformer_norms_.size(); ++k)
      depformer_norms_[k].collect("depformer_norms." + std::to_string(k) + ".", out);
    depformer_->collect("depformer.", out);
  }
  for (size_t k = 0; k < linears_.size(); ++k) linears_[k].collect("linears." + std::to_string(k) + ".", out);
  return out;
}

NamedTensors LMModel::named_parameters() {
  NamedTensors out;
  for (auto& p : declared_parameters()) out.emplace_back(std::move(p.name), p.tensor);
  return out;
}

std::map<std::string, at::Tensor> LMModel::state_dict() {
  std::map<std::string, at::Tensor> m;
  for (auto& [n, t] : named_parameters()) m[n] = *t;
  return m;
}

void LMModel::init_random(uint64_t seed, at::ScalarType dtype) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  std::set<at::TensorImpl*> seen;  // duplicate names share one tensor
  // The rule of each tensor is the one its module declared (nn/params.h), in registration order:
  // the order fixes the generator's stream, so a seed gives the same weights as before.
  using nn::ParamInit;
  for (auto& [name, t, spec] : declared_parameters()) {
    if (seen.count(t->unsafeGetTensorImpl())) continue;
    // TTT parameters keep the TTT layer's own initialisation (docs/ttt.md §1.1); the In-Place
    // fast weight is a copy of linear_out, set below.
    if (spec.init == ParamInit::own || spec.init == ParamInit::derived) continue;
    const auto shape = t->sizes().vec();
    at::Tensor v;
    switch (spec.init) {
      case ParamInit::embedding: v = at::randn(shape, gen); break;  // unit variance
      case ParamInit::norm_gain: v = 1.0 + 0.1 * at::randn(shape, gen); break;
      case ParamInit::bias: v = 0.1 * at::randn(shape, gen); break;
      case ParamInit::layer_scale: v = cfg_.layer_scale.value_or(0.1) * (1.0 + 0.1 * at::randn(shape, gen)); break;
      case ParamInit::small_normal: v = 1e-2 * at::randn(shape, gen); break;
      case ParamInit::linear:
      default: v = at::randn(shape, gen) / std::sqrt(static_cast<double>(shape.back())); break;  // N(0, 1/sqrt(in))
    }
    *t = v.to(dtype);
    seen.insert(t->unsafeGetTensorImpl());
  }
  // Duplicate names point to the same handle (collect on the same layer twice), so one write suffices.
  for (auto& h : hybrids_)
    if (h) h->to(at::kFloat);
  for (size_t i = 0; i < inplace_.size(); ++i)
    if (inplace_[i]) inplace_[i]->init_fast_weight_from(transformer_->layers()[i]);
  dtype_ = dtype;
}

void LMModel::set_requires_grad(bool on) {
  for (auto& [n, t, spec] : declared_parameters()) {
    if (spec.buffer) continue;
    if (t->defined() && at::isFloatingType(t->scalar_type())) t->requires_grad_(on);
  }
}

LoadReport LMModel::load(const std::map<std::string, at::Tensor>& tensors_in, const LoadOptions& opt,
                         const std::string& file) {
  LoadReport rep;
  // 1. Rename legacy fused attention names into per-step row blocks (transformer.py:420-446).
  std::map<std::string, at::Tensor> tensors;
  std::map<std::string, int64_t> mult_of;  // attention prefix -> number of weight sets
  {
    auto& layers = transformer_->layers();
    for (size_t i = 0; i < layers.size(); ++i) {
      const std::string p = "transformer.layers." + std::to_string(i) + ".";
      if (hybrids_[i]) {
        mult_of[p + "original_layer.self_attn."] = 1;
        mult_of[p + "seq_modeling_block.original_layer.self_attn."] = 1;
      } else {
        mult_of[p + "self_attn."] = 1;
      }
    }
    if (depformer_)
      for (int64_t l = 0; l < depformer_->config().num_layers; ++l)
        mult_of["depformer.layers." + std::to_string(l) + ".self_attn."] = depformer_->config().num_weight_sets();
  }
  // (source suffix, target module list, target suffix), the LoRA names as upstream's
  // StreamingMultiheadAttention._load_hook maps them.
  static const std::array<std::array<const char*, 3>, 7> kFused = {{
      {"in_proj_weight", "in_projs.", ".weight"},
      {"in_proj.weight", "in_projs.", ".weight"},
      {"out_proj.weight", "out_projs.", ".weight"},
      {"in_proj.lora_A.weight", "in_projs.", ".lora_A.weight"},
      {"in_proj.lora_B.weight", "in_projs.", ".lora_B.weight"},
      {"out_proj.lora_A.weight", "out_projs.", ".lora_A.weight"},
      {"out_proj.lora_B.weight", "out_projs.", ".lora_B.weight"},
  }};
  for (const auto& [name, t] : tensors_in) {
    bool renamed = false;
    for (const auto& [src, list, suffix] : kFused) {
      const std::string s(src);
      if (name.size() <= s.size() || name.compare(name.size() - s.size(), s.size(), s) != 0) continue;
      const std::string prefix = name.substr(0, name.size() - s.size());
      auto it = mult_of.find(prefix);
      if (it == mult_of.end()) continue;
      const int64_t mult = it->second;
      if (t.dim() != 2 || t.size(0) % mult != 0) {
        rep.mis_shaped.push_back(name + ": file " + shape_str(t.sizes()) + " not divisible into " +
                                 std::to_string(mult) + " row blocks");
        renamed = true;
        break;
      }
      at::Tensor v = t.view({mult, t.size(0) / mult, t.size(1)});
      for (int64_t k = 0; k < mult; ++k) tensors[prefix + list + std::to_string(k) + suffix] = v[k];
      renamed = true;
      break;
    }
    if (!renamed) tensors[name] = t;
  }
  // 1b. In-Place layers: a file without w_down (the port's TTT-only adapter files, or a base
  // checkpoint being converted) gets it from linear_out, and w_down_pretrained from w_down, as the
  // port's loaders do (IPMOSHI loaders.py:L458-473, docs/checkpoint-keys.md §2.2-2.4).
  for (size_t i = 0; i < inplace_.size(); ++i) {
    if (!inplace_[i]) continue;
    const std::string g = "transformer.layers." + std::to_string(i) + ".gating.";
    if (!tensors.count(g + "w_down") && tensors.count(g + "linear_out.weight"))
      tensors[g + "w_down"] = tensors[g + "linear_out.weight"].to(at::kFloat).clone();
    if (!tensors.count(g + "w_down_pretrained") && tensors.count(g + "w_down"))
      tensors[g + "w_down_pretrained"] = tensors[g + "w_down"].to(at::kFloat).clone();
    // The port's LoRA wraps W_target too (docs/checkpoint-keys.md §2.3); the In-Place TTT reads it as a
    // matrix, so its adapter is always merged (moshi's merge, in the tensors' dtype).
    const std::string wt = g + "target_generator.W_target.";
    if (opt.lora.enable && tensors.count(wt + "lora_A.weight") && tensors.count(wt + "lora_B.weight")) {
      move_key(tensors, wt + "frozen_W.weight", wt + "weight");
      if (tensors.count(wt + "weight")) {
        const at::Tensor A = tensors[wt + "lora_A.weight"], B = tensors[wt + "lora_B.weight"];
        const at::Tensor W = tensors[wt + "weight"];
        if (A.dim() == 2 && B.dim() == 2 && B.size(1) == A.size(0) && W.sizes() == at::IntArrayRef({B.size(0), A.size(1)})) {
          tensors[wt + "weight"] = W + opt.lora.scaling * at::matmul(B.to(W.scalar_type()), A.to(W.scalar_type()));
          tensors.erase(wt + "lora_A.weight");
          tensors.erase(wt + "lora_B.weight");
        }
      }
    }
  }
  // 1c. LoRA (moshi/lora.h). Every wrappable linear first gets meta adapters of the rank, so that
  // named_parameters() yields the LoRALinear names; a linear the tensors give no adapter for goes
  // back to a plain one (moshi leaves its lora_B at zero). The base moves between `weight` and
  // `frozen_W.weight` as moshi's LoRALinear load hook does.
  {
    auto lins = wrappable_linears();
    for (Linear* l : lins) {
      l->lora_A = at::Tensor();
      l->lora_B = at::Tensor();
      l->lora_scaling = 0.0;
    }
    int64_t r = opt.lora.enable ? opt.lora.rank : 0;
    if (opt.lora.enable && r <= 0)
      for (const auto& [n, t] : tensors)
        if (ends_with(n, ".lora_A.weight") && t.dim() == 2) {
          r = t.size(0);
          break;
        }
    if (r > 0) {
      std::map<const at::Tensor*, Linear*> by_a;
      for (Linear* l : lins) {
        l->lora_A = meta({r, l->weight.size(1)});
        l->lora_B = meta({l->weight.size(0), r});
        l->lora_scaling = opt.lora.scaling;
        by_a[&l->lora_A] = l;
      }
      std::map<Linear*, std::vector<std::string>> prefixes;  // a fork hybrid layer's linear has two
      for (auto& [name, ptr] : named_parameters()) {
        auto it = by_a.find(ptr);
        if (it != by_a.end()) prefixes[it->second].push_back(name.substr(0, name.size() - std::strlen("lora_A.weight")));
      }
      for (Linear* l : lins) {
        bool any = false;
        for (const auto& p : prefixes[l]) any = any || tensors.count(p + "lora_A.weight") || tensors.count(p + "lora_B.weight");
        if (!any) {
          l->lora_A = at::Tensor();
          l->lora_B = at::Tensor();
          l->lora_scaling = 0.0;
          ++rep.lora_absent;
        } else {
          ++rep.lora_linears;
        }
        for (const auto& p : prefixes[l]) {
          for (const char* w : {"weight", "bias"}) {
            if (any) move_key(tensors, p + w, p + "frozen_W." + w);
            else move_key(tensors, p + "frozen_W." + w, p + w);
          }
        }
      }
    } else {
      if (opt.lora.enable) rep.lora_absent = static_cast<int64_t>(lins.size());
      // A file in LoRALinear names without adapters (or LoRA off): its base is the plain weight.
      std::vector<std::string> frozen;
      for (const auto& [n, t] : tensors)
        if (ends_with(n, ".frozen_W.weight") || ends_with(n, ".frozen_W.bias")) frozen.push_back(n);
      for (const auto& n : frozen) {
        const size_t cut = n.rfind("frozen_W.");
        move_key(tensors, n, n.substr(0, cut) + n.substr(cut + std::strlen("frozen_W.")));
      }
    }
  }
  // 2. Assign.
  std::set<std::string> ignore(opt.ignore_unexpected.begin(), opt.ignore_unexpected.end());
  std::set<std::string> used;
  std::map<at::TensorImpl*, std::string> assigned;  // handle -> first name (fork duplicates)
  auto declared = declared_parameters();
  NamedTensors params;
  std::map<at::Tensor*, nn::ParamSpec> spec_of;  // the declaration of the handle's first name
  for (const auto& p : declared) {
    params.emplace_back(p.name, p.tensor);
    spec_of.emplace(p.tensor, p.spec);
  }
  std::vector<std::pair<at::Tensor*, at::Tensor>> pending;
  std::map<at::Tensor*, std::string> first_name;
  for (auto& [name, ptr] : params) {
    auto it = tensors.find(name);
    if (it == tensors.end()) {
      // A fork duplicate may be absent from adapter-only files; the handle is filled by its twin.
      rep.missing.push_back(name);
      continue;
    }
    used.insert(name);
    const at::Tensor& src = it->second;
    if (src.sizes() != ptr->sizes()) {
      rep.mis_shaped.push_back(name + ": file " + shape_str(src.sizes()) + " vs model " + shape_str(ptr->sizes()));
      continue;
    }
    auto fit = first_name.find(ptr);
    if (fit != first_name.end()) {
      // Same module registered twice (fork duplicate original_layer): the file's copies must agree.
      rep.duplicates.push_back(name);
      continue;
    }
    first_name[ptr] = name;
    pending.emplace_back(ptr, src);
  }
  // Missing keys whose handle was filled through a duplicate name are fine.
  {
    std::vector<std::string> still;
    std::map<std::string, at::Tensor*> by_name;
    for (auto& [n, p] : params) by_name[n] = p;
    for (auto& n : rep.missing)
      if (!first_name.count(by_name[n])) still.push_back(n);
    rep.missing = still;
  }
  for (const auto& [name, t] : tensors)
    if (!used.count(name) && !ignore.count(name)) rep.unexpected.push_back(name);
  if (opt.strict && !rep.ok()) {
    std::string hint;
    if (!opt.lora.enable)
      for (const auto& n : rep.unexpected)
        if (n.find(".lora_A.") != std::string::npos || n.find(".lora_B.") != std::string::npos) {
          hint = " (the tensors hold LoRA adapters: load with LoRA on, e.g. the run's args.yaml lora.enable)";
          break;
        }
    throw Error(file, !rep.missing.empty() ? rep.missing[0] : !rep.unexpected.empty() ? rep.unexpected[0] : rep.mis_shaped[0],
                "checkpoint does not match the model: " + rep.summary() + hint);
  }
  for (auto& [ptr, src] : pending) {
    at::Tensor v = src;
    // Every floating tensor follows the compute dtype, RMSNorm gains and gating included (the
    // upstream loader casts them all, loaders.py:412-422), except those declared f32: the TTT
    // branch (its inner loop runs in f32, docs/ttt.md §2) and the In-Place fast weight.
    const at::ScalarType want = spec_of.at(ptr).dtype == nn::ParamDType::f32 ? at::kFloat : opt.dtype;
    if (v.scalar_type() != want && at::isFloatingType(v.scalar_type())) {
      v = v.to(want);
      ++rep.converted;
    } else {
      ++rep.zero_copy;
    }
    *ptr = v;
  }
  dtype_ = opt.dtype;
  if (opt.fuse_lora && rep.lora_linears > 0) {
    fuse_lora();
    rep.lora_fused = true;
  }
  return rep;
}

std::vector<Linear*> LMModel::wrappable_linears() {
  // moshi's replace_all_linear_with_lora walks every nn.Linear child of the LM (moshi/lora.h).
  std::vector<Linear*> v{&text_linear_};
  auto layer_linears = [&](StreamingTransformer& t) {
    for (auto& L : t.layers()) {
      for (auto* group : {&L.in_projs, &L.out_projs, &L.gating_in, &L.gating_out})
        for (auto& l : *group) v.push_back(&l);
      if (L.linear1.weight.defined()) v.push_back(&L.linear1);
      if (L.linear2.weight.defined()) v.push_back(&L.linear2);
    }
  };
  layer_linears(*transformer_);
  for (auto& l : depformer_in_) v.push_back(&l);
  if (depformer_) {
    for (auto& e : depformer_emb_)
      if (e.low_rank.weight.defined()) v.push_back(&e.low_rank);
    if (depformer_text_emb_.low_rank.weight.defined()) v.push_back(&depformer_text_emb_.low_rank);
    layer_linears(*depformer_);
  }
  for (auto& l : linears_) v.push_back(&l);
  return v;
}

void LMModel::enable_lora(const LoraSettings& lora, uint64_t seed) {
  if (lora.rank <= 0) throw Error("", "lora.rank", "LoRA rank must be positive", ErrorKind::Usage);
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  for (Linear* l : wrappable_linears()) {
    if (l->weight.is_meta())
      throw Error("", "lora", "load or initialise the weights before enable_lora", ErrorKind::Internal);
    // moshi-finetune's initialisation (wrapped_model.py): lora_A kaiming-uniform(a = sqrt(5)), whose
    // bound is 1/sqrt(in); lora_B zero.
    const int64_t in = l->weight.size(1), out = l->weight.size(0);
    const double bound = 1.0 / std::sqrt(static_cast<double>(in));
    l->lora_A = ((at::rand({lora.rank, in}, gen) * 2.0 - 1.0) * bound).to(l->weight.options());
    l->lora_B = at::zeros({out, lora.rank}, l->weight.options());
    l->lora_scaling = lora.scaling;
  }
}

void LMModel::fuse_lora() {
  for (Linear* l : wrappable_linears()) l->merge_lora();
}

int64_t LMModel::lora_linears() const {
  int64_t n = 0;
  for (Linear* l : const_cast<LMModel*>(this)->wrappable_linears()) n += l->has_lora() ? 1 : 0;
  return n;
}

LoadReport LMModel::load_file(const std::string& path, const LoadOptions& opt) {
  auto f = io::SafetensorsFile::open(path);
  std::map<std::string, at::Tensor> views;
  for (const auto& info : f->tensors()) views[info.name] = nn::to_tensor(f->view(info));
  keep_alive_ = f;
  return load(views, opt, path);
}

LMState LMModel::new_state(int64_t batch) {
  LMState s;
  s.transformer = transformer_->new_state(batch, at::TensorOptions().dtype(dtype_).device(text_emb_.weight.device()));
  for (size_t i = 0; i < hybrids_.size(); ++i)
    if (hybrids_[i]) s.transformer.ttt[i] = hybrids_[i]->new_state(batch);
  for (size_t i = 0; i < inplace_.size(); ++i) {
    if (!inplace_[i]) continue;
    s.transformer.ttt[i] = std::make_shared<LayerTTTState>();
    s.transformer.ttt[i]->inplace = inplace_[i]->new_state(batch);
  }
  return s;
}

TransformerState LMModel::new_depformer_state(int64_t batch) {
  return depformer_->new_state(batch, at::TensorOptions().dtype(dtype_).device(text_emb_.weight.device()));
}

std::pair<at::Tensor, at::Tensor> LMModel::forward_text(const at::Tensor& seq, LMState* state) {
  // lm.py:379-408: audio embeddings summed in codebook order, then the text embedding.
  if (seq.dim() != 3 || seq.size(1) != cfg_.num_codebooks())
    throw Error("", "codes", "expected [B, " + std::to_string(cfg_.num_codebooks()) + ", S], got " + shape_str(seq.sizes()),
                ErrorKind::Usage);
  at::Tensor x;
  for (int64_t k = 0; k < cfg_.n_q; ++k) {
    at::Tensor e = emb_[static_cast<size_t>(k)](seq.select(1, k + 1));
    x = x.defined() ? x + e : e;
  }
  at::Tensor te = text_emb_(seq.select(1, 0));
  x = x.defined() ? x + te : te;
  // The summed embeddings are also the In-Place target source (IPMOSHI lm.py:L448-470, docs/ttt.md §8).
  at::Tensor h = transformer_->forward(x, state ? &state->transformer : nullptr, x);
  h = out_norm_(h);
  at::Tensor text_logits = text_linear_(h).unsqueeze(1);
  return {h, text_logits};
}

at::Tensor LMModel::forward_depformer_training(const at::Tensor& seq, const at::Tensor& h) {
  // lm.py:410-448: depformer input k = depformer_in[schedule k](h) + emb(token of stream k-1).
  const int64_t B = seq.size(0), T = seq.size(2), Ka = cfg_.dep_q;
  std::vector<at::Tensor> ins;
  for (int64_t k = 0; k < Ka; ++k) {
    int64_t li = 0;
    if (cfg_.depformer_multi_linear)
      li = cfg_.depformer_weights_per_step_schedule.empty() ? k : cfg_.depformer_weights_per_step_schedule[static_cast<size_t>(k)];
    at::Tensor tin = depformer_in_[static_cast<size_t>(li)](h);
    at::Tensor tok = k == 0 ? depformer_text_emb_(seq.select(1, 0))
                            : depformer_emb_[static_cast<size_t>(k - 1)](seq.select(1, k + cfg_.audio_offset() - 1));
    ins.push_back(tok + tin);
  }
  at::Tensor x = at::stack(ins, 2).view({B * T, Ka, -1});
  at::Tensor y = depformer_->forward(x, nullptr);
  std::vector<at::Tensor> logits;
  for (int64_t k = 0; k < Ka; ++k) {
    at::Tensor yk = y.select(1, k);
    if (!depformer_norms_.empty()) yk = depformer_norms_[static_cast<size_t>(k)](yk.unsqueeze(1)).squeeze(1);
    logits.push_back(linears_[static_cast<size_t>(k)](yk).view({B, T, -1}));
  }
  return at::stack(logits, 1);
}

at::Tensor LMModel::depformer_step(int64_t k, const at::Tensor& token, const at::Tensor& h, TransformerState& st) {
  // lm.py:450-493 (forward_depformer), one codebook per call inside a per-time-step state.
  int64_t li = 0;
  if (cfg_.depformer_multi_linear)
    li = cfg_.depformer_weights_per_step_schedule.empty() ? k : cfg_.depformer_weights_per_step_schedule[static_cast<size_t>(k)];
  at::Tensor x = depformer_in_[static_cast<size_t>(li)](h);
  at::Tensor tok = token.view({-1, 1});
  at::Tensor e = k == 0 ? depformer_text_emb_(tok) : depformer_emb_[static_cast<size_t>(k - 1)](tok);
  x = x + e;
  at::Tensor y = depformer_->forward(x, &st);
  if (!depformer_norms_.empty()) y = depformer_norms_[static_cast<size_t>(k)](y);
  return linears_[static_cast<size_t>(k)](y).select(1, 0);
}

at::Tensor delayed_with_initial(const LMConfig& c, const at::Tensor& codes) {
  const int64_t B = codes.size(0), K = codes.size(1);
  if (K != c.num_codebooks())
    throw Error("", "codes", "expected " + std::to_string(c.num_codebooks()) + " codebooks, got " + std::to_string(K),
                ErrorKind::Usage);
  std::vector<int64_t> init(static_cast<size_t>(K), c.initial_token_id());
  init[0] = c.text_initial_token_id();
  at::Tensor initial = at::tensor(init, codes.options()).view({1, K, 1}).expand({B, K, 1});
  return at::cat({initial, delay_sequence(c.delays, codes, initial)}, 2);
}

LMOutput LMModel::forward(const at::Tensor& codes) {
  // lm.py:322-377.
  const int64_t T = codes.size(2);
  at::Tensor delayed = delayed_with_initial(cfg_, codes);
  auto [h, text_logits] = forward_text(delayed.narrow(2, 0, T), nullptr);
  LMOutput out;
  at::Tensor logits = forward_depformer_training(delayed.narrow(2, 1, T), h);
  std::vector<int64_t> ad(cfg_.delays.begin() + 1, cfg_.delays.begin() + 1 + cfg_.dep_q);
  std::tie(out.logits, out.mask) = undelay_sequence(ad, logits, std::nan(""));
  out.mask = out.mask & (codes.narrow(1, 1, cfg_.dep_q) != -1);
  std::tie(out.text_logits, out.text_mask) = undelay_sequence({cfg_.delays[0]}, text_logits, std::nan(""));
  out.text_mask = out.text_mask & (codes.narrow(1, 0, 1) != -1);
  return out;
}

}  // namespace mtt::moshi
