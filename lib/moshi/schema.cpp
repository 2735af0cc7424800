#include "moshi/schema.h"

#include <algorithm>
#include <cmath>
#include <sstream>

#include <nlohmann/json.hpp>

#include "core/error.h"

namespace mtt::moshi {

namespace {

std::string fmt_double(double v) {
  std::ostringstream s;
  s.precision(8);
  s << v;
  return s.str();
}

// Collects declarations in order; `finish` sorts and indexes them.
class Builder {
 public:
  explicit Builder(const SchemaConfig& c) : c_(c) {}

  ParamDecl& add(std::string name, std::vector<int64_t> shape, std::string module, std::string role, InitRule init,
                 int layer = -1) {
    ParamDecl d;
    d.name = std::move(name);
    d.shape = std::move(shape);
    d.module = std::move(module);
    d.role = std::move(role);
    d.init = std::move(init);
    d.layer = layer;
    out_.push_back(std::move(d));
    return out_.back();
  }

  // A Linear(in -> out, no bias) of the Moshi LM: torch's default init U(+-1/sqrt(in)); LoRA-wrapped
  // when lora_rank > 0 (docs/checkpoint-keys.md §1.3, docs/moshi.md §4.1: frozen_W + lora_A [r, in] + lora_B [out, r]).
  // Returns the key(s) holding the effective weight as terms (for products).
  std::vector<std::vector<std::string>> linear(const std::string& base, int64_t out, int64_t in,
                                               const std::string& module, int layer, bool lora_ok = true) {
    const double bound = 1.0 / std::sqrt(static_cast<double>(in));
    if (c_.ttt.lora_rank > 0 && lora_ok) {
      const int64_t r = c_.ttt.lora_rank;
      add(base + ".frozen_W.weight", {out, in}, module, "linear", InitRule::uniform(bound), layer);
      add(base + ".lora_A.weight", {r, in}, "lora", "lora_A", InitRule::uniform(bound), layer);
      add(base + ".lora_B.weight", {out, r}, "lora", "lora_B", InitRule::zeros(), layer);
      ProductDecl p;
      p.name = base + ".lora";
      p.factors = {{{base + ".lora_B.weight"}}, {{base + ".lora_A.weight"}}};
      p.factor_names = {"lora_B", "lora_A"};
      p.remedy = "initialise lora_A with kaiming-uniform (moshi modules/lora.py) so that lora_B gets a gradient";
      products_.push_back(std::move(p));
      return {{base + ".frozen_W.weight"}, {base + ".lora_B.weight", base + ".lora_A.weight"}};
    }
    add(base + ".weight", {out, in}, module, "linear", InitRule::uniform(bound), layer);
    return {{base + ".weight"}};
  }

  void norm(const std::string& base, int64_t dim, const std::string& module, int layer) {
    if (c_.layer_norm) {
      add(base + ".weight", {dim}, module, "norm_gain", InitRule::ones(), layer);
      add(base + ".bias", {dim}, module, "norm_bias", InitRule::zeros(), layer);
    } else {
      add(base + ".alpha", {1, 1, dim}, module, "norm_gain", InitRule::ones(), layer);
    }
  }

  // Attention projections with `mult` weight sets (docs/moshi.md §2.3, §3, §4.1).
  void attention(const std::string& p, int64_t dim, int64_t mult, const std::string& module, int layer) {
    const bool lora = c_.ttt.lora_rank > 0;
    if (c_.fused_attention_names && !lora) {
      const double bound = 1.0 / std::sqrt(static_cast<double>(dim));
      add(p + "self_attn.in_proj_weight", {mult * 3 * dim, dim}, module, "linear", InitRule::uniform(bound), layer);
      add(p + "self_attn.out_proj.weight", {mult * dim, dim}, module, "linear", InitRule::uniform(bound), layer);
      return;
    }
    for (int64_t k = 0; k < mult; ++k)
      linear(p + "self_attn.in_projs." + std::to_string(k), 3 * dim, dim, module, layer);
    for (int64_t k = 0; k < mult; ++k)
      linear(p + "self_attn.out_projs." + std::to_string(k), dim, dim, module, layer);
  }

