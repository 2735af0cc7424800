#pragma once
// The outer training loop used by every experiment: AdamW with OneCycle warm-up and cosine decay
// (moshi-finetune's schedule), gradient clipping and accumulation, parameter groups as the
// references use them (TTT/SSM parameters with their own lr, no weight decay on biases and norms),
// metrics in moshi-finetune's metrics.train.jsonl field names, checkpoints in its run-dir layout.
#include <ATen/ATen.h>

#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "experiments/train_config.h"

namespace mtt::experiments {

using NamedParams = std::vector<std::pair<std::string, at::Tensor>>;

// VDIT's grouping rule (spec ttt.md §1.1 "Optimiser"): names containing "ttt" or "ssm" form the
// TTT group; names containing bias/norm/b1/b2 (and gating_alpha) get no weight decay.
bool is_ttt_param(const std::string& name);
bool is_no_decay_param(const std::string& name);

// OneCycleLR as torch defines it (div_factor 25, final_div_factor 1e4, cosine annealing).
double one_cycle_lr(double max_lr, int step, int total_steps, double pct_start);
// OneCycleLR's default momentum cycling (cycle_momentum=True): Adam's beta1 goes 0.95 -> 0.85 during
// warm-up and back to 0.95 while the lr decays.
double one_cycle_beta1(int step, int total_steps, double pct_start);

class AdamW {
 public:
  AdamW(NamedParams params, const TrainConfig& cfg);
  // One update with lr scale `factor` (the schedule's lr / max lr); returns nothing, reads .grad().
  void step(double lr, double ssm_lr, double beta1);
  const NamedParams& params() const { return params_; }
  // Optimizer state (exp_avg, exp_avg_sq) by parameter name, for drift measurements.
  at::Tensor exp_avg(const std::string& name) const;
  at::Tensor exp_avg_sq(const std::string& name) const;
  int64_t steps() const { return t_; }

 private:
  NamedParams params_;
  std::vector<at::Tensor> m_, v_;
  TrainConfig cfg_;
  int64_t t_ = 0;
};

struct StepLoss {
  at::Tensor loss;     // scalar with a graph to the parameters
  int64_t tokens = 0;  // tokens in this micro-batch (for wps)
};

struct StepRecord {
  int step = 0;
  double loss = 0;
  double lr = 0;
  double grad_norm = 0;
};

struct TrainHooks {
  // Called after each optimizer step (e.g. to record gate histories or W0 drift).
  std::function<void(const StepRecord&)> after_step;
  // Called before zeroing grads, with gradients of the step available (gradient-flow probes).
  std::function<void(int step)> on_gradients;
};

struct TrainResult {
  std::vector<StepRecord> history;
  std::string last_checkpoint;  // path of the last consolidated.safetensors written ("" if none)
};

// Runs cfg.max_steps optimizer steps of cfg.num_microbatches micro-batches each. Parameters that
// alias one tensor under several names are optimised once (checkpoints keep every name). Writes
// <run_dir>/metrics.train.jsonl (atomically rewritten every log) and, when run_dir is not empty,
// checkpoints under <run_dir>/checkpoints/checkpoint_NNNNNN/consolidated/ with `model_config`.
TrainResult train(const NamedParams& params, const TrainConfig& cfg,
                  const std::function<StepLoss(int step, int micro)>& loss_fn, const std::string& run_dir,
                  const nlohmann::json& model_config, const TrainHooks& hooks = {}, bool progress = true);

// What one micro-batch that runs its own backward pass(es) reports: the micro-batch loss (before
// the division by num_microbatches) and its token count.
struct MicroStep {
  double loss = 0;
  int64_t tokens = 0;
};

// The same loop as train() for micro-batches that back-propagate themselves (truncated BPTT runs
// one backward per chunk, experiments/tbptt.h). micro_fn(step, micro, divisor) must call
// backward() on its loss(es) divided by `divisor` (= num_microbatches); train() is this loop with
// one (loss / divisor).backward() per micro-batch.
TrainResult train_micro(const NamedParams& params, const TrainConfig& cfg,
                        const std::function<MicroStep(int step, int micro, double divisor)>& micro_fn,
                        const std::string& run_dir, const nlohmann::json& model_config, const TrainHooks& hooks = {},
                        bool progress = true);

// moshi-finetune's checkpoint layout; returns the consolidated.safetensors path. `tensors` are
// saved under their names, in their dtype.
std::string save_run_checkpoint(const std::string& run_dir, int step, const NamedParams& tensors,
                                const nlohmann::json& model_config);

}  // namespace mtt::experiments
