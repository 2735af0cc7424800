#pragma once
// Training the built-in tiny Moshi-TTT hybrid (lib/moshi LMConfig::tiny() with the fork's TTT
// layers) on moshi-finetune jsonl data with truncated BPTT: what `ttt-sweep train` runs.
//
// The config is a moshi-finetune-style YAML: max_steps, seed, batch_size, num_microbatches,
// max_norm, log_freq, ckpt_freq, optim {lr, weight_decay, pct_start}, duration_sec,
// first_codebook_weight_multiplier, text_padding_weight, the fork's `ttt:` section, plus
// tbptt_chunk (frames per chunk), checkpoint_group and `context` (attention window of the tiny LM
// in frames). The run dir gets metrics.train.jsonl and moshi-finetune checkpoints that ttt-inspect
// reads; encoded codes are cached under <run dir>/codes.
#include <nlohmann/json.hpp>
#include <ostream>
#include <string>

#include "experiments/trainer.h"

namespace mtt::experiments {

struct MoshiTrainOptions {
  std::string config;       // YAML file
  std::string data;         // moshi-finetune jsonl
  std::string out;          // run dir
  std::string mimi_weight;  // released Mimi checkpoint (tokenizer-e351c8d8-checkpoint125.safetensors)
  bool tiny_mimi = false;   // no weights: the tiny Mimi with random weights (codes carry no meaning)
  std::string codes_cache;  // "" = <out>/codes
  bool progress = true;
};

struct MoshiTrainResult {
  TrainResult train;
  int64_t windows = 0, files = 0, files_encoded = 0, files_cached = 0;
  std::string codec;        // what encoded the audio, e.g. "tiny Mimi, random weights (seed 0)"
  nlohmann::json summary;   // written to <out>/result.json
};

MoshiTrainResult train_moshi_on_jsonl(const MoshiTrainOptions& opt, std::ostream& log);

}  // namespace mtt::experiments