  // Moshi FFN: gated (linear_in [2*hid, D], linear_out [D, hid]) or plain (linear1, linear2).
  // Returns the first declared index so callers can adjust consumption.
  void ffn(const std::string& p, int64_t dim, int64_t dff, int64_t hid, const std::string& module, int layer,
           bool gated) {
    if (gated) {
      linear(p + "linear_in", 2 * hid, dim, module, layer);
      linear(p + "linear_out", dim, hid, module, layer);
    } else {
      linear(p + "linear1", dff, dim, module, layer);
      linear(p + "linear2", dim, dff, module, layer);
    }
  }

  // One plain Moshi transformer layer (docs/moshi.md §2.2): norm1, attention, norm2, FFN.
  void moshi_layer(const std::string& p, int layer) {
    norm(p + "norm1", c_.dim, "transformer.norm", layer);
    attention(p, c_.dim, 1, "transformer.attn", layer);
    norm(p + "norm2", c_.dim, "transformer.norm", layer);
    ffn(c_.gating ? p + "gating." : p, c_.dim, c_.dim_feedforward, c_.ffn_hidden(), "transformer.ffn", layer,
        c_.gating);
  }

  // Fork hybrid layer (docs/checkpoint-keys.md §1.1-1.3): the Moshi layer under original_layer.*, the
  // same tensors again under seq_modeling_block.original_layer.*, the TTT wrapper and two gates.
  void fork_layer(const std::string& p, int layer) {
    const auto& t = c_.ttt;
    const std::size_t first = out_.size();
    moshi_layer(p + "original_layer.", layer);
    const std::size_t last = out_.size();
    for (std::size_t i = first; i < last; ++i) {
      ParamDecl d = out_[i];
      d.duplicate_of = d.name;
      d.name = p + "seq_modeling_block." + d.name.substr(p.size());
      d.module = "hybrid.original_layer_copy";
      out_.push_back(std::move(d));
    }
    const int64_t D = c_.dim, H = t.ttt_heads, d = D / H;
    const std::string q = p + "seq_modeling_block.ttt_layer.ttt.";
    // docs/ttt.md §1.1 parameter table: projections N(0, 0.02); biases keep torch's default U(+-1/sqrt(D)).
    for (const char* w : {"wq", "wk", "wv", "wo"}) {
      auto& wd = add(q + w + ".weight", {D, D}, "ttt.proj", "linear", InitRule::normal(0.02), layer);
      const bool is_wo = std::string(w) == "wo";
      if (is_wo && !t.output_post_norm_wo) unskip(wd);
      if (t.proj_bias) {
        auto& bd = add(q + w + ".bias", {D}, "ttt.proj", "proj_bias",
                       InitRule::uniform(1.0 / std::sqrt(static_cast<double>(D))), layer);
        if (is_wo && !t.output_post_norm_wo) unskip(bd);
      }
    }
    add(q + "learnable_ttt_lr_weight", {H, 1, D}, "ttt.lr_gate", "lr_gate_weight", InitRule::normal(0.02), layer);
    add(q + "learnable_ttt_lr_bias", {H, 1}, "ttt.lr_gate", "lr_gate_bias", InitRule::zeros(), layer);
    add(q + "ttt_norm_weight", {H, d}, "ttt.norm", "norm_gain", InitRule::ones(), layer);
    add(q + "ttt_norm_bias", {H, d}, "ttt.norm", "norm_bias", InitRule::zeros(), layer);
    if (t.causal_eta)
      add(q + "learnable_token_idx", {t.mini_batch_size}, "ttt.token_idx", "token_idx", InitRule::zeros(), layer);
    // Inner model W0 (docs/ttt.md §1.1 table; docs/checkpoint-keys.md §1.2 variants).
    const int n = std::max(1, t.ttt_mlp_layers);
    std::vector<int64_t> m{d};
    if (n >= 2) {
      if (n >= 3 && !t.ttt_mlp_hidden_dims.empty()) {
        for (int64_t h : t.ttt_mlp_hidden_dims) m.push_back(h);
      } else {
        const int64_t e = static_cast<int64_t>(static_cast<double>(d) * t.ttt_mlp_expansion_factor);
        for (int k = 0; k < n - 1; ++k) m.push_back(e);
      }
    }
    m.push_back(d);
    if (static_cast<int>(m.size()) != n + 1)
      throw Error("", "ttt_mlp_hidden_dims", "expected " + std::to_string(n - 1) + " hidden widths", ErrorKind::Usage);
    for (int k = 0; k < n; ++k) {
      const std::string wn = n >= 3 ? "weights." + std::to_string(k) : "W" + std::to_string(k + 1);
      const std::string bn = n >= 3 ? "biases." + std::to_string(k) : "b" + std::to_string(k + 1);
      add(q + wn, {H, m[k], m[k + 1]}, "ttt.inner", "inner_weight", InitRule::normal(0.02), layer);
      add(q + bn, {H, 1, m[k + 1]}, "ttt.inner", "inner_bias", InitRule::zeros(), layer);
    }
    for (const char* nm : {"post_norm.weight", "post_norm.bias"}) {
      auto& pd = add(q + nm, {D}, "ttt.post_norm", std::string(nm) == "post_norm.weight" ? "norm_gain" : "norm_bias",
                     std::string(nm) == "post_norm.weight" ? InitRule::ones() : InitRule::zeros(), layer);
      if (!t.output_post_norm_wo) unskip(pd);
    }
    const std::string fwd = p + "seq_modeling_block.forward_ssm_gating.gating_alpha";
    const std::string bwd = p + "seq_modeling_block.backward_ssm_gating.gating_alpha";
    add(fwd, {D}, "ttt.gating", "gate_alpha", InitRule::constant(t.initial_gating_alpha), layer);
    auto& bd = add(bwd, {D}, "ttt.gating", "gate_alpha", InitRule::constant(t.initial_gating_alpha), layer);
    if (!t.bidirectional) {
      bd.consumed = false;
      bd.unused_reason =
          "backward gate of VDIT's reverse pass; the causal Moshi hybrid runs forward only (docs/ttt.md §4, seed 000)";
    }
    gates_.push_back({layer, fwd, bwd});
  }

