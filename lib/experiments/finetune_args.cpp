#include "experiments/finetune_args.h"

#include <yaml-cpp/yaml.h>

#include "core/error.h"
#include "io/strict_yaml.h"
#include "experiments/spec.h"
#include "io/python_format.h"

namespace mtt::experiments {

using nlohmann::json;

json finetune_default_args() {
  // finetune/args.py of moshi-finetune (TrainArgs, DataArgs, ModelPaths, OptimArgs, WandbArgs,
  // LoraArgs) and the TTT fork's additions (TTTArgs, paper_metrics, rope_*, resume_from, reset_*).
  // duration_sec is declared `float = 10`: its default is the int 10, and args.yaml says `10`.
  return {
      {"data", {{"train_data", ""}, {"shuffle", false}, {"eval_data", ""}}},
      {"run_dir", ""},
      {"moshi_paths",
       {{"hf_repo_id", "kyutai/moshiko-pytorch-bf16"}, {"mimi_path", nullptr}, {"moshi_path", nullptr},
        {"tokenizer_path", nullptr}, {"config_path", nullptr}}},
      {"first_codebook_weight_multiplier", 1.0},
      {"text_padding_weight", 0.5},
      {"optim", {{"lr", 1e-4}, {"weight_decay", 0.1}, {"pct_start", 0.05}}},
      {"seed", 0},
      {"num_microbatches", 1},
      {"duration_sec", 10},
      {"batch_size", 1},
      {"max_norm", 1.0},
      {"max_steps", 100},
      {"log_freq", 1},
      {"ckpt_freq", 0},
      {"save_adapters", true},
      {"do_ckpt", true},
      {"num_ckpt_keep", 3},
      {"eval_freq", 0},
      {"do_eval", false},
      {"gradient_checkpointing", true},
      {"world_size", 1},  // init=False: WORLD_SIZE of the launch; we train in one process
      {"wandb", {{"project", nullptr}, {"offline", false}, {"key", nullptr}, {"run_name", nullptr}}},
      {"lora", {{"enable", false}, {"rank", 64}, {"scaling", 2.0}, {"ft_embed", false}}},
      {"full_finetuning", false},
      {"ttt",
       {{"enable", false},
        {"layers", "middle"},
        {"base_lr", 1.0},
        {"mini_batch_size", 16},
        {"persistent_states", true},
        {"initial_gating_alpha", 0.1},
        {"override_gating_alpha_on_resume", false},
        {"ttt_layer_context", nullptr},
        {"non_ttt_layer_context", nullptr},
        {"weight_lr_multiplier", 10.0},
        {"alpha_lr_multiplier", 100.0},
        {"log_inner_loop_losses", false},
        {"inner_loop_log_interval", 1},
        {"save_inner_loop_plots", false},
        {"inner_loop_plot_dir", "./evaluation_plots/inner_loop"},
        {"optimize_chunk_size", true},
        {"chunk_size", nullptr},
        {"max_chunk_size", 50},
        {"prefer_efficiency", true},
        {"ttt_mlp_layers", 2},
        {"ttt_mlp_hidden_dims", nullptr},
        {"ttt_mlp_expansion_factor", 4.0},
        {"normalize_ttt_output", false},
        {"target_output_norm", 25.0},
        {"use_rope", false},
        {"rope_theta", 10000.0},
        {"unfrozen_attention_layers", "none"},
        {"enable_training_diagnostics", false},
        {"training_diagnostic_frequency", 100}}},
      {"paper_metrics", json::object()},
      {"param_dtype", "bfloat16"},
      {"overwrite_run_dir", false},
      {"rope_continuous", false},
      {"rope_reset_on_new_file", true},
      {"resume_from", nullptr},
      {"reset_optimizer", false},
      {"reset_step", false},
  };
}

const std::set<std::string>& finetune_extra_keys() {
  static const std::set<std::string> k = {"tbptt_chunk", "checkpoint_group", "context", "num_codebooks", "moshi_ttt"};
  return k;
}

namespace {

std::string at_line(const std::string& key, const YAML::Node& n) {
  return key + " (line " + std::to_string(n.Mark().line + 1) + ")";
}

std::string close_match(const std::string& k, const json& known) {
  std::string best;
  for (auto it = known.begin(); it != known.end(); ++it) {
    const std::string& name = it.key();
    if (name.size() > 2 && (name.find(k) != std::string::npos || k.find(name) != std::string::npos)) best = name;
  }
  if (best.empty())  // one edit apart (a typo)
    for (auto it = known.begin(); it != known.end(); ++it) {
      const std::string& a = it.key();
      const std::string& b = k;
      if (a.size() + 1 < b.size() || b.size() + 1 < a.size()) continue;
      size_t i = 0;
      while (i < a.size() && i < b.size() && a[i] == b[i]) ++i;
      size_t ja = a.size(), jb = b.size();
      while (ja > i && jb > i && a[ja - 1] == b[jb - 1]) --ja, --jb;
      if (ja - i <= 1 && jb - i <= 1) best = a;
    }
  return best;
}

// Walks the YAML mapping `node` against the defaults `def` (null: free-form, no key checks).
void walk(const YAML::Node& node, const json* def, const std::string& prefix, const std::string& file,
          std::vector<std::pair<std::string, json>>& leaves) {
  for (auto it = node.begin(); it != node.end(); ++it) {
    if (!it->first.IsScalar()) throw Error(file, at_line(prefix + "?", it->first), "mapping keys must be scalars");
    const std::string key = it->first.Scalar();
    const std::string path = prefix + key;
    const YAML::Node v = it->second;
    const json* d = nullptr;
    if (def) {
      if (!def->contains(key)) {
        if (prefix.empty() && finetune_extra_keys().count(key)) {
          // ours
        } else {
          const std::string near = close_match(key, *def);
          throw Error(file, at_line(path, it->first),
                      "unknown key (not a moshi-finetune TrainArgs key" +
                          std::string(prefix.empty() ? " nor one of ours: tbptt_chunk, checkpoint_group, context, num_codebooks" : "") +
                          ")" + (near.empty() ? "" : "; did you mean '" + prefix + near + "'?"));
        }
      } else {
        d = &(*def)[key];
      }
    }
    if (v.IsMap() && v.size() > 0) {
      if (d && !d->is_object())
        throw Error(file, at_line(path, it->first), "expected a value, got a mapping");
      // ttt: belongs to the TTT settings reader (its own key checks and lines); paper_metrics and
      // moshi_ttt are free-form.
      const bool free_form = !d || path == "ttt" || path == "paper_metrics";
      walk(v, free_form ? nullptr : d, path + ".", file, leaves);
      continue;
    }
    if (d && d->is_object() && !(v.IsNull() || v.IsMap()))
      throw Error(file, at_line(path, it->first), "expected a mapping");
    leaves.emplace_back(path, v.IsMap() ? json::object() : json());  // value filled below from `given`
  }
}

const json* find(const json& j, const std::string& dotted) { return find_path(j, dotted); }

// Overlays `given` onto `base`: mappings key by key, a number where the default is a float
// becomes a float (simple_parsing decodes the field's type).
void overlay(json& base, const json& given) {
  for (auto it = given.begin(); it != given.end(); ++it) {
    json& b = base[it.key()];
    const json& g = it.value();
    if (b.is_object() && g.is_object()) overlay(b, g);
    else if (b.is_object() && g.is_null()) continue;  // `wandb:` with nothing under it: the defaults
    else if ((b.is_number_float() || it.key() == "duration_sec") && g.is_number()) b = g.get<double>();
    else b = g;
  }
}

void check_types(const json& given, const json& def, const std::string& prefix, const std::string& file) {
  for (auto it = given.begin(); it != given.end(); ++it) {
    if (!def.contains(it.key())) continue;
    const json& d = def[it.key()];
    const json& g = it.value();
    const std::string path = prefix + it.key();
    if (path == "ttt" || path == "paper_metrics") continue;
    if (d.is_object()) {
      if (g.is_object()) check_types(g, d, path + ".", file);
      continue;
    }
    if (g.is_null() && !d.is_null() && !d.is_string()) {
      // moshi-finetune would pass None into a typed field; say so instead of failing later.
      throw Error(file, path, "null is not a valid value (default " + d.dump() + ")");
    }
    if (d.is_boolean() && !g.is_boolean()) throw Error(file, path, "expected true or false, got " + g.dump());
    if (d.is_number_integer() && !(g.is_number_integer() || g.is_null()) && path != "duration_sec")
      throw Error(file, path, "expected an integer, got " + g.dump());
    if ((d.is_number_float() || path == "duration_sec") && !g.is_number())
      throw Error(file, path, "expected a number, got " + g.dump());
    if (d.is_string() && !(g.is_string() || g.is_null())) throw Error(file, path, "expected a string, got " + g.dump());
  }
}

}  // namespace

FinetuneArgs read_finetune_args(const std::string& text, const std::string& file) {
  FinetuneArgs a;
  a.file = file;
  // Aliases charged before any node is built (a cycle or an alias bomb is one error naming its line).
  YAML::Node root = io::load_yaml_strict(text, file);
  if (!root || root.IsNull()) root = YAML::Node(YAML::NodeType::Map);
  if (!root.IsMap()) throw Error(file, "line 1", "a training config must be a YAML mapping");
  if (root["experiment"] && (root["grid"] || root["base"]))
    throw Error(file, io::yaml_where("experiment", root["experiment"]),
                "this is an experiment spec (name, experiment, base, grid): run it with ttt-sweep run; "
                "ttt-sweep train takes a training config (moshi-finetune's keys)");
  const json def = finetune_default_args();
  walk(root, &def, "", file, a.leaves);
  a.given = yaml_to_json(text.empty() ? "{}" : text, file);
  if (a.given.is_null()) a.given = json::object();
  for (auto& [path, value] : a.leaves)
    if (const json* v = find(a.given, path)) value = *v;
  check_types(a.given, def, "", file);
  a.args = def;
  overlay(a.args, a.given);
  return a;
}

std::vector<std::string> keys_not_acted_on(const FinetuneArgs& a, const std::set<std::string>& acted_on) {
  std::vector<std::string> out;
  for (const auto& [path, value] : a.leaves) {
    if (path == "ttt" || path.rfind("ttt.", 0) == 0) continue;
    bool acted = false;
    for (std::string p = path;;) {
      if (acted_on.count(p)) {
        acted = true;
        break;
      }
      const auto dot = p.rfind('.');
      if (dot == std::string::npos) break;
      p = p.substr(0, dot);
    }
    if (acted) continue;
    const std::string text = value.is_string() ? value.get<std::string>() : value.dump();
    out.push_back(path + ": " + (value.is_string() && text.empty() ? "''" : text));
  }
  return out;
}

std::string finetune_args_yaml(const json& args) { return io::pyyaml_dump(args); }

}  // namespace mtt::experiments
