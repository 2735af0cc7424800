#pragma once
// Training the built-in tiny Moshi-TTT hybrid (lib/moshi LMConfig::tiny() with the fork's TTT
// layers) on moshi-finetune jsonl data with truncated BPTT: what `ttt-sweep train` runs.
//
// The config is moshi-finetune's training YAML as it is (experiments/finetune_args.h): run_dir,
// data.train_data / data.eval_data / data.shuffle, the optimiser, schedule, logging, checkpoint and
// eval keys, duration_sec and the loss weights are honoured; the fork's `ttt:` section configures the
// TTT layers; tbptt_chunk (frames per chunk), checkpoint_group, context (attention window of the
// tiny LM in frames) and num_codebooks are ours. Every other key given (wandb, lora,
// gradient_checkpointing, param_dtype, ...) is reported in one "ignored: ..." line at the start.
// Flags override the YAML (--out for run_dir, --data, --eval-data).
//
// The run dir is moshi-finetune's: args.yaml, metrics.{train,eval}.jsonl, tb/, checkpoints that
// ttt-inspect reads, result.json; encoded codes are cached under <run dir>/codes. A non-empty run
// dir is refused unless overwrite_run_dir (it is emptied first) or --resume (the run continues from
// its newest checkpoint).
#include <nlohmann/json.hpp>
#include <ostream>
#include <string>

#include "experiments/trainer.h"

namespace mtt::experiments {

struct MoshiTrainOptions {
  std::string config;       // YAML file
  std::string data;         // moshi-finetune jsonl ("" = data.train_data)
  std::string eval_data;    // eval jsonl ("" = data.eval_data)
  std::string out;          // run dir ("" = run_dir)
  std::string mimi_weight;  // released Mimi checkpoint ("" = moshi_paths.mimi_path, unless tiny_mimi)
  bool tiny_mimi = false;   // no weights: the tiny Mimi with random weights (codes carry no meaning)
  std::string codes_cache;  // "" = <out>/codes
  std::string device = "cpu";  // cpu | cuda | cuda:N
  bool resume = false;      // continue the run dir from its newest checkpoint
  bool progress = true;
};

struct MoshiTrainResult {
  TrainResult train;
  int64_t windows = 0, files = 0, files_encoded = 0, files_cached = 0, eval_windows = 0;
  std::string codec;        // what encoded the audio, e.g. "tiny Mimi, random weights (seed 0)"
  std::string run_dir;
  std::vector<std::string> ignored;  // "key: value" of the YAML keys nothing acted on
  nlohmann::json summary;   // written to <out>/result.json
};

MoshiTrainResult train_moshi_on_jsonl(const MoshiTrainOptions& opt, std::ostream& log);

}  // namespace mtt::experiments