  // In-Place TTT layer (docs/checkpoint-keys.md §2.2-2.3): plain attention/norms, the gated FFN keeps
  // linear_in (slow), linear_out is replaced by the fast weight w_down.
  void inplace_layer(const std::string& p, int layer) {
    if (!c_.gating)
      throw Error("", "gating", "In-Place TTT needs the gated FFN (docs/moshi.md §2.5)", ErrorKind::Usage);
    const auto& t = c_.ttt;
    const int64_t D = c_.dim, hid = c_.ffn_hidden();
    norm(p + "norm1", D, "transformer.norm", layer);
    attention(p, D, 1, "transformer.attn", layer);
    norm(p + "norm2", D, "transformer.norm", layer);
    const std::string g = p + "gating.";
    linear(g + "linear_in", 2 * hid, D, "transformer.ffn", layer);
    const std::size_t lo_first = out_.size();
    linear(g + "linear_out", D, hid, "transformer.ffn", layer);
    const std::string lo_key = out_[lo_first].name;  // .weight or .frozen_W.weight
    for (std::size_t i = lo_first; i < out_.size(); ++i) {
      out_[i].consumed = false;
      out_[i].unused_reason = "kept for the non-TTT path; the TTT forward multiplies by w_down (docs/checkpoint-keys.md §2.2)";
    }
    add(g + "w_down", {D, hid}, "inplace.fast_weight", "fast_weight", InitRule::copy(lo_key), layer);
    auto& wp = add(g + "w_down_pretrained", {D, hid}, "inplace.fast_weight", "fast_weight", InitRule::copy(lo_key), layer);
    wp.buffer = true;
    wp.consumed = false;
    wp.unused_reason = "reset copy of w_down; the library resets the TTT state from w_down (architecture: parameters are W0)";
    const std::string tg = g + "target_generator.";
    const int64_t k = t.conv_kernel_size;
    InitRule conv_init = InitRule::normal(1e-2), wt_init = InitRule::normal(1e-2);
    switch (t.inplace_init) {
      case InplaceInit::port_finetune: break;
      case InplaceInit::port_loader: conv_init = wt_init = InitRule::normal(1e-4); break;
      case InplaceInit::official: conv_init = InitRule::zeros(); wt_init = InitRule::diagonal(0.02); break;
      case InplaceInit::zero: conv_init = wt_init = InitRule::zeros(); break;
    }
    add(tg + "conv1d.conv.weight", {D, D, k}, "inplace.target_generator", "conv", conv_init, layer);
    const std::size_t wt_first = out_.size();
    auto wt_terms = linear(tg + "W_target", D, D, "inplace.target_generator", layer);
    out_[wt_first].init = wt_init;
    out_[wt_first].role = "target_proj";
    ProductDecl pr;
    pr.name = tg.substr(0, tg.size() - 1);
    pr.factors = {{{tg + "conv1d.conv.weight"}}, wt_terms};
    pr.factor_names = {"conv1d.conv.weight", "W_target"};
    pr.remedy =
        "initialise conv1d.conv.weight and W_target with small non-zero values, e.g. N(0, 1e-4) "
        "(seed 003); with both exactly zero V_hat = 0 and neither ever gets a gradient";
    products_.push_back(std::move(pr));
  }

