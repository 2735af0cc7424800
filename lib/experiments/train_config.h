#pragma once
// Training settings in moshi-finetune's key names and with its defaults (finetune/args.py), so a
// spec's `base:` reads like its YAML:
//   max_steps, seed, batch_size, num_microbatches, max_norm, log_freq, ckpt_freq, do_ckpt,
//   num_ckpt_keep, eval_freq, do_eval, optim: {lr, weight_decay, pct_start},
//   ttt: {lr (outer lr of TTT/SSM params), ...}
// and the truncated-BPTT settings of experiments/tbptt.h (no moshi-finetune equivalent, which
// trains each duration_sec window in one pass): tbptt_chunk, checkpoint_group.
#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

namespace mtt::experiments {

struct TrainConfig {
  int max_steps = 100;
  uint64_t seed = 0;
  int batch_size = 1;
  int num_microbatches = 1;  // gradient accumulation
  double max_norm = 1.0;     // gradient clipping (<= 0: off)
  int log_freq = 1;
  int ckpt_freq = 0;         // 0: only the final checkpoint
  bool do_ckpt = true;       // false: no checkpoint at all
  std::optional<int> num_ckpt_keep = 3;  // newest checkpoints kept (null: every one)
  int eval_freq = 0;         // with do_eval: eval every eval_freq steps (0: at the last step only)
  bool do_eval = false;
  double lr = 1e-4;
  double weight_decay = 0.1;
  double pct_start = 0.05;   // OneCycle warm-up share
  double ssm_lr = -1;        // lr of TTT/SSM params (VDIT's `lr_ssm`); < 0: same as lr
  double beta1 = 0.9, beta2 = 0.95, eps = 1e-8;
  // Truncated BPTT: positions (tokens / Mimi frames) per chunk of a training sequence; the TTT
  // state (and KV cache) is carried from chunk to chunk and detached in between. 0: one chunk.
  int64_t tbptt_chunk = 0;
  // Activation checkpointing of the TTT scan (docs/ttt.md §3): mini-batches per remat group
  // (ttt::Options::checkpoint_group_override). < 0: the layer config's scan_checkpoint_group_size.
  int64_t checkpoint_group = -1;
  // Not a config key: continue the run dir from its newest checkpoint (`--resume`), with the
  // optimizer state, scheduler step, RNG state and data position saved there.
  bool resume = false;
};

// Reads the keys above from a config tree; unknown keys are left to the experiment.
TrainConfig train_config_from_json(const nlohmann::json& cfg, const std::string& where);

}  // namespace mtt::experiments
