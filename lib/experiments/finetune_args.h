#pragma once
// moshi-finetune's training YAML (finetune/args.py TrainArgs, with the TTT fork's additions:
// ttt:, paper_metrics, rope_continuous, resume_from, ...) as `ttt-sweep train CONFIG.yaml` reads
// it, and the run dir's args.yaml as moshi-finetune writes it.
//
// Reading: every key of TrainArgs is accepted with moshi-finetune's default when absent; our own
// keys are tbptt_chunk, checkpoint_group, context, num_codebooks (and moshi_ttt, the build record of
// an args.yaml we wrote, so a run's args.yaml can be fed back). Any other key is an error naming
// the file and line (moshi-finetune's loader refuses unknown fields too). The `ttt:` section is read
// by the TTT settings reader (moshi/config.h), which names the line of a typo.
//
// Writing: args.yaml holds every TrainArgs key (the defaults filled in, as simple_parsing's save
// writes them, yaml.dump formatting) with the values the run used, plus our keys.
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

namespace mtt::experiments {

// TrainArgs with moshi-finetune's defaults (the TTT fork's key set; run_dir "").
nlohmann::json finetune_default_args();

// Keys of ours beside TrainArgs (top level).
const std::set<std::string>& finetune_extra_keys();

struct FinetuneArgs {
  std::string file;
  nlohmann::json given = nlohmann::json::object();  // the YAML as written (numbers, strings, ...)
  nlohmann::json args;                                // defaults overlaid with `given` (floats stay floats)
  // Every leaf of the YAML (a scalar, a list or an empty mapping) in file order: dotted key, value.
  std::vector<std::pair<std::string, nlohmann::json>> leaves;
};

// Throws mtt::Error(file, "key (line N)") on unknown keys, mappings where values belong and vice
// versa, and YAML syntax errors.
FinetuneArgs read_finetune_args(const std::string& yaml_text, const std::string& file);

// The keys given in the YAML that nothing acted on, "dotted.key: value" in file order, for the one
// "ignored: ..." line a run prints at its start. `acted_on`: dotted keys (a mapping's key covers
// its children); the `ttt:` section is left out (its reader reports its own).
std::vector<std::string> keys_not_acted_on(const FinetuneArgs& a, const std::set<std::string>& acted_on);

// args.yaml as moshi-finetune writes it (yaml.dump of the dict).
std::string finetune_args_yaml(const nlohmann::json& args);

}  // namespace mtt::experiments