  ModelSchema finish() {
    ModelSchema s;
    s.config = c_;
    std::sort(out_.begin(), out_.end(), [](const ParamDecl& a, const ParamDecl& b) { return a.name < b.name; });
    for (std::size_t i = 0; i + 1 < out_.size(); ++i)
      if (out_[i].name == out_[i + 1].name)
        throw Error("", out_[i].name, "declared twice (internal schema error)", ErrorKind::Internal);
    s.params = std::move(out_);
    s.products = std::move(products_);
    s.gates = std::move(gates_);
    return s;
  }

 private:
  void unskip(ParamDecl& d) {
    d.consumed = false;
    d.unused_reason = "the fork's TTTWrapper returns the op output directly, skipping post_norm and wo (docs/ttt.md §6)";
  }

  const SchemaConfig& c_;
  std::vector<ParamDecl> out_;
  std::vector<ProductDecl> products_;
  std::vector<GateDecl> gates_;
};

}  // namespace

std::string InitRule::describe() const {
  switch (kind) {
    case InitKind::normal: return "N(0, " + fmt_double(a) + ")";
    case InitKind::uniform: return "U(-" + fmt_double(a) + ", " + fmt_double(a) + ")";
    case InitKind::constant: return "const " + fmt_double(a);
    case InitKind::diagonal: return "diag N(0, " + fmt_double(a) + ")";
    case InitKind::copy_of: return "copy of " + source;
  }
  return "?";
}

const char* ttt_variant_name(TTTVariant v) {
  switch (v) {
    case TTTVariant::none: return "none";
    case TTTVariant::fork_hybrid: return "fork_hybrid";
    case TTTVariant::inplace: return "inplace";
  }
  return "?";
}

int64_t SchemaConfig::gating_hidden(int64_t dim, int64_t dim_feedforward) {
  // docs/moshi.md §1 / modules/gating.py: 21*D//8 when F == 4*D, else 2*F//3.
  if (dim_feedforward == 4 * dim) return 21 * dim / 8;
  return 2 * dim_feedforward / 3;
}

int64_t SchemaConfig::depformer_num_in() const {
  if (!depformer_multi_linear) return 1;
  return depformer_weights_per_step >= 1 ? depformer_weights_per_step : dep_q;
}

bool SchemaConfig::is_ttt_layer(int layer) const {
  return ttt.variant != TTTVariant::none && std::find(ttt.layers.begin(), ttt.layers.end(), layer) != ttt.layers.end();
}

SchemaConfig SchemaConfig::moshiko_7b() { return SchemaConfig{}; }

SchemaConfig SchemaConfig::tiny(TTTVariant variant) {
  // docs/moshi.md §7 sizes (dim 64, 4 layers so that "middle" = layers 1, 2 as the fork's rule gives).
  SchemaConfig c;
  c.dim = 64;
  c.num_heads = 4;
  c.num_layers = 4;
  c.dim_feedforward = static_cast<int64_t>(4.125 * 64);  // 264 -> hidden 176
  c.text_card = 48;
  c.card = 32;
  c.n_q = 6;
  c.dep_q = 3;
  c.depformer_dim = 16;
  c.depformer_num_heads = 2;
  c.depformer_num_layers = 2;
  c.depformer_dim_feedforward = static_cast<int64_t>(4.125 * 16);
  c.depformer_weights_per_step = 3;
  c.depformer_multi_linear = true;
  c.ttt.variant = variant;
  if (variant == TTTVariant::fork_hybrid) {
    c.ttt.layers = {1, 2};
    c.ttt.ttt_heads = 4;
    c.ttt.initial_gating_alpha = 0.3;  // the user's runs (seed 000/001)
  } else if (variant == TTTVariant::inplace) {
    c.ttt.layers = {1, 3};  // start 1, every 2nd (docs/checkpoint-keys.md §2.1 rule at tiny size)
  }
  return c;
}

int64_t ParamDecl::numel() const {
  int64_t n = 1;
  for (int64_t s : shape) n *= s;
  return n;
}

const ParamDecl* ModelSchema::find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &params[it->second];
}

