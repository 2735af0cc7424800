#pragma once
// Training settings in moshi-finetune's key names (so a spec's `base:` reads like its YAML):
//   max_steps, seed, batch_size, num_microbatches, max_norm, log_freq, ckpt_freq,
//   optim: {lr, weight_decay, pct_start}, ttt: {lr (outer lr of TTT/SSM params), ...}
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

namespace mtt::experiments {

struct TrainConfig {
  int max_steps = 100;
  uint64_t seed = 0;
  int batch_size = 4;
  int num_microbatches = 1;  // gradient accumulation
  double max_norm = 1.0;     // gradient clipping (<= 0: off)
  int log_freq = 1;
  int ckpt_freq = 0;         // 0: only the final checkpoint
  double lr = 2e-4;
  double weight_decay = 0.1;
  double pct_start = 0.05;   // OneCycle warm-up share
  double ssm_lr = -1;        // lr of TTT/SSM params (VDIT's `lr_ssm`); < 0: same as lr
  double beta1 = 0.9, beta2 = 0.95, eps = 1e-8;
};

// Reads the keys above from a config tree; unknown keys are left to the experiment.
TrainConfig train_config_from_json(const nlohmann::json& cfg, const std::string& where);

}  // namespace mtt::experiments
