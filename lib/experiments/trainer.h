#pragma once
// The outer training loop used by every experiment: AdamW with OneCycle warm-up and cosine decay
// (moshi-finetune's schedule), gradient clipping and accumulation, parameter groups as the
// references use them (TTT/SSM parameters with their own lr, no weight decay on biases and norms),
// and moshi-finetune's run dir: metrics.train.jsonl / metrics.eval.jsonl in its schema, one line
// appended per log step, TensorBoard events under tb/, checkpoints in its layout (written to
// tmp.checkpoint_NNNNNN and renamed, the newest num_ckpt_keep kept). Each checkpoint also holds
// training_state.safetensors (optimizer moments, scheduler step, RNG state, data position), so
// `resume` continues a killed run with the losses an uninterrupted run would have had.
#include <ATen/ATen.h>

#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "experiments/train_config.h"

namespace mtt::experiments {

using NamedParams = std::vector<std::pair<std::string, at::Tensor>>;

// `--device` of training: "cpu", "cuda" or "cuda:N". A CUDA device must be visible to LibTorch;
// otherwise a usage error naming `flag` says why.
at::Device training_device(const std::string& spec, const std::string& flag = "--device");

// VDIT's grouping rule (docs/ttt.md §1.1 "Optimiser"): names containing "ttt" or "ssm" form the
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
  // The state a resumed run needs: moments by parameter name and the step count.
  void save_state(std::map<std::string, at::Tensor>& out) const;
  void load_state(const std::map<std::string, at::Tensor>& in, int64_t steps, const std::string& file);
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
  int64_t real_tokens = -1;  // tokens with a target (prob_real_tokens); -1: all of them
};

struct StepRecord {
  int step = 0;
  double loss = 0;
  double lr = 0;
  double grad_norm = 0;
};

struct EvalRecord {
  int step = 0;
  double eval_loss = 0;
  double perplexity = 0;  // 2 ** eval_loss, as moshi-finetune's evaluate() defines it
  double train_loss = 0;  // the step's training loss
};

struct TrainHooks {
  // Called after each optimizer step (e.g. to record gate histories or W0 drift).
  std::function<void(const StepRecord&)> after_step;
  // Called before zeroing grads, with gradients of the step available (gradient-flow probes).
  std::function<void(int step)> on_gradients;
  // The eval loss on the eval split (moshi-finetune's evaluate(): mean of text + audio loss over
  // its batches, no gradients); called every eval_freq steps and at the last one when do_eval.
  std::function<double(int step)> evaluate;
};

struct TrainResult {
  std::vector<StepRecord> history;  // the steps this call ran (after the resumed one)
  std::vector<EvalRecord> evals;
  std::string last_checkpoint;  // path of the last consolidated.safetensors written ("" if none)
  int resumed_from = 0;         // the checkpoint step a resumed run continued from (0: fresh)
};

// Runs cfg.max_steps optimizer steps of cfg.num_microbatches micro-batches each. Parameters that
// alias one tensor under several names are optimised once (checkpoints keep every name). When
// run_dir is not empty: metrics (metrics_logger.h) and checkpoints under
// <run_dir>/checkpoints/checkpoint_NNNNNN/consolidated/ with `model_config`. With cfg.resume the
// run continues from the newest checkpoint that has a training state (none: from step 0), after
// dropping the metrics of later steps; loss_fn / micro_fn see the same step numbers as the
// uninterrupted run, so data that is a function of the step resumes at its position.
TrainResult train(const NamedParams& params, const TrainConfig& cfg,
                  const std::function<StepLoss(int step, int micro)>& loss_fn, const std::string& run_dir,
                  const nlohmann::json& model_config, const TrainHooks& hooks = {}, bool progress = true);

// What one micro-batch that runs its own backward pass(es) reports: the micro-batch loss (before
// the division by num_microbatches) and its token count.
struct MicroStep {
  double loss = 0;
  int64_t tokens = 0;
  int64_t real_tokens = -1;  // -1: all tokens are real
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
// saved under their names, in their dtype; `extra` files (name -> safetensors tensors + metadata)
// go beside them. The folder is written as checkpoints/tmp.checkpoint_NNNNNN and renamed, so a
// kill never leaves a partial checkpoint_NNNNNN for a reader (or a resume) to pick.
struct ExtraCheckpointFile {
  std::map<std::string, at::Tensor> tensors;
  std::map<std::string, std::string> metadata;
};
std::string save_run_checkpoint(const std::string& run_dir, int step, const NamedParams& tensors,
                                const nlohmann::json& model_config,
                                const std::map<std::string, ExtraCheckpointFile>& extra = {});

// The newest checkpoint of a run dir that holds a training state (consolidated/training_state.safetensors), or
// -1; checkpoints without one (written by other tools) are not resumable.
int newest_resumable_step(const std::string& run_dir);

}  // namespace mtt::experiments
