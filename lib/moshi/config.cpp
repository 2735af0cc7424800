#include "moshi/config.h"

#include <algorithm>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <yaml-cpp/yaml.h>

#include "core/error.h"
#include "io/strict_json.h"

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

namespace {

std::string read_text(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw Error(path, "", "cannot open");
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

}  // namespace

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
    s.ttt.variant = ttt.variant;
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
  // loaders.py:90-119 / configs/moshi_7b_202409.json (docs/moshi.md §1).
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
  // docs/moshi.md §7, sized like SchemaConfig::tiny() so the parameter declarations agree.
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
    throw Error(file, key, "bad value: " + io::json_error_text(e));
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
  // The depformer_context key exists in moshi configs but LMModel forces None (docs/moshi.md §1).
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
  // The In-Place port stores its TTT settings in the model config (train.py: lm_config["ttt_config"]),
  // where its own loader reads them.
  if (j.contains("ttt_config") && j["ttt_config"].is_object())
    c.ttt = ttt_settings_from_yaml(j["ttt_config"].dump(), file, TTTDialect::inplace_port);
  if (j.contains("yarn_config") && j["yarn_config"].is_object() && j["yarn_config"].value("enabled", true))
    throw Error(file, "yarn_config", "YaRN RoPE scaling is not supported");
  if (j.contains("ttt") && j["ttt"].is_object())
    c.ttt = ttt_settings_from_yaml(j["ttt"].dump(), file);  // JSON is YAML (line numbers: the dump's)
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
  if (ttt.enable) j["ttt"] = json::parse(ttt_settings_to_json(ttt));
  return j.dump(2);
}

}  // namespace mtt::moshi