std::vector<std::string> ModelSchema::consumed_names() const {
  std::vector<std::string> r;
  for (const auto& p : params)
    if (p.consumed) r.push_back(p.name);
  return r;
}

std::vector<std::string> ModelSchema::unused_names() const {
  std::vector<std::string> r;
  for (const auto& p : params)
    if (!p.consumed) r.push_back(p.name);
  return r;
}

int64_t ModelSchema::total_params() const {
  int64_t n = 0;
  for (const auto& p : params) n += p.numel();
  return n;
}

namespace {
const char* inplace_init_name(InplaceInit i) {
  switch (i) {
    case InplaceInit::port_finetune: return "port_finetune";
    case InplaceInit::port_loader: return "port_loader";
    case InplaceInit::official: return "official";
    case InplaceInit::zero: return "zero";
  }
  return "?";
}
}  // namespace

std::string schema_config_to_json(const SchemaConfig& c) {
  nlohmann::json t = {{"variant", ttt_variant_name(c.ttt.variant)},
                      {"layers", c.ttt.layers},
                      {"ttt_heads", c.ttt.ttt_heads},
                      {"ttt_mlp_layers", c.ttt.ttt_mlp_layers},
                      {"ttt_mlp_expansion_factor", c.ttt.ttt_mlp_expansion_factor},
                      {"ttt_mlp_hidden_dims", c.ttt.ttt_mlp_hidden_dims},
                      {"proj_bias", c.ttt.proj_bias},
                      {"causal_eta", c.ttt.causal_eta},
                      {"mini_batch_size", c.ttt.mini_batch_size},
                      {"output_post_norm_wo", c.ttt.output_post_norm_wo},
                      {"bidirectional", c.ttt.bidirectional},
                      {"initial_gating_alpha", c.ttt.initial_gating_alpha},
                      {"conv_kernel_size", c.ttt.conv_kernel_size},
                      {"inplace_init", inplace_init_name(c.ttt.inplace_init)},
                      {"lora_rank", c.ttt.lora_rank},
                      {"lora_scaling", c.ttt.lora_scaling}};
  nlohmann::json j = {{"dim", c.dim},
                      {"num_heads", c.num_heads},
                      {"num_layers", c.num_layers},
                      {"dim_feedforward", c.dim_feedforward},
                      {"gating", c.gating},
                      {"layer_norm", c.layer_norm},
                      {"text_card", c.text_card},
                      {"card", c.card},
                      {"n_q", c.n_q},
                      {"dep_q", c.dep_q},
                      {"depformer_dim", c.depformer_dim},
                      {"depformer_num_heads", c.depformer_num_heads},
                      {"depformer_num_layers", c.depformer_num_layers},
                      {"depformer_dim_feedforward", c.depformer_dim_feedforward},
                      {"depformer_weights_per_step", c.depformer_weights_per_step},
                      {"depformer_multi_linear", c.depformer_multi_linear},
                      {"depformer_gating", c.depformer_gating},
                      {"depformer_low_rank_embeddings", c.depformer_low_rank_embeddings},
                      {"fused_attention_names", c.fused_attention_names},
                      {"ttt", t}};
  return j.dump();
}

