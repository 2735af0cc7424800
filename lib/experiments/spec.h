#pragma once
// An experiment spec (experiments/*.yaml): a base configuration in moshi-finetune's keys with a
// `ttt:` section, grid axes that override dotted paths of it, and the metrics to collect.
//
//   name: gating
//   experiment: gating          # a built-in kind (ttt-sweep list)
//   description: ...
//   base: {seed: 0, max_steps: 40, ttt: {enable: true, mini_batch_size: 16}}
//   grid: {ttt.initial_gating_alpha: [0.0, 0.1, 1.0], seed: [0, 1]}
//   reduced: {grid: {...}, base: {max_steps: 5}}   # the CI-sized variant (--reduced)
//   metrics: [final_loss, alpha_mean]
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "io/strict_yaml.h"

namespace mtt::experiments {

struct Axis {
  std::string name;  // dotted path into the config, e.g. "ttt.base_lr"
  std::vector<nlohmann::json> values;
};

struct ExperimentSpec {
  std::string path;
  std::string name;
  std::string experiment;  // built-in kind
  std::string description;
  nlohmann::json base = nlohmann::json::object();
  std::vector<Axis> axes;
  // --reduced: axes replaced by these (when given) and base patched by reduced_base.
  std::vector<Axis> reduced_axes;
  nlohmann::json reduced_base = nlohmann::json::object();
  std::vector<std::string> metrics;
  // Line of every key and list element as written ("base.ttt.lr", "grid.seed[1]"), so that a
  // value found wrong later (config_keys.h) is reported at its line.
  io::LineMap lines;
};

// Parses a spec; every error names the file and the line (yaml-cpp marks). The YAML is read with
// io::load_yaml_strict's budget (aliases expanded at most kSpecYamlLimits values).
ExperimentSpec load_spec(const std::string& path);
ExperimentSpec parse_spec(const std::string& yaml_text, const std::string& file_name);

// A YAML scalar becomes a JSON bool/int/float/null/string, as a reader of the YAML would expect
// ("1e-3" is a number, "29,30,31" a string).
nlohmann::json yaml_to_json(const std::string& yaml_text, const std::string& file_name);

// Dotted-path access into a config tree.
void set_path(nlohmann::json& cfg, const std::string& dotted, const nlohmann::json& value);
const nlohmann::json* find_path(const nlohmann::json& cfg, const std::string& dotted);
// Recursive merge: objects merge key by key, everything else replaces.
void merge_into(nlohmann::json& dst, const nlohmann::json& patch);

}  // namespace mtt::experiments
