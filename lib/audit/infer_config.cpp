#include "audit/infer_config.h"

#include <algorithm>
#include <map>
#include <regex>
#include <set>
#include <sstream>

#include "core/error.h"

namespace mtt::audit {

using moshi::SchemaConfig;
using moshi::TTTVariant;

namespace {

// Smallest F with gating_hidden(D, F) == hid (docs/moshi.md §1: hid = 2F//3, or 21D/8 when F = 4D).
int64_t feedforward_for_hidden(int64_t dim, int64_t hid) {
  if (hid == 21 * dim / 8 && (21 * dim) % 8 == 0) return 4 * dim;
  int64_t f = (3 * hid + 1) / 2;
  while (2 * f / 3 < hid) ++f;
  return f;
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

struct Keys {
  const io::Checkpoint& ck;
  bool has(const std::string& k) const { return ck.contains(k); }
  std::vector<int64_t> shape(const std::string& k) const { return ck.get(k).shape(); }
  int64_t dim(const std::string& k, std::size_t i) const {
    auto s = shape(k);
    if (i >= s.size()) throw Error(ck.path(), k, "unexpected rank " + std::to_string(s.size()));
    return s[i];
  }
};

}  // namespace

std::vector<int> parse_layer_list(const std::string& spec, int n, const std::string& what) {
  std::vector<int> out;
  if (spec == "all") {
    for (int i = 0; i < n; ++i) out.push_back(i);
  } else if (spec == "middle") {
    for (int i = n / 4; i < 3 * n / 4; ++i) out.push_back(i);
  } else if (spec == "none" || spec.empty()) {
  } else {
    std::stringstream ss(spec);
    std::string item;
    while (std::getline(ss, item, ',')) {
      std::size_t pos = 0;
      int v = -1;
      try {
        v = std::stoi(item, &pos);
      } catch (...) {
        pos = 0;
      }
      if (pos == 0 || pos != item.size() || v < 0)
        throw Error("", what, "not a layer list (\"29,30,31\", all, middle, none): '" + spec + "'", ErrorKind::Usage);
      // A layer the checkpoint does not have would silently filter everything out.
      if (n > 0 && v >= n)
        throw Error("", what, "layer " + item + " out of range (the checkpoint has " + std::to_string(n) + " layers: 0.." +
                                  std::to_string(n - 1) + ")", ErrorKind::Usage);
      out.push_back(v);
    }
  }
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

InferredConfig infer_config(const io::Checkpoint& ck) {
  InferredConfig r;
  SchemaConfig& c = r.config;
  const std::string& path = ck.path();
  auto note = [&](const std::string& s) { r.notes.push_back(s); };

  auto meta = ck.metadata().find("mtt.schema_config");
  if (meta != ck.metadata().end()) {
    c = moshi::schema_config_from_json(meta->second, path);
    r.source = "metadata";
    r.has_lm = ck.contains("text_emb.weight");
    r.partial = !r.has_lm;
    note("configuration from the checkpoint's mtt.schema_config metadata");
    return r;
  }

  Keys K{ck};
  static const std::regex layer_re(R"(^transformer\.layers\.(\d+)\.(.*)$)");
  static const std::regex dep_layer_re(R"(^depformer\.layers\.(\d+)\.(.*)$)");
  int max_layer = -1, max_dep_layer = -1;
  std::set<int> fork_layers, inplace_layers;
  std::map<int, std::string> layer_prefix;  // a layer's Moshi prefix (plain or original_layer.)
  int64_t n_q = 0, dep_in = 0, dep_emb = 0, linears = 0, lora_rank = 0;
  bool fused = false, layer_norm = false, saw_rms = false;
  std::string any_fork_layer_key;
  for (const auto& k : ck.keys()) {
    std::smatch m;
    if (std::regex_match(k, m, layer_re)) {
      const int l = std::stoi(m[1].str());
      const std::string rest = m[2].str();
      max_layer = std::max(max_layer, l);
      if (rest.rfind("seq_modeling_block.", 0) == 0) fork_layers.insert(l);
      if (rest.rfind("gating.target_generator.", 0) == 0 || rest == "gating.w_down") inplace_layers.insert(l);
    } else if (std::regex_match(k, m, dep_layer_re)) {
      max_dep_layer = std::max(max_dep_layer, std::stoi(m[1].str()));
    }
    if (k.find("self_attn.in_proj_weight") != std::string::npos) fused = true;
    if (ends_with(k, "norm1.alpha")) saw_rms = true;
    if (ends_with(k, "norm1.bias")) layer_norm = true;
    if (ends_with(k, ".lora_A.weight")) lora_rank = K.dim(k, 0);
    if (k.rfind("emb.", 0) == 0) ++n_q;
    if (k.rfind("depformer_in.", 0) == 0 && k.find("lora_") == std::string::npos) ++dep_in;
    if (k.rfind("depformer_emb.", 0) == 0 && ends_with(k, ".weight") && k.find("low_rank") == std::string::npos)
      ++dep_emb;
    if (k.rfind("linears.", 0) == 0 && k.find("lora_") == std::string::npos) ++linears;
  }
  if (max_layer < 0 && !ck.contains("text_emb.weight"))
    throw Error(path, "", "not a Moshi or Moshi-TTT checkpoint: no transformer.layers.* or text_emb.weight key");

  r.has_lm = ck.contains("text_emb.weight");
  r.partial = !r.has_lm;
  c.fused_attention_names = fused && lora_rank == 0;
  c.layer_norm = layer_norm && !saw_rms;
  c.ttt.lora_rank = static_cast<int>(lora_rank);
  if (lora_rank) note("LoRA rank " + std::to_string(lora_rank) + " from *.lora_A.weight");

  const std::string tp = "transformer.";
  // Width: embeddings, else any layer tensor whose last dim is D.
  auto first_with = [&](const std::string& suffix, const std::string& prefix = "") -> std::string {
    for (const auto& k : ck.keys())
      if (k.size() >= suffix.size() && k.compare(k.size() - suffix.size(), suffix.size(), suffix) == 0 &&
          k.rfind(prefix, 0) == 0)
        return k;
    return {};
  };
  if (r.has_lm) {
    c.dim = K.dim("text_emb.weight", 1);
    c.text_card = K.dim("text_emb.weight", 0) - 1;
    note("dim " + std::to_string(c.dim) + ", text_card " + std::to_string(c.text_card) + " from text_emb.weight");
  } else if (auto k = first_with("norm1.alpha", tp); !k.empty()) {
    c.dim = K.dim(k, 2);
    note("dim " + std::to_string(c.dim) + " from " + k);
  } else if (auto k2 = first_with("ttt.wq.weight"); !k2.empty()) {
    c.dim = K.dim(k2, 1);
    note("dim " + std::to_string(c.dim) + " from " + k2);
  } else if (auto k3 = first_with("target_generator.W_target.weight"); !k3.empty()) {
    c.dim = K.dim(k3, 1);
    note("dim " + std::to_string(c.dim) + " from " + k3);
  } else if (auto k4 = first_with("target_generator.conv1d.conv.weight"); !k4.empty()) {
    c.dim = K.dim(k4, 0);
    note("dim " + std::to_string(c.dim) + " from " + k4);
  } else if (auto k5 = first_with("ssm_gating.gating_alpha"); !k5.empty()) {
    c.dim = K.dim(k5, 0);
    note("dim " + std::to_string(c.dim) + " from " + k5);
  } else {
    throw Error(path, "", "cannot infer the model width: no embedding, norm or TTT projection key");
  }
  c.num_layers = max_layer + 1;
  note("num_layers " + std::to_string(c.num_layers) + " from the highest transformer.layers index" +
       (r.has_lm ? "" : " (partial file: a lower bound)"));
  if (n_q > 0) {
    c.n_q = n_q;
    c.card = K.dim("emb.0.weight", 0) - 1;
  }
  if (ck.contains("text_linear.weight")) c.text_card = K.dim("text_linear.weight", 0);

  // FFN width from any Moshi layer.
  if (auto k = first_with("gating.linear_in.weight", tp); !k.empty()) {
    c.gating = true;
    c.dim_feedforward = feedforward_for_hidden(c.dim, K.dim(k, 0) / 2);
  } else if (auto k1 = first_with("gating.linear_in.frozen_W.weight", tp); !k1.empty()) {
    c.gating = true;
    c.dim_feedforward = feedforward_for_hidden(c.dim, K.dim(k1, 0) / 2);
  } else if (auto k2 = first_with("gating.w_down", tp); !k2.empty()) {
    c.gating = true;
    c.dim_feedforward = feedforward_for_hidden(c.dim, K.dim(k2, 1));
  } else if (auto k3 = first_with(".linear1.weight", tp); !k3.empty()) {
    c.gating = false;
    c.dim_feedforward = K.dim(k3, 0);
  }

  // Depformer.
  c.dep_q = linears;
  if (linears > 0 || dep_in > 0) {
    c.depformer_multi_linear = dep_in > 1;  // (a single depformer_in cannot tell; both declare one key)
    const std::string din = ck.contains("depformer_in.0.weight") ? "depformer_in.0.weight" : "depformer_in.0.frozen_W.weight";
    if (ck.contains(din)) c.depformer_dim = K.dim(din, 0);
    c.depformer_num_layers = max_dep_layer + 1;
    if (ck.contains("depformer_text_emb.low_rank.weight"))
      c.depformer_low_rank_embeddings = K.dim("depformer_text_emb.weight", 1);
    else
      c.depformer_low_rank_embeddings = 0;
    int64_t steps = 0;
    while (ck.contains("depformer.layers.0.gating." + std::to_string(steps) + ".linear_in.weight") ||
           ck.contains("depformer.layers.0.gating." + std::to_string(steps) + ".linear_in.frozen_W.weight"))
      ++steps;
    if (steps == 0 && ck.contains("depformer.layers.0.self_attn.in_proj_weight"))
      steps = K.dim("depformer.layers.0.self_attn.in_proj_weight", 0) / (3 * c.depformer_dim);
    if (steps == 0 && ck.contains("depformer.layers.0.self_attn.in_projs.0.weight")) {
      while (ck.contains("depformer.layers.0.self_attn.in_projs." + std::to_string(steps) + ".weight")) ++steps;
    }
    c.depformer_weights_per_step = steps;
    const std::string g = ck.contains("depformer.layers.0.gating.0.linear_in.weight") ? "depformer.layers.0.gating.0."
                                                                                       : "depformer.layers.0.gating.";
    if (ck.contains(g + "linear_in.weight")) {
      c.depformer_gating = 1;
      c.depformer_dim_feedforward = feedforward_for_hidden(c.depformer_dim, K.dim(g + "linear_in.weight", 0) / 2);
    } else if (ck.contains("depformer.layers.0.linear1.weight")) {
      c.depformer_gating = 0;
      c.depformer_dim_feedforward = K.dim("depformer.layers.0.linear1.weight", 0);
    }
    c.depformer_num_heads = std::max<int64_t>(1, c.depformer_dim / 64);
    if (c.depformer_dim % c.depformer_num_heads) c.depformer_num_heads = 1;
    note("depformer: dim " + std::to_string(c.depformer_dim) + ", " + std::to_string(c.depformer_num_layers) +
         " layers, " + std::to_string(steps) + " weight sets, dep_q " + std::to_string(c.dep_q) +
         " from shapes; heads assumed dim/64");
  } else {
    c.dep_q = 0;
  }
  (void)dep_emb;

  // TTT layers and variant from key names.
  if (!fork_layers.empty() && !inplace_layers.empty())
    throw Error(path, "", "both fork hybrid (seq_modeling_block.*) and In-Place (gating.target_generator.*) TTT keys");
  if (!fork_layers.empty()) {
    auto& t = c.ttt;
    t.variant = TTTVariant::fork_hybrid;
    t.layers.assign(fork_layers.begin(), fork_layers.end());
    const int l0 = t.layers.front();
    const std::string q = "transformer.layers." + std::to_string(l0) + ".seq_modeling_block.ttt_layer.ttt.";
    if (ck.contains(q + "learnable_ttt_lr_weight")) {
      t.ttt_heads = static_cast<int>(K.dim(q + "learnable_ttt_lr_weight", 0));
      note("TTT heads " + std::to_string(t.ttt_heads) + " from learnable_ttt_lr_weight");
    } else if (ck.contains(q + "ttt_norm_weight")) {
      t.ttt_heads = static_cast<int>(K.dim(q + "ttt_norm_weight", 0));
    } else {
      t.ttt_heads = static_cast<int>(std::max<int64_t>(1, c.dim / 128));
      note("TTT heads assumed dim/128");
    }
    if (ck.contains(q + "weights.0")) {
      int n = 0;
      t.ttt_mlp_hidden_dims.clear();
      while (ck.contains(q + "weights." + std::to_string(n))) {
        if (n > 0) t.ttt_mlp_hidden_dims.push_back(K.dim(q + "weights." + std::to_string(n), 1));
        ++n;
      }
      t.ttt_mlp_layers = n;
      note("TTT multi-layer MLP with " + std::to_string(n) + " layers from weights.k");
    } else if (ck.contains(q + "W2")) {
      t.ttt_mlp_layers = 2;
      const int64_t d = K.dim(q + "W1", 1);
      t.ttt_mlp_expansion_factor = static_cast<double>(K.dim(q + "W1", 2)) / static_cast<double>(d);
      note("TTT-MLP (W1, W2) in seq_modeling_block");
    } else if (ck.contains(q + "W1")) {
      t.ttt_mlp_layers = 1;
      note("TTT-Linear (W1 only) in seq_modeling_block");
    }
    t.proj_bias = ck.contains(q + "wq.bias") || !ck.contains(q + "wq.weight");
    if (ck.contains(q + "learnable_token_idx")) {
      t.causal_eta = true;
      t.mini_batch_size = K.dim(q + "learnable_token_idx", 0);
    }
    // The fork's forward skips post_norm/wo and never calls the backward gate (docs/ttt.md §4, §6).
    t.output_post_norm_wo = false;
    t.bidirectional = false;
    c.num_heads = t.ttt_heads;  // the fork takes H from the LM's num_heads (docs/checkpoint-keys.md)
    note("TTT layers " + [&] {
      std::string s;
      for (int l : t.layers) s += (s.empty() ? "" : ",") + std::to_string(l);
      return s;
    }() + " (fork hybrid) from seq_modeling_block.* keys");
  } else if (!inplace_layers.empty()) {
    auto& t = c.ttt;
    t.variant = TTTVariant::inplace;
    t.layers.assign(inplace_layers.begin(), inplace_layers.end());
    const std::string k = "transformer.layers." + std::to_string(t.layers.front()) +
                          ".gating.target_generator.conv1d.conv.weight";
    if (ck.contains(k)) t.conv_kernel_size = static_cast<int>(K.dim(k, 2));
    note("In-Place TTT layers from gating.target_generator.* / gating.w_down keys");
  }
  if (c.ttt.variant != TTTVariant::fork_hybrid) {
    c.num_heads = std::max<int64_t>(1, c.dim / 128);
    if (c.dim % c.num_heads) c.num_heads = 1;
    note("num_heads assumed dim/128 (head_dim of moshiko; not visible in shapes)");
  }

  return r;
}

}  // namespace mtt::audit
