#include "moshi/config.h"

#include <algorithm>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <yaml-cpp/yaml.h>

#include "core/error.h"

namespace mtt::moshi {

using nlohmann::json;

NormKind parse_norm(const std::string& s, const std::string& file, const std::string& key) {
  if (s == "layer_norm") return NormKind::layer_norm;
  if (s == "layer_norm_f32") return NormKind::layer_norm_f32;
  if (s == "rms_norm") return NormKind::rms_norm;
  if (s == "rms_norm_f32") return NormKind::rms_norm_f32;
  throw Error(file, key, "unknown norm '" + s + "' (layer_norm, layer_norm_f32, rms_norm, rms_norm_f32)");
}

PosEmb parse_pos_emb(const std::string& s, const std::string& file, const std::string& key) {
  if (s == "none") return PosEmb::none;
  if (s == "sin") return PosEmb::sin;
  if (s == "rope") return PosEmb::rope;
  if (s == "sin_rope") return PosEmb::sin_rope;
  if (s == "rope_concat") return PosEmb::rope_concat;
  throw Error(file, key, "unknown positional embedding '" + s + "' (none, sin, rope, sin_rope, rope_concat)");
}

const char* norm_name(NormKind n) {
  switch (n) {
    case NormKind::layer_norm: return "layer_norm";
    case NormKind::layer_norm_f32: return "layer_norm_f32";
    case NormKind::rms_norm: return "rms_norm";
    case NormKind::rms_norm_f32: return "rms_norm_f32";
  }
  return "?";
}

const char* pos_emb_name(PosEmb p) {
  switch (p) {
    case PosEmb::none: return "none";
    case PosEmb::sin: return "sin";
    case PosEmb::rope: return "rope";
    case PosEmb::sin_rope: return "sin_rope";
    case PosEmb::rope_concat: return "rope_concat";
  }
  return "?";
}

// create_norm_fn (transformer.py): the *_f32 variants use eps 1e-8, the others 1e-5.
double norm_eps(NormKind n) {
  return (n == NormKind::layer_norm_f32 || n == NormKind::rms_norm_f32) ? 1e-8 : 1e-5;
}
bool norm_is_rms(NormKind n) { return n == NormKind::rms_norm || n == NormKind::rms_norm_f32; }
bool norm_is_f32(NormKind n) { return n == NormKind::layer_norm_f32 || n == NormKind::rms_norm_f32; }

int64_t TransformerConfig::num_weight_sets() const {
  if (weights_per_step <= 0) return 1;
  if (!weights_per_step_schedule.empty())
    return *std::max_element(weights_per_step_schedule.begin(), weights_per_step_schedule.end()) + 1;
  return weights_per_step;
}

int64_t TransformerConfig::weight_index(int64_t step) const {
  if (num_weight_sets() == 1) return 0;
  if (step < 0 || step >= weights_per_step)
    throw Error("", "weights_per_step", "step " + std::to_string(step) + " out of range (" +
                                            std::to_string(weights_per_step) + " steps)", ErrorKind::Internal);
  return weights_per_step_schedule.empty() ? step : weights_per_step_schedule[step];
}

int64_t TransformerConfig::kv_capacity() const {
  if (context) return *context;
  if (weights_per_step > 0) return weights_per_step;
  return 0;
}

// ------------------------------------------------------------------------------------------
// TTT settings

std::vector<int> TTTSettings::resolve_layers(int64_t n, const std::string& file) const {
  std::vector<int> out;
  if (!enable || layers == "none" || layers.empty()) return out;
  if (layers == "all") {
    for (int i = 0; i < n; ++i) out.push_back(i);
    return out;
  }
  if (layers == "middle") {  // fork ttt_integration.py:L35-66
    for (int64_t i = n / 4; i < 3 * n / 4; ++i) out.push_back(static_cast<int>(i));
    return out;
  }
  if (layers == "inplace") {  // checkpoint-keys.md §2.1: i >= start and (i - start) % freq == 0
    for (int64_t i = inplace_start_layer; i < n; i += std::max<int64_t>(1, inplace_layer_frequency))
      out.push_back(static_cast<int>(i));
    return out;
  }
  std::set<int> s;
  std::stringstream ss(layers);
  std::string item;
  while (std::getline(ss, item, ',')) {
    item.erase(0, item.find_first_not_of(" \t"));
    item.erase(item.find_last_not_of(" \t") + 1);
    if (item.empty()) continue;
    size_t pos = 0;
    long v = 0;
    try {
      v = std::stol(item, &pos);
    } catch (...) {
      pos = 0;
    }
    if (pos != item.size())
      throw Error(file, "ttt.layers", "bad layer list '" + layers + "' (none, all, middle or \"29,30,31\")");
    if (v < 0 || v >= n)
      throw Error(file, "ttt.layers", "layer " + item + " out of range for " + std::to_string(n) + " layers");
    s.insert(static_cast<int>(v));
  }
  out.assign(s.begin(), s.end());
  return out;
}

namespace {

// Reads a YAML/JSON scalar with a readable error.
template <typename T>
T yaml_get(const YAML::Node& n, const std::string& key, const std::string& file) {
  try {
    return n.as<T>();
  } catch (const std::exception& e) {
    throw Error(file, "ttt." + key, std::string("bad value: ") + e.what());
  }
}

TTTSettings ttt_from_node(const YAML::Node& root, const std::string& file) {
  TTTSettings t;
  YAML::Node n = root["ttt"] ? root["ttt"] : root;
  if (!n.IsMap()) throw Error(file, "ttt", "expected a mapping");
  for (auto it = n.begin(); it != n.end(); ++it) {
    const std::string k = it->first.as<std::string>();
    const YAML::Node v = it->second;
    if (k == "enable") t.enable = yaml_get<bool>(v, k, file);
    else if (k == "layers") t.layers = yaml_get<std::string>(v, k, file);
    else if (k == "base_lr") t.base_lr = yaml_get<double>(v, k, file);
    else if (k == "mini_batch_size") t.mini_batch_size = yaml_get<int64_t>(v, k, file);
    else if (k == "persistent_states") t.persistent_states = yaml_get<bool>(v, k, file);
    else if (k == "initial_gating_alpha") t.initial_gating_alpha = yaml_get<double>(v, k, file);
    else if (k == "ttt_mlp_layers") t.ttt_mlp_layers = yaml_get<int64_t>(v, k, file);
    else if (k == "ttt_mlp_expansion_factor") t.ttt_mlp_expansion_factor = yaml_get<double>(v, k, file);
    else if (k == "ttt_mlp_hidden_dims") t.ttt_mlp_hidden_dims = yaml_get<std::vector<int64_t>>(v, k, file);
    else if (k == "variant") t.variant = yaml_get<std::string>(v, k, file);
    else if (k == "output_post_norm_wo") t.output_post_norm_wo = yaml_get<bool>(v, k, file);
    else if (k == "use_rope") t.use_rope = yaml_get<bool>(v, k, file);
    else if (k == "rope_theta") t.rope_theta = yaml_get<double>(v, k, file);
    else if (k == "scan_checkpoint_group_size") t.scan_checkpoint_group_size = yaml_get<int64_t>(v, k, file);
    else if (k == "start_layer") t.inplace_start_layer = yaml_get<int64_t>(v, k, file);
    else if (k == "layer_frequency") t.inplace_layer_frequency = yaml_get<int64_t>(v, k, file);
    else if (k == "conv_kernel_size") t.conv_kernel_size = yaml_get<int64_t>(v, k, file);
    else if (k == "ttt_lr" || k == "inplace_lr") t.inplace_lr = yaml_get<double>(v, k, file);
    else if (k == "chunk_size") t.inplace_chunk_size = yaml_get<int64_t>(v, k, file);
    else if (k == "delta_clip_fro_norm") t.inplace_delta_clip = v.IsNull() ? 0.0 : yaml_get<double>(v, k, file);
    else if (k == "inplace_activation") t.inplace_activation = yaml_get<std::string>(v, k, file);
    else if (k == "multilayer_query") ttt::parse_variant(yaml_get<std::string>(v, k, file), t.multilayer_query, file, "ttt." + k);
    else if (k == "streaming_state") ttt::parse_variant(yaml_get<std::string>(v, k, file), t.streaming_state, file, "ttt." + k);
    else if (k == "log_inner_loop_losses") t.log_inner_loop_losses = yaml_get<bool>(v, k, file);
    // other keys (plot dirs, intervals) belong to the trainer and are ignored here
  }
  if (t.variant != "fork_hybrid" && t.variant != "inplace")
    throw Error(file, "ttt.variant", "unknown variant '" + t.variant + "' (fork_hybrid, inplace)");
  // In-Place layers are chosen by start_layer / layer_frequency unless `layers` names them
  // (checkpoint-keys.md §2.1).
  if (t.variant == "inplace" && !static_cast<const YAML::Node&>(n)["layers"]) t.layers = "inplace";
  if (t.inplace_activation != "gating" && t.inplace_activation != "gelu" && t.inplace_activation != "silu")
    throw Error(file, "ttt.inplace_activation", "expected gating, gelu or silu, got '" + t.inplace_activation + "'");
  if (t.inplace_chunk_size <= 0) throw Error(file, "ttt.chunk_size", "must be positive");
  if (t.conv_kernel_size <= 0) throw Error(file, "ttt.conv_kernel_size", "must be positive");
  if (t.mini_batch_size <= 0) throw Error(file, "ttt.mini_batch_size", "must be positive");
  if (t.ttt_mlp_layers < 1) throw Error(file, "ttt.ttt_mlp_layers", "must be >= 1");
  if (t.ttt_mlp_expansion_factor <= 0) throw Error(file, "ttt.ttt_mlp_expansion_factor", "must be positive");
  return t;
}

std::string read_text(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw Error(path, "", "cannot open");
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

}  // namespace

TTTSettings ttt_settings_from_yaml(const std::string& text, const std::string& file) {
  YAML::Node root;
  try {
    root = YAML::Load(text);
  } catch (const YAML::Exception& e) {
    throw Error(file, "line " + std::to_string(e.mark.line + 1), e.msg);
  }
  if (!root || !root.IsMap()) throw Error(file, "", "expected a YAML mapping");
  return ttt_from_node(root, file);
}

TTTSettings ttt_settings_from_yaml_file(const std::string& path) {
  return ttt_settings_from_yaml(read_text(path), path);
}

// ------------------------------------------------------------------------------------------
// LMConfig

int64_t LMConfig::max_delay() const {
  int64_t m = 0;
  for (auto d : delays) m = std::max(m, d);
  return m;
}

int64_t LMConfig::num_depformer_in() const {
  if (!depformer_multi_linear) return 1;
  if (!depformer_weights_per_step_schedule.empty())
    return *std::max_element(depformer_weights_per_step_schedule.begin(), depformer_weights_per_step_schedule.end()) + 1;
  return dep_q;
}

TransformerConfig LMConfig::main_transformer() const {
  TransformerConfig t;
  t.d_model = dim;
  t.num_heads = num_heads;
  t.num_layers = num_layers;
  t.dim_feedforward = static_cast<int64_t>(hidden_scale * static_cast<double>(dim));  // lm.py:149
  t.causal = causal;
  t.context = context;
  t.positional_embedding = positional_embedding;
  t.max_period = max_period;
  t.norm = norm;
  t.gating = gating;
  t.layer_scale = layer_scale;
  t.kv_repeat = kv_repeat;
  return t;
}

TransformerConfig LMConfig::depformer_transformer() const {
  // lm.py:160-232: main kwargs overridden by depformer_* ones; context forced None; norm = `norm`.
  TransformerConfig t;
  t.d_model = depformer_dim;
  t.num_heads = depformer_num_heads > 0 ? depformer_num_heads : num_heads;
  t.num_layers = depformer_num_layers > 0 ? depformer_num_layers : num_layers;
  t.dim_feedforward = depformer_dim_feedforward.value_or(
      static_cast<int64_t>(hidden_scale * static_cast<double>(depformer_dim)));
  t.causal = causal;
  t.context.reset();
  t.positional_embedding = depformer_pos_emb;
  t.max_period = depformer_max_period.value_or(max_period);
  t.norm = norm;
  t.gating = depformer_gating.value_or(gating);
  t.layer_scale = depformer_layer_scale ? depformer_layer_scale : layer_scale;
  t.kv_repeat = kv_repeat;
  t.weights_per_step = depformer_weights_per_step ? dep_q : 0;
  t.weights_per_step_schedule = depformer_weights_per_step_schedule;
  return t;
}

void LMConfig::validate(const std::string& file) const {
  auto bad = [&](const std::string& key, const std::string& why) { throw Error(file, key, why); };
  if (static_cast<int64_t>(delays.size()) != n_q + 1)
    bad("delays", "expected " + std::to_string(n_q + 1) + " delays (n_q + 1), got " + std::to_string(delays.size()));
  for (auto d : delays)
    if (d < 0) bad("delays", "negative delay");
  if (dep_q > n_q) bad("dep_q", "dep_q > n_q");
  if (dim <= 0 || num_heads <= 0 || dim % num_heads) bad("dim", "dim must be a positive multiple of num_heads");
  if (num_layers <= 0) bad("num_layers", "must be positive");
  if (card <= 0 || text_card <= 0) bad("card", "vocabulary sizes must be positive");
  if (norm_emb) bad("norm_emb", "norm_emb = true is not supported");
  if (context && *context <= 0) bad("context", "must be positive");
  auto dt = depformer_transformer();
  if (dep_q > 0 && (dt.d_model <= 0 || dt.d_model % dt.num_heads))
    bad("depformer_dim", "must be a positive multiple of depformer_num_heads");
  if (!depformer_weights_per_step_schedule.empty()) {
    if (static_cast<int64_t>(depformer_weights_per_step_schedule.size()) != dep_q)
      bad("depformer_weights_per_step_schedule", "length must equal dep_q");
    for (auto s : depformer_weights_per_step_schedule)
      if (s < 0 || s >= dep_q) bad("depformer_weights_per_step_schedule", "entry out of range");
  }
  auto mt = main_transformer();
  if (mt.gating == "none" && false) bad("gating", "");
  if (dt.gating == "none" && dt.weights_per_step > 0)
    bad("depformer_gating", "weights_per_step without gating is not supported (transformer.py)");
  if ((mt.positional_embedding == PosEmb::rope || mt.positional_embedding == PosEmb::sin_rope ||
       mt.positional_embedding == PosEmb::rope_concat) && mt.head_dim() % 2)
    bad("num_heads", "RoPE needs an even head dimension");
  if (kv_repeat != 1 && num_heads % kv_repeat) bad("kv_repeat", "must divide num_heads");
  if (ttt.enable) (void)ttt.resolve_layers(num_layers, file);
}

SchemaConfig LMConfig::to_schema(bool fused) const {
  SchemaConfig s;
  auto mt = main_transformer();
  auto dt = depformer_transformer();
  s.dim = dim;
  s.num_heads = num_heads;
  s.num_layers = num_layers;
  s.dim_feedforward = mt.dim_feedforward;
  s.gating = mt.gating != "none";
  s.layer_norm = !norm_is_rms(norm);
  s.text_card = text_card;
  s.card = card;
  s.n_q = n_q;
  s.dep_q = dep_q;
  s.depformer_dim = depformer_dim;
  s.depformer_num_heads = dt.num_heads;
  s.depformer_num_layers = dt.num_layers;
  s.depformer_dim_feedforward = dt.dim_feedforward;
  s.depformer_weights_per_step = dt.num_weight_sets();
  s.depformer_multi_linear = depformer_multi_linear;
  s.depformer_low_rank_embeddings = depformer_low_rank_embeddings;
  s.fused_attention_names = fused;
  if (ttt.enable) {
    s.ttt.variant = ttt.variant == "inplace" ? TTTVariant::inplace : TTTVariant::fork_hybrid;
    s.ttt.layers = ttt.resolve_layers(num_layers);
    s.ttt.ttt_heads = static_cast<int>(num_heads);
    s.ttt.ttt_mlp_layers = static_cast<int>(ttt.ttt_mlp_layers);
    s.ttt.ttt_mlp_expansion_factor = ttt.ttt_mlp_expansion_factor;
    s.ttt.ttt_mlp_hidden_dims = ttt.ttt_mlp_hidden_dims;
    s.ttt.mini_batch_size = ttt.mini_batch_size;
    s.ttt.output_post_norm_wo = ttt.output_post_norm_wo;
    s.ttt.initial_gating_alpha = ttt.initial_gating_alpha;
    s.ttt.conv_kernel_size = static_cast<int>(ttt.conv_kernel_size);
  }
  return s;
}

LMConfig LMConfig::lm_defaults() { return LMConfig{}; }

LMConfig LMConfig::moshiko_7b() {
  // loaders.py:90-119 / configs/moshi_7b_202409.json (moshi.md §1).
  LMConfig c;
  c.dim = 4096;
  c.text_card = 32000;
  c.existing_text_padding_id = 3;
  c.n_q = 16;
  c.dep_q = 8;
  c.card = 2048;
  c.num_heads = 32;
  c.num_layers = 32;
  c.hidden_scale = 4.125;
  c.causal = true;
  c.layer_scale.reset();
  c.context = 3000;
  c.max_period = 10000;
  c.gating = "silu";
  c.norm = NormKind::rms_norm_f32;
  c.positional_embedding = PosEmb::rope;
  c.depformer_dim = 1024;
  c.depformer_dim_feedforward = static_cast<int64_t>(4.125 * 1024);
  c.depformer_num_heads = 16;
  c.depformer_num_layers = 6;
  c.depformer_layer_scale.reset();
  c.depformer_multi_linear = true;
  c.depformer_max_period = 10000;
  c.depformer_gating = "silu";
  c.depformer_pos_emb = PosEmb::none;
  c.depformer_weights_per_step = true;
  c.delays = {0, 0, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1, 1, 1, 1, 1};
  return c;
}

LMConfig LMConfig::golden_test() {
  // upstream moshi/tests/test_lm.py:13-36 (golden/moshi/README.md).
  LMConfig c;
  c.delays = {0, 1, 2, 4};
  c.n_q = 3;
  c.dep_q = 3;
  c.card = 32;
  c.text_card = 48;
  c.dim = 16;
  c.num_layers = 2;
  c.num_heads = 1;
  c.hidden_scale = 1;
  c.depformer_dim = 16;
  c.depformer_multi_linear = true;
  c.depformer_weights_per_step = true;
  c.depformer_weights_per_step_schedule = {0, 1, 1};
  c.depformer_low_rank_embeddings = 8;
  c.depformer_num_heads = 1;
  c.depformer_gating = "silu";
  c.context = 4;
  return c;
}

LMConfig LMConfig::tiny(int64_t low_rank) {
  // moshi.md §7, sized like SchemaConfig::tiny() so the parameter declarations agree.
  LMConfig c = moshiko_7b();
  c.dim = 64;
  c.num_heads = 4;
  c.num_layers = 4;
  c.context = 4;
  c.card = 32;
  c.text_card = 48;
  c.n_q = 6;
  c.dep_q = 3;
  c.delays = {0, 0, 1, 1, 0, 1, 1};
  c.depformer_dim = 16;
  c.depformer_num_heads = 2;
  c.depformer_num_layers = 2;
  c.depformer_dim_feedforward = static_cast<int64_t>(4.125 * 16);
  c.depformer_low_rank_embeddings = low_rank;
  c.top_k = 10;
  c.top_k_text = 10;
  return c;
}

LMConfig LMConfig::medium_300m() {
  // moshiko shape at ~300M parameters: dim 1024, 16 layers (200M in the temporal transformer),
  // depformer 512 x 4 layers with 8 per-step weight sets.
  LMConfig c = moshiko_7b();
  c.dim = 1024;
  c.num_heads = 16;
  c.num_layers = 16;
  c.context = 500;
  c.depformer_dim = 512;
  c.depformer_num_heads = 8;
  c.depformer_num_layers = 4;
  c.depformer_dim_feedforward = static_cast<int64_t>(4.125 * 512);
  return c;
}

LMConfig LMConfig::preset(const std::string& name) {
  if (name == "moshiko_7b" || name == "moshiko") return moshiko_7b();
  if (name == "tiny") return tiny();
  if (name == "tiny_lowrank") return tiny(8);
  if (name == "golden_test") return golden_test();
  if (name == "medium_300m" || name == "300m") return medium_300m();
  if (name == "lm_defaults") return lm_defaults();
  throw Error("", "preset", "unknown preset '" + name + "' (moshiko_7b, tiny, tiny_lowrank, golden_test, medium_300m)",
              ErrorKind::Usage);
}

namespace {

template <typename T>
void jget(const json& j, const char* key, T& out, const std::string& file) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return;
  try {
    out = it->get<T>();
  } catch (const std::exception& e) {
    throw Error(file, key, std::string("bad value: ") + e.what());
  }
}
template <typename T>
void jget_opt(const json& j, const char* key, std::optional<T>& out, const std::string& file) {
  auto it = j.find(key);
  if (it == j.end()) return;
  if (it->is_null()) {
    out.reset();
    return;
  }
  T v{};
  jget(j, key, v, file);
  out = v;
}

}  // namespace

LMConfig LMConfig::from_json(const std::string& text, const std::string& file) {
  json j;
  try {
    j = json::parse(text);
  } catch (const json::parse_error& e) {
    throw Error(file, "byte " + std::to_string(e.byte), "invalid JSON");
  }
  if (!j.is_object()) throw Error(file, "", "expected a JSON object");
  LMConfig c;
  jget(j, "delays", c.delays, file);
  jget(j, "n_q", c.n_q, file);
  jget(j, "dep_q", c.dep_q, file);
  jget(j, "card", c.card, file);
  jget(j, "text_card", c.text_card, file);
  jget_opt(j, "text_card_out", c.text_card_out, file);
  jget(j, "dim", c.dim, file);
  jget(j, "num_heads", c.num_heads, file);
  jget(j, "num_layers", c.num_layers, file);
  jget(j, "hidden_scale", c.hidden_scale, file);
  if (j.contains("norm")) c.norm = parse_norm(j["norm"].get<std::string>(), file, "norm");
  jget(j, "norm_emb", c.norm_emb, file);
  jget(j, "bias_proj", c.bias_proj, file);
  jget(j, "existing_text_padding_id", c.existing_text_padding_id, file);
  jget(j, "existing_text_end_padding_id", c.existing_text_end_padding_id, file);
  jget_opt(j, "context", c.context, file);
  jget(j, "causal", c.causal, file);
  if (j.contains("positional_embedding"))
    c.positional_embedding = parse_pos_emb(j["positional_embedding"].get<std::string>(), file, "positional_embedding");
  jget(j, "max_period", c.max_period, file);
  jget(j, "gating", c.gating, file);
  jget_opt(j, "layer_scale", c.layer_scale, file);
  jget(j, "kv_repeat", c.kv_repeat, file);
  jget(j, "depformer_dim", c.depformer_dim, file);
  jget_opt(j, "depformer_dim_feedforward", c.depformer_dim_feedforward, file);
  jget(j, "depformer_num_heads", c.depformer_num_heads, file);
  jget(j, "depformer_num_layers", c.depformer_num_layers, file);
  jget(j, "depformer_multi_linear", c.depformer_multi_linear, file);
  jget(j, "depformer_weights_per_step", c.depformer_weights_per_step, file);
  jget(j, "depformer_weights_per_step_schedule", c.depformer_weights_per_step_schedule, file);
  {
    std::optional<int64_t> lr;
    jget_opt(j, "depformer_low_rank_embeddings", lr, file);
    c.depformer_low_rank_embeddings = lr.value_or(0);
  }
  if (j.contains("depformer_pos_emb"))
    c.depformer_pos_emb = parse_pos_emb(j["depformer_pos_emb"].get<std::string>(), file, "depformer_pos_emb");
  if (j.contains("depformer_norm") && !j["depformer_norm"].is_null())
    c.depformer_norm = parse_norm(j["depformer_norm"].get<std::string>(), file, "depformer_norm");
  jget_opt(j, "depformer_gating", c.depformer_gating, file);
  jget_opt(j, "depformer_max_period", c.depformer_max_period, file);
  jget_opt(j, "depformer_layer_scale", c.depformer_layer_scale, file);
  // The depformer_context key exists in moshi configs but LMModel forces None (moshi.md §1).
  if (j.contains("extra_heads_num_heads") && j["extra_heads_num_heads"].get<int64_t>() != 0)
    throw Error(file, "extra_heads_num_heads", "extra heads are not supported");
  if (j.contains("demux_second_text_stream") && j["demux_second_text_stream"].get<bool>())
    throw Error(file, "demux_second_text_stream", "not supported");
  if (j.contains("conditioners") && !j["conditioners"].is_null() && !j["conditioners"].empty())
    throw Error(file, "conditioners", "conditioned models are not supported");
  if (j.contains("lm_gen_config") && j["lm_gen_config"].is_object()) {  // run_inference overrides
    const json& g = j["lm_gen_config"];
    jget(g, "temp", c.temp, file);
    jget(g, "temp_text", c.temp_text, file);
    jget(g, "top_k", c.top_k, file);
    jget(g, "top_k_text", c.top_k_text, file);
  }
  if (j.contains("ttt") && j["ttt"].is_object())
    c.ttt = ttt_settings_from_yaml(j["ttt"].dump(), file);  // JSON is YAML
  c.validate(file);
  return c;
}

LMConfig LMConfig::from_json_file(const std::string& path) { return from_json(read_text(path), path); }

std::string LMConfig::to_json() const {
  json j;
  j["delays"] = delays;
  j["n_q"] = n_q;
  j["dep_q"] = dep_q;
  j["card"] = card;
  j["text_card"] = text_card;
  if (text_card_out) j["text_card_out"] = *text_card_out;
  j["dim"] = dim;
  j["num_heads"] = num_heads;
  j["num_layers"] = num_layers;
  j["hidden_scale"] = hidden_scale;
  j["norm"] = norm_name(norm);
  j["bias_proj"] = bias_proj;
  j["existing_text_padding_id"] = existing_text_padding_id;
  j["existing_text_end_padding_id"] = existing_text_end_padding_id;
  j["context"] = context ? json(*context) : json(nullptr);
  j["causal"] = causal;
  j["positional_embedding"] = pos_emb_name(positional_embedding);
  j["max_period"] = max_period;
  j["gating"] = gating;
  j["layer_scale"] = layer_scale ? json(*layer_scale) : json(nullptr);
  j["kv_repeat"] = kv_repeat;
  j["depformer_dim"] = depformer_dim;
  if (depformer_dim_feedforward) j["depformer_dim_feedforward"] = *depformer_dim_feedforward;
  if (depformer_num_heads > 0) j["depformer_num_heads"] = depformer_num_heads;
  if (depformer_num_layers > 0) j["depformer_num_layers"] = depformer_num_layers;
  j["depformer_multi_linear"] = depformer_multi_linear;
  j["depformer_weights_per_step"] = depformer_weights_per_step;
  if (!depformer_weights_per_step_schedule.empty())
    j["depformer_weights_per_step_schedule"] = depformer_weights_per_step_schedule;
  j["depformer_low_rank_embeddings"] =
      depformer_low_rank_embeddings > 0 ? json(depformer_low_rank_embeddings) : json(nullptr);
  j["depformer_pos_emb"] = pos_emb_name(depformer_pos_emb);
  if (depformer_norm) j["depformer_norm"] = norm_name(*depformer_norm);
  if (depformer_gating) j["depformer_gating"] = *depformer_gating;
  if (depformer_max_period) j["depformer_max_period"] = *depformer_max_period;
  if (depformer_layer_scale) j["depformer_layer_scale"] = *depformer_layer_scale;
  j["lm_gen_config"] = {{"temp", temp}, {"temp_text", temp_text}, {"top_k", top_k}, {"top_k_text", top_k_text}};
  if (ttt.enable) {
    j["ttt"] = {{"enable", true},
                {"layers", ttt.layers},
                {"base_lr", ttt.base_lr},
                {"mini_batch_size", ttt.mini_batch_size},
                {"persistent_states", ttt.persistent_states},
                {"initial_gating_alpha", ttt.initial_gating_alpha},
                {"ttt_mlp_layers", ttt.ttt_mlp_layers},
                {"ttt_mlp_expansion_factor", ttt.ttt_mlp_expansion_factor},
                {"variant", ttt.variant},
                {"use_rope", ttt.use_rope},
                {"rope_theta", ttt.rope_theta},
                {"scan_checkpoint_group_size", ttt.scan_checkpoint_group_size}};
    if (ttt.variant == "inplace") {
      j["ttt"]["start_layer"] = ttt.inplace_start_layer;
      j["ttt"]["layer_frequency"] = ttt.inplace_layer_frequency;
      j["ttt"]["conv_kernel_size"] = ttt.conv_kernel_size;
      j["ttt"]["ttt_lr"] = ttt.inplace_lr;
      j["ttt"]["chunk_size"] = ttt.inplace_chunk_size;
      j["ttt"]["delta_clip_fro_norm"] = ttt.inplace_delta_clip;
      j["ttt"]["inplace_activation"] = ttt.inplace_activation;
    }
  }
  return j.dump(2);
}

}  // namespace mtt::moshi
