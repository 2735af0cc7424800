#include "moshi/ttt_settings.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "core/error.h"
#include "io/strict_yaml.h"

namespace mtt::moshi {

const char* ttt_dialect_name(TTTDialect d) {
  switch (d) {
    case TTTDialect::ours: return "moshi-ttt";
    case TTTDialect::ttt_fork: return "moshi-finetune TTT fork";
    case TTTDialect::inplace_port: return "In-Place TTT port";
  }
  return "?";
}

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
  if (layers == "inplace") {  // docs/checkpoint-keys.md §2.1: i >= start and (i - start) % freq == 0
    for (int64_t i = inplace_start_layer; i < n; i += std::max<int64_t>(1, inplace_layer_frequency))
      out.push_back(static_cast<int>(i));
    return out;
  }
  std::set<int> s;
  std::stringstream ss(layers);
  std::string item;
  // "[]" is no layer; an empty item in a list (",," or "1,,2") is a typo, not a layer.
  const bool blank = layers.find_first_not_of(" \t[]") == std::string::npos;
  while (std::getline(ss, item, ',')) {
    item.erase(0, item.find_first_not_of(" \t[]"));
    item.erase(item.find_last_not_of(" \t[]") + 1);
    if (item.empty() && blank) continue;
    if (item.empty())
      throw Error(file, "ttt.layers", "bad layer list '" + layers + "': an empty item (none, all, middle or \"29,30,31\")");
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

void TTTSettings::validate(const std::string& file) const {
  auto bad = [&](const std::string& key, const std::string& why) { throw Error(file, "ttt." + key, why); };
  auto finite_pos = [&](double v, const char* key) {
    if (!std::isfinite(v) || v <= 0) bad(key, "must be a positive finite number");
  };
  finite_pos(base_lr, "base_lr");
  finite_pos(ttt_mlp_expansion_factor, "ttt_mlp_expansion_factor");
  finite_pos(rope_theta, "rope_theta");
  finite_pos(inplace_lr, "inplace_lr");
  if (!std::isfinite(initial_gating_alpha)) bad("initial_gating_alpha", "must be finite");
  if (!std::isfinite(inplace_delta_clip)) bad("delta_clip_fro_norm", "must be finite (null: no clip)");
  // Upper bounds far above any Moshi (dim 4096, 32 heads) keep a typo from allocating terabytes.
  auto in = [&](int64_t v, int64_t lo, int64_t hi, const char* key) {
    if (v < lo || v > hi)
      bad(key, "must be an integer in " + std::to_string(lo) + ".." + std::to_string(hi) + ", got " + std::to_string(v));
  };
  in(mini_batch_size, 1, int64_t{1} << 20, "mini_batch_size");
  in(ttt_mlp_layers, 1, 64, "ttt_mlp_layers");
  if (ttt_mlp_expansion_factor > 64) bad("ttt_mlp_expansion_factor", "must be at most 64");
  for (auto h : ttt_mlp_hidden_dims) in(h, 1, int64_t{1} << 20, "ttt_mlp_hidden_dims");
  if (!ttt_mlp_hidden_dims.empty() && static_cast<int64_t>(ttt_mlp_hidden_dims.size()) != ttt_mlp_layers - 1)
    bad("ttt_mlp_hidden_dims", "needs ttt_mlp_layers - 1 = " + std::to_string(ttt_mlp_layers - 1) + " widths");
  in(scan_checkpoint_group_size, 0, int64_t{1} << 20, "scan_checkpoint_group_size");
  in(inplace_chunk_size, 1, int64_t{1} << 20, "chunk_size");
  in(conv_kernel_size, 1, 1024, "conv_kernel_size");
  in(inplace_start_layer, 0, 4096, "start_layer");
  in(inplace_layer_frequency, 1, 4096, "layer_frequency");
  if (model_dim) in(*model_dim, 1, 65536, "model_dim");
  if (num_heads) in(*num_heads, 1, 4096, "num_heads");
  if (!std::isfinite(inplace_delta_clip_epsilon) || inplace_delta_clip_epsilon < 0)
    bad("delta_clip_epsilon", "must be a finite number >= 0");
  if (lr && (!std::isfinite(*lr) || *lr < 0)) bad("lr", "must be a finite number >= 0");
  if (model_dim && num_heads && *model_dim % *num_heads) bad("num_heads", "must divide model_dim");
  if (inplace_activation != "gating" && inplace_activation != "gelu" && inplace_activation != "silu")
    bad("inplace_activation", "expected gating, gelu or silu, got '" + inplace_activation + "'");
  if (proj_bias_init && *proj_bias_init != "zero" && *proj_bias_init != "torch_default")
    bad("proj_bias_init", "unknown value '" + *proj_bias_init + "' (one of: zero, torch_default)");
}

bool TTTSettings::operator==(const TTTSettings& o) const {
  // Every field but the report-only list (not_acted_on).
  return enable == o.enable && layers == o.layers && variant == o.variant && dialect == o.dialect &&
         base_lr == o.base_lr && mini_batch_size == o.mini_batch_size && persistent_states == o.persistent_states &&
         initial_gating_alpha == o.initial_gating_alpha && ttt_mlp_layers == o.ttt_mlp_layers &&
         ttt_mlp_expansion_factor == o.ttt_mlp_expansion_factor && ttt_mlp_hidden_dims == o.ttt_mlp_hidden_dims &&
         use_rope == o.use_rope && rope_theta == o.rope_theta && eval_chunk_size == o.eval_chunk_size &&
         log_inner_loop_losses == o.log_inner_loop_losses && output_post_norm_wo == o.output_post_norm_wo &&
         scan_checkpoint_group_size == o.scan_checkpoint_group_size && multilayer_query == o.multilayer_query &&
         streaming_state == o.streaming_state && model_dim == o.model_dim && num_heads == o.num_heads &&
         inner == o.inner && eta == o.eta && recon_target == o.recon_target && output_path == o.output_path &&
         rope == o.rope && pad_updates == o.pad_updates && proj_bias_init == o.proj_bias_init && lr == o.lr &&
         inplace_start_layer == o.inplace_start_layer && inplace_layer_frequency == o.inplace_layer_frequency &&
         conv_kernel_size == o.conv_kernel_size && inplace_lr == o.inplace_lr &&
         inplace_chunk_size == o.inplace_chunk_size && inplace_delta_clip == o.inplace_delta_clip &&
         inplace_delta_clip_epsilon == o.inplace_delta_clip_epsilon && inplace_activation == o.inplace_activation;
}

namespace {

// "ttt.key (line N)"; nodes built in code (an experiment's JSON config) have no line: the caller
// places the key (experiments/config_keys.h).
std::string where(const std::string& key, const YAML::Node& node) {
  return io::yaml_where("ttt." + key, node);
}

template <typename T>
T get(const YAML::Node& v, const std::string& key, const std::string& file) {
  try {
    return v.as<T>();
  } catch (const std::exception&) {
    throw Error(file, where(key, v), "bad value '" + (v.IsScalar() ? v.Scalar() : std::string("<") +
                                     (v.IsSequence() ? "list" : "mapping") + ">") + "'");
  }
}

template <typename E>
E get_variant(const YAML::Node& v, const std::string& key, const std::string& file) {
  E e{};
  ttt::parse_variant(get<std::string>(v, key, file), e, file, where(key, v));
  return e;
}

// Keys of the forks that steer only their training or evaluation tooling.
const std::set<std::string> kToolingKeys = {
    // TTT fork TTTArgs (finetune/args.py)
    "override_gating_alpha_on_resume", "weight_lr_multiplier", "alpha_lr_multiplier", "inner_loop_log_interval",
    "save_inner_loop_plots", "inner_loop_plot_dir", "optimize_chunk_size", "max_chunk_size", "prefer_efficiency",
    "unfrozen_attention_layers", "enable_training_diagnostics", "training_diagnostic_frequency",
    "target_output_norm",
    // In-Place port TTTArgs
    "unfreeze_ttt_layers"};

std::string scalar_text(const YAML::Node& v) {
  if (v.IsScalar()) return v.Scalar();
  YAML::Emitter e;
  e << YAML::Flow << v;
  return e.c_str();
}

}  // namespace

TTTSettings ttt_settings_from_node(const YAML::Node& root, const std::string& file, TTTDialect hint) {
  const YAML::Node n = (root.IsMap() && root["ttt"]) ? root["ttt"] : root;
  TTTSettings t;
  if (!n || n.IsNull()) return t;
  if (!n.IsMap()) throw Error(file, where("", n), "expected a mapping");
  t.dialect = n["enabled"] ? TTTDialect::inplace_port : hint;
  if (t.dialect == TTTDialect::inplace_port) {
    // The port's layers come from start_layer / layer_frequency, and its gated FFN calls the
    // layer's default F.gelu (exact erf) whatever the model's `gating` says (docs/ttt.md §8).
    t.variant = TTTVariant::inplace;
    t.layers = "inplace";
    t.inplace_activation = "gelu";
  }
  if (n["variant"] && !n["variant"].IsNull()) {
    const std::string v = get<std::string>(n["variant"], "variant", file);
    if (v == "fork_hybrid") t.variant = TTTVariant::fork_hybrid;
    else if (v == "inplace") t.variant = TTTVariant::inplace;
    else throw Error(file, where("variant", n["variant"]), "unknown value '" + v + "' (one of: fork_hybrid, inplace)");
    // In-Place layers are chosen by start_layer / layer_frequency unless `layers` names them.
    if (t.variant == TTTVariant::inplace && !n["layers"]) t.layers = "inplace";
  }
  if (n["dialect"] && !n["dialect"].IsNull()) {
    const std::string d = get<std::string>(n["dialect"], "dialect", file);
    if (d == "ours") t.dialect = TTTDialect::ours;
    else if (d == "ttt_fork") t.dialect = TTTDialect::ttt_fork;
    else if (d == "inplace_port") t.dialect = TTTDialect::inplace_port;
    else throw Error(file, where("dialect", n["dialect"]), "unknown value '" + d + "' (one of: ours, ttt_fork, inplace_port)");
  }
  const bool inplace = t.variant == TTTVariant::inplace;

  using Setter = std::function<void(const YAML::Node&, const std::string&)>;
  auto i64 = [&](int64_t& f) -> Setter { return [&f, &file](const YAML::Node& v, const std::string& k) { f = get<int64_t>(v, k, file); }; };
  auto dbl = [&](double& f) -> Setter { return [&f, &file](const YAML::Node& v, const std::string& k) { f = get<double>(v, k, file); }; };
  auto flag = [&](bool& f) -> Setter { return [&f, &file](const YAML::Node& v, const std::string& k) { f = get<bool>(v, k, file); }; };
  auto str = [&](std::string& f) -> Setter { return [&f, &file](const YAML::Node& v, const std::string& k) { f = get<std::string>(v, k, file); }; };
  auto opt_i64 = [&](std::optional<int64_t>& f) -> Setter {
    return [&f, &file](const YAML::Node& v, const std::string& k) { f = get<int64_t>(v, k, file); };
  };
  auto ignore = [](const YAML::Node&, const std::string&) {};
  const std::map<std::string, Setter> keys = {
      {"enable", flag(t.enable)},
      {"enabled", flag(t.enable)},
      {"variant", ignore},
      {"dialect", ignore},
      {"layers", [&](const YAML::Node& v, const std::string& k) {
         // The fork's string, or a YAML list of indices.
         if (v.IsSequence()) {
           std::string s;
           for (const auto& e : v) s += (s.empty() ? "" : ",") + std::to_string(get<int64_t>(e, k, file));
           t.layers = s;
         } else {
           t.layers = get<std::string>(v, k, file);
         }
       }},
      {"base_lr", dbl(t.base_lr)},
      {"mini_batch_size", i64(t.mini_batch_size)},
      {"persistent_states", flag(t.persistent_states)},
      {"initial_gating_alpha", dbl(t.initial_gating_alpha)},
      {"ttt_mlp_layers", i64(t.ttt_mlp_layers)},
      {"ttt_mlp_expansion_factor", dbl(t.ttt_mlp_expansion_factor)},
      {"ttt_mlp_hidden_dims", [&](const YAML::Node& v, const std::string& k) {
         t.ttt_mlp_hidden_dims = get<std::vector<int64_t>>(v, k, file);
       }},
      {"use_rope", flag(t.use_rope)},
      {"rope_theta", dbl(t.rope_theta)},
      {"log_inner_loop_losses", flag(t.log_inner_loop_losses)},
      {"output_post_norm_wo", flag(t.output_post_norm_wo)},
      {"scan_checkpoint_group_size", i64(t.scan_checkpoint_group_size)},
      {"multilayer_query", [&](const YAML::Node& v, const std::string& k) {
         t.multilayer_query = get_variant<ttt::MultiLayerQuery>(v, k, file);
       }},
      {"streaming_state", [&](const YAML::Node& v, const std::string& k) {
         t.streaming_state = get_variant<ttt::StreamingState>(v, k, file);
       }},
      {"model_dim", opt_i64(t.model_dim)},
      {"num_heads", opt_i64(t.num_heads)},
      {"inner", [&](const YAML::Node& v, const std::string& k) { t.inner = get_variant<ttt::InnerModel>(v, k, file); }},
      {"eta", [&](const YAML::Node& v, const std::string& k) { t.eta = get_variant<ttt::Eta>(v, k, file); }},
      {"recon_target", [&](const YAML::Node& v, const std::string& k) { t.recon_target = get_variant<ttt::ReconTarget>(v, k, file); }},
      {"output_path", [&](const YAML::Node& v, const std::string& k) { t.output_path = get_variant<ttt::OutputPath>(v, k, file); }},
      {"rope", [&](const YAML::Node& v, const std::string& k) { t.rope = get_variant<ttt::Rope>(v, k, file); }},
      {"pad_updates", [&](const YAML::Node& v, const std::string& k) { t.pad_updates = get_variant<ttt::PadUpdates>(v, k, file); }},
      {"proj_bias_init", [&](const YAML::Node& v, const std::string& k) { t.proj_bias_init = get<std::string>(v, k, file); }},
      {"lr", [&](const YAML::Node& v, const std::string& k) { t.lr = get<double>(v, k, file); }},
      {"start_layer", i64(t.inplace_start_layer)},
      {"layer_frequency", i64(t.inplace_layer_frequency)},
      {"conv_kernel_size", i64(t.conv_kernel_size)},
      {"learning_rate", dbl(t.inplace_lr)},
      {"ttt_lr", dbl(t.inplace_lr)},
      {"inplace_lr", dbl(t.inplace_lr)},
      {"inplace_chunk_size", i64(t.inplace_chunk_size)},
      {"eval_chunk_size", opt_i64(t.eval_chunk_size)},
      // The fork's chunk_size is its evaluation chunking; the port's (and ours with variant
      // inplace) is the In-Place update chunk.
      {"chunk_size", inplace || t.dialect == TTTDialect::inplace_port ? i64(t.inplace_chunk_size) : opt_i64(t.eval_chunk_size)},
      {"delta_clip_fro_norm", dbl(t.inplace_delta_clip)},
      {"delta_clip_epsilon", dbl(t.inplace_delta_clip_epsilon)},
      {"inplace_activation", str(t.inplace_activation)},
  };
  for (auto it = n.begin(); it != n.end(); ++it) {
    if (!it->first.IsScalar()) throw Error(file, where("", it->first), "keys must be plain names");
    const std::string k = it->first.Scalar();
    const YAML::Node v = it->second;
    if (kToolingKeys.count(k)) {
      t.not_acted_on.push_back("ttt." + k + ": " + (v.IsNull() ? "null" : scalar_text(v)));
      continue;
    }
    if (k == "ttt_layer_context" || k == "non_ttt_layer_context") {
      // The fork sets these attention windows per layer at build time (wrapped_model.py:414).
      if (!v.IsNull())
        throw Error(file, where(k, it->first), "per-layer attention context is not supported (only null)");
      continue;
    }
    if (k == "normalize_ttt_output") {
      if (!v.IsNull() && get<bool>(v, k, file))
        throw Error(file, where(k, it->first), "the fork's learnable TTT output scaling is not supported (only false)");
      continue;
    }
    if (k == "delta_clip_fro_norm" && v.IsNull()) {  // the port: None disables the clip
      t.inplace_delta_clip = 0.0;
      continue;
    }
    auto f = keys.find(k);
    if (f == keys.end()) {
      std::string close;
      for (const auto& [name, s] : keys)
        if (name.size() > 2 && (name.find(k) != std::string::npos || k.find(name) != std::string::npos)) close = name;
      throw Error(file, where(k, it->first), "unknown key" + (close.empty() ? std::string() : " (did you mean '" + close + "'?)"));
    }
    if (v.IsNull()) continue;  // null: the default
    f->second(v, k);
  }
  if (t.variant == TTTVariant::inplace && t.inplace_delta_clip < 0) t.inplace_delta_clip = 0.0;
  t.validate(file);
  return t;
}

TTTSettings ttt_settings_from_yaml(const std::string& text, const std::string& file, TTTDialect hint) {
  const YAML::Node root = io::load_yaml_strict(text, file);
  if (!root || !root.IsMap()) throw Error(file, "", "expected a YAML mapping");
  return ttt_settings_from_node(root, file, hint);
}

TTTSettings ttt_settings_from_yaml_file(const std::string& path, TTTDialect hint) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw Error(path, "", "cannot open");
  std::stringstream ss;
  ss << f.rdbuf();
  return ttt_settings_from_yaml(ss.str(), path, hint);
}

std::string ttt_settings_to_json(const TTTSettings& t) {
  using nlohmann::json;
  const char* dialect = t.dialect == TTTDialect::ttt_fork ? "ttt_fork"
                        : t.dialect == TTTDialect::inplace_port ? "inplace_port" : "ours";
  json j = {{"enable", t.enable},
            {"layers", t.layers},
            {"variant", t.variant == TTTVariant::inplace ? "inplace" : "fork_hybrid"},
            {"dialect", dialect},
            {"base_lr", t.base_lr},
            {"mini_batch_size", t.mini_batch_size},
            {"persistent_states", t.persistent_states},
            {"initial_gating_alpha", t.initial_gating_alpha},
            {"ttt_mlp_layers", t.ttt_mlp_layers},
            {"ttt_mlp_expansion_factor", t.ttt_mlp_expansion_factor},
            {"ttt_mlp_hidden_dims", t.ttt_mlp_hidden_dims.empty() ? json(nullptr) : json(t.ttt_mlp_hidden_dims)},
            {"use_rope", t.use_rope},
            {"rope_theta", t.rope_theta},
            {"eval_chunk_size", t.eval_chunk_size ? json(*t.eval_chunk_size) : json(nullptr)},
            {"log_inner_loop_losses", t.log_inner_loop_losses},
            {"output_post_norm_wo", t.output_post_norm_wo},
            {"scan_checkpoint_group_size", t.scan_checkpoint_group_size},
            {"multilayer_query", ttt::variant_name(t.multilayer_query)},
            {"streaming_state", ttt::variant_name(t.streaming_state)},
            {"start_layer", t.inplace_start_layer},
            {"layer_frequency", t.inplace_layer_frequency},
            {"conv_kernel_size", t.conv_kernel_size},
            {"inplace_lr", t.inplace_lr},
            {"inplace_chunk_size", t.inplace_chunk_size},
            {"delta_clip_fro_norm", t.inplace_delta_clip},
            {"delta_clip_epsilon", t.inplace_delta_clip_epsilon},
            {"inplace_activation", t.inplace_activation}};
  auto opt = [&](const char* k, const auto& o) {
    if (o) j[k] = *o;
  };
  auto opt_variant = [&](const char* k, const auto& o) {
    if (o) j[k] = ttt::variant_name(*o);
  };
  opt("model_dim", t.model_dim);
  opt("num_heads", t.num_heads);
  opt_variant("inner", t.inner);
  opt_variant("eta", t.eta);
  opt_variant("recon_target", t.recon_target);
  opt_variant("output_path", t.output_path);
  opt_variant("rope", t.rope);
  opt_variant("pad_updates", t.pad_updates);
  opt("proj_bias_init", t.proj_bias_init);
  opt("lr", t.lr);
  return j.dump(2);
}

}  // namespace mtt::moshi
