#include "experiments/config_keys.h"

#include <yaml-cpp/yaml.h>

#include <cmath>
#include <limits>

#include "core/error.h"
#include "experiments/grid.h"
#include "experiments/ttt_settings.h"
#include "moshi/ttt_settings.h"

namespace mtt::experiments {

using nlohmann::json;

namespace {

constexpr int64_t kMaxInt = std::numeric_limits<int64_t>::max();

// A config value as the TTT settings reader's YAML: integral numbers as integers (1e3 is a
// valid mini_batch_size), other numbers in JSON's shortest round-trip form.
YAML::Node to_yaml(const json& j) {
  if (j.is_object()) {
    YAML::Node n(YAML::NodeType::Map);
    for (auto it = j.begin(); it != j.end(); ++it) n[it.key()] = to_yaml(it.value());
    return n;
  }
  if (j.is_array()) {
    YAML::Node n(YAML::NodeType::Sequence);
    for (const auto& e : j) n.push_back(to_yaml(e));
    return n;
  }
  if (j.is_null()) return YAML::Node(YAML::NodeType::Null);
  if (j.is_string()) return YAML::Node(j.get<std::string>());
  if (j.is_boolean()) return YAML::Node(j.get<bool>() ? "true" : "false");
  if (j.is_number_float()) {
    const double d = j.get<double>();
    if (d == std::floor(d) && std::fabs(d) < 9.0e15) return YAML::Node(std::to_string(static_cast<int64_t>(d)));
  }
  return YAML::Node(j.dump());
}

// Nulls and non-finite numbers anywhere in a section: the readers behind it take neither.
void check_leaves(const json& v, const std::string& key, const std::string& file, const io::Locate& where) {
  if (v.is_null()) throw Error(file, where(key), "null is not a value here (leave the key out for its default)");
  if (v.is_number_float() && !std::isfinite(v.get<double>()))
    throw Error(file, where(key), "must be a finite number, got " + io::json_brief(v));
  if (v.is_object())
    for (auto it = v.begin(); it != v.end(); ++it) check_leaves(it.value(), key + "." + it.key(), file, where);
  if (v.is_array())
    for (std::size_t i = 0; i < v.size(); ++i) check_leaves(v[i], key, file, where);
}

// An error of a reader that saw the section out of context ("ttt.base_lr", or a bare TTTConfig
// key), placed where the spec wrote it.
[[noreturn]] void relocate(const Error& e, const std::string& section, const std::string& file,
                           const io::Locate& where) {
  std::string key = e.key();
  if (key.rfind(section + ".", 0) != 0 && key != section) key = key.empty() ? section : section + "." + key;
  while (!key.empty() && key.back() == '.') key.pop_back();
  throw Error(file, where(key), e.reason());
}

int64_t int_or(const json& cfg, const std::string& dotted, int64_t def) {
  const json* v = find_path(cfg, dotted);
  return v && v->is_number() ? v->get<int64_t>() : def;
}

}  // namespace

const io::ConfigRules& train_config_rules() {
  static const io::ConfigRules r = io::ConfigRules()
                                       .integer("max_steps", 1, 10'000'000)
                                       .integer("seed", 0, kMaxInt)
                                       .integer("batch_size", 1, 4096)
                                       .integer("num_microbatches", 1, 4096)
                                       .number("max_norm")  // <= 0: no clipping
                                       .integer("log_freq", 1, 10'000'000)
                                       .integer("ckpt_freq", 0, 10'000'000)
                                       .boolean("do_ckpt")
                                       .integer("num_ckpt_keep", 1, 1'000'000)
                                       .or_null()  // null: keep every checkpoint
                                       .integer("eval_freq", 0, 10'000'000)
                                       .boolean("do_eval")
                                       .integer("tbptt_chunk", 0, int64_t{1} << 20)
                                       .integer("checkpoint_group", -1, int64_t{1} << 20)
                                       .number("optim.lr", 0)
                                       .number("optim.weight_decay", 0)
                                       .number("optim.pct_start", 0, 1, false, /*open_hi=*/true);
  return r;
}

io::ConfigRules::Check ttt_section_check(std::set<std::string> used, bool toy_layer) {
  return [used = std::move(used), toy_layer](const json& v, const std::string& key, const std::string& file,
                                             const io::Locate& where) {
    if (!v.is_object()) throw Error(file, where(key), "must be a mapping of TTT settings, got " + io::json_brief(v));
    check_leaves(v, key, file, where);
    YAML::Node root(YAML::NodeType::Map);
    root["ttt"] = to_yaml(v);
    try {
      moshi::ttt_settings_from_node(root, file, moshi::TTTDialect::ours);
    } catch (const Error& e) {
      relocate(e, key, file, where);
    }
    if (!used.empty()) {
      std::string list;
      for (const auto& u : used) list += (list.empty() ? "" : ", ") + key + "." + u;
      for (auto it = v.begin(); it != v.end(); ++it)
        if (!used.count(it.key()))
          throw Error(file, where(key + "." + it.key()), "not used by this experiment (it reads " + list + ")");
    }
    if (toy_layer) {
      // A layer of the CPU experiments, not of a 7B model.
      if (const auto m = v.find("model_dim"); m != v.end() && m->is_number() && m->get<double>() > 4096)
        throw Error(file, where(key + ".model_dim"), "must be at most 4096 for a toy TTT layer, got " + io::json_brief(*m));
      if (const auto m = v.find("mini_batch_size"); m != v.end() && m->is_number() && m->get<double>() > 8192)
        throw Error(file, where(key + ".mini_batch_size"),
                    "must be at most 8192 for a toy TTT layer, got " + io::json_brief(*m));
      try {
        ttt_config_from_json(json{{"ttt", v}}, file);
      } catch (const Error& e) {
        relocate(e, key, file, where);
      }
    }
  };
}

const std::set<std::string>& toy_ttt_keys() {
  // ttt_config_from_json (layer shape and variants), the toy LM's gate init, the trainer's lr.
  static const std::set<std::string> k = {"model_dim", "num_heads", "mini_batch_size", "base_lr", "ttt_mlp_layers",
                                          "ttt_mlp_expansion_factor", "scan_checkpoint_group_size", "inner", "eta",
                                          "recon_target", "output_path", "rope", "initial_gating_alpha", "lr"};
  return k;
}

const io::ConfigRules& toy_lm_rules() {
  static const io::ConfigRules r =
      io::ConfigRules()
          .include(train_config_rules())
          .integer("vocab", 2, 65536)
          .integer("seq_len", 2, 65536)
          .number("follow", 0, 1)
          .section("ttt", ttt_section_check(toy_ttt_keys(), /*toy_layer=*/true))
          // Logits and activations of one step (toy_training.h / toy_lm.cpp defaults).
          .relation(size_cap({{"batch_size", 4}, {"seq_len", 64}, {"vocab", 64}}, "seq_len"))
          .relation(size_cap({{"batch_size", 4}, {"seq_len", 64}, {"ttt.model_dim", 32}}, "seq_len"));
  return r;
}

io::ConfigRules::Relation size_cap(std::vector<std::pair<std::string, int64_t>> factors, std::string blame,
                                   int64_t cap) {
  return [factors = std::move(factors), blame = std::move(blame), cap](const json& cfg, const std::string& file,
                                                                       const io::Locate& where) {
    // Every factor is at most 2^20 after the key checks, so the running product cannot overflow
    // before it passes the cap.
    int64_t product = 1;
    std::string names, values;
    for (const auto& [key, def] : factors) {
      const int64_t v = std::max<int64_t>(1, int_or(cfg, key, def));
      names += (names.empty() ? "" : " x ") + key;
      values += (values.empty() ? "" : " x ") + std::to_string(v);
      product = product > cap ? product : product * std::min<int64_t>(v, cap + 1);
    }
    if (product > cap)
      throw Error(file, where(blame),
                  names + " = " + values + " is more than " + std::to_string(cap) + " values in one tensor");
  };
}

void check_grid_configs(const ExperimentSpec& spec, const ExperimentKind& kind, const std::vector<GridPoint>& points,
                        bool reduced) {
  if (kind.config.keys().empty()) return;
  // The spec is one input: a bad value in its full grid or base is an error under --reduced too,
  // though the reduced run would not read it (a CI-sized run must not bless a broken spec).
  if (reduced) check_grid_configs(spec, kind, expand_grid(spec, false), false);
  const bool reduced_grid = reduced && !spec.reduced_axes.empty();
  const std::vector<Axis>& axes = reduced_grid ? spec.reduced_axes : spec.axes;
  const std::string grid = reduced_grid ? "reduced.grid." : "grid.";
  auto with_line = [&](const std::string& written, const std::string& shown) -> std::string {
    auto it = spec.lines.find(written);
    return it == spec.lines.end() ? std::string() : shown + " (line " + std::to_string(it->second) + ")";
  };
  std::vector<std::size_t> at(axes.size());
  for (const GridPoint& p : points) {
    std::size_t rest = p.index;
    for (std::size_t i = axes.size(); i-- > 0;) {
      at[i] = rest % axes[i].values.size();
      rest /= axes[i].values.size();
    }
    auto where = [&](const std::string& key) -> std::string {
      for (std::size_t i = 0; i < axes.size(); ++i) {
        const std::string& a = axes[i].name;
        if (key == a || key.rfind(a + ".", 0) == 0) {
          const std::string k = grid + a + "[" + std::to_string(at[i]) + "]";
          const std::string l = with_line(k, k);
          return l.empty() ? k : l;
        }
      }
      // The key as written in the (reduced) base, or the nearest mapping above it.
      for (std::string k = key;; k = k.substr(0, k.find_last_of('.') == std::string::npos ? 0 : k.find_last_of('.'))) {
        const std::string shown = key.empty() ? "base" : "base." + key;
        if (reduced) {
          const std::string l = with_line("reduced.base." + k, "reduced." + shown);
          if (!l.empty() && !k.empty()) return l;
        }
        const std::string l = with_line(k.empty() ? "base" : "base." + k, shown);
        if (!l.empty()) return l;
        if (k.empty()) return shown;
      }
    };
    kind.config.check(p.config, spec.path, where);
  }
}

}  // namespace mtt::experiments