SchemaConfig schema_config_from_json(const std::string& text, const std::string& file) {
  SchemaConfig c;
  try {
    const auto j = nlohmann::json::parse(text);
    auto get = [&](const nlohmann::json& o, const char* k, auto& v) {
      if (o.contains(k) && !o[k].is_null()) o[k].get_to(v);
    };
    get(j, "dim", c.dim);
    get(j, "num_heads", c.num_heads);
    get(j, "num_layers", c.num_layers);
    get(j, "dim_feedforward", c.dim_feedforward);
    get(j, "gating", c.gating);
    get(j, "layer_norm", c.layer_norm);
    get(j, "text_card", c.text_card);
    get(j, "card", c.card);
    get(j, "n_q", c.n_q);
    get(j, "dep_q", c.dep_q);
    get(j, "depformer_dim", c.depformer_dim);
    get(j, "depformer_num_heads", c.depformer_num_heads);
    get(j, "depformer_num_layers", c.depformer_num_layers);
    get(j, "depformer_dim_feedforward", c.depformer_dim_feedforward);
    get(j, "depformer_weights_per_step", c.depformer_weights_per_step);
    get(j, "depformer_multi_linear", c.depformer_multi_linear);
    get(j, "depformer_gating", c.depformer_gating);
    get(j, "depformer_low_rank_embeddings", c.depformer_low_rank_embeddings);
    get(j, "fused_attention_names", c.fused_attention_names);
    if (j.contains("ttt")) {
      const auto& t = j["ttt"];
      std::string v = "none", ii = "port_finetune";
      get(t, "variant", v);
      if (v == "fork_hybrid") c.ttt.variant = TTTVariant::fork_hybrid;
      else if (v == "inplace") c.ttt.variant = TTTVariant::inplace;
      else if (v == "none") c.ttt.variant = TTTVariant::none;
      else throw Error(file, "mtt.schema_config", "unknown ttt.variant '" + v + "'");
      get(t, "layers", c.ttt.layers);
      get(t, "ttt_heads", c.ttt.ttt_heads);
      get(t, "ttt_mlp_layers", c.ttt.ttt_mlp_layers);
      get(t, "ttt_mlp_expansion_factor", c.ttt.ttt_mlp_expansion_factor);
      get(t, "ttt_mlp_hidden_dims", c.ttt.ttt_mlp_hidden_dims);
      get(t, "proj_bias", c.ttt.proj_bias);
      get(t, "causal_eta", c.ttt.causal_eta);
      get(t, "mini_batch_size", c.ttt.mini_batch_size);
      get(t, "output_post_norm_wo", c.ttt.output_post_norm_wo);
      get(t, "bidirectional", c.ttt.bidirectional);
      get(t, "initial_gating_alpha", c.ttt.initial_gating_alpha);
      get(t, "conv_kernel_size", c.ttt.conv_kernel_size);
      get(t, "inplace_init", ii);
      for (auto i : {InplaceInit::port_finetune, InplaceInit::port_loader, InplaceInit::official, InplaceInit::zero})
        if (ii == inplace_init_name(i)) c.ttt.inplace_init = i;
      get(t, "lora_rank", c.ttt.lora_rank);
      get(t, "lora_scaling", c.ttt.lora_scaling);
    }
  } catch (const nlohmann::json::exception& e) {
    throw Error(file, "mtt.schema_config", std::string("malformed: ") + e.what());
  }
  return c;
}

ModelSchema declare_parameters(const SchemaConfig& c) {
  auto usage = [](const std::string& key, const std::string& why) { return Error("", key, why, ErrorKind::Usage); };
  if (c.dim <= 0 || c.num_layers < 0 || c.num_heads <= 0 || c.dim % c.num_heads != 0)
    throw usage("dim", "dim must be a positive multiple of num_heads");
  if (c.n_q < c.dep_q || c.dep_q < 0) throw usage("dep_q", "dep_q must be in [0, n_q]");
  for (int l : c.ttt.layers)
    if (l < 0 || l >= c.num_layers) throw usage("ttt.layers", "layer " + std::to_string(l) + " out of range");
  if (c.ttt.variant == TTTVariant::fork_hybrid) {
    if (c.ttt.ttt_heads <= 0 || c.dim % c.ttt.ttt_heads != 0)
      throw usage("ttt.num_heads", "dim must be a positive multiple of the TTT heads");
    if (c.ttt.causal_eta && c.ttt.mini_batch_size <= 0) throw usage("ttt.mini_batch_size", "must be positive");
  }

  Builder b(c);
  const int64_t D = c.dim;
  // Embeddings: nn.Embedding default N(0, 1); one extra row for the start token (docs/moshi.md §4.2).
  b.add("text_emb.weight", {c.text_card + 1, D}, "text_emb", "embedding", InitRule::normal(1.0));
  for (int64_t k = 0; k < c.n_q; ++k)
    b.add("emb." + std::to_string(k) + ".weight", {c.card + 1, D}, "emb", "embedding", InitRule::normal(1.0));
  for (int l = 0; l < c.num_layers; ++l) {
    const std::string p = "transformer.layers." + std::to_string(l) + ".";
    if (c.is_ttt_layer(l) && c.ttt.variant == TTTVariant::fork_hybrid)
      b.fork_layer(p, l);
    else if (c.is_ttt_layer(l) && c.ttt.variant == TTTVariant::inplace)
      b.inplace_layer(p, l);
    else
      b.moshi_layer(p, l);
  }
  b.norm("out_norm", D, "transformer.out_norm", -1);
  b.linear("text_linear", c.text_card, D, "text_linear", -1);

  if (c.dep_q > 0) {
    const int64_t dd = c.depformer_dim;
    if (dd <= 0 || c.depformer_num_heads <= 0 || dd % c.depformer_num_heads != 0)
      throw usage("depformer_dim", "must be a positive multiple of depformer_num_heads");
    const int64_t n_in = c.depformer_num_in();
    for (int64_t k = 0; k < n_in; ++k) b.linear("depformer_in." + std::to_string(k), dd, D, "depformer_in", -1);
    auto emb = [&](const std::string& base, int64_t rows) {
      if (c.depformer_low_rank_embeddings > 0) {
        const int64_t r = c.depformer_low_rank_embeddings;
        b.add(base + ".weight", {rows, r}, "depformer.emb", "embedding", InitRule::normal(1.0));
        b.linear(base + ".low_rank", dd, r, "depformer.emb", -1);
      } else {
        b.add(base + ".weight", {rows, dd}, "depformer.emb", "embedding", InitRule::normal(1.0));
      }
    };
    emb("depformer_text_emb", c.text_card + 1);
    for (int64_t k = 0; k + 1 < c.dep_q; ++k) emb("depformer_emb." + std::to_string(k), c.card + 1);
    const int64_t mult = std::max<int64_t>(1, c.depformer_weights_per_step);
    const int64_t dhid = c.depformer_ffn_hidden();
    for (int64_t l = 0; l < c.depformer_num_layers; ++l) {
      const std::string p = "depformer.layers." + std::to_string(l) + ".";
      b.norm(p + "norm1", dd, "depformer.norm", -1);
      b.attention(p, dd, mult, "depformer.attn", -1);
      b.norm(p + "norm2", dd, "depformer.norm", -1);
      const bool gated = c.depformer_gated();
      for (int64_t k = 0; k < mult; ++k) {
        const std::string g = gated ? (mult > 1 ? p + "gating." + std::to_string(k) + "." : p + "gating.") : p;
        b.ffn(g, dd, c.depformer_dim_feedforward, dhid, "depformer.ffn", -1, gated);
        if (!gated) break;  // the plain FFN is not replicated per step
      }
    }
    for (int64_t k = 0; k < c.dep_q; ++k) b.linear("linears." + std::to_string(k), c.card, dd, "depformer.linears", -1);
  }

  ModelSchema s = b.finish();
  for (std::size_t i = 0; i < s.params.size(); ++i) s.index_[s.params[i].name] = i;
  return s;
}

}  // namespace mtt::moshi
