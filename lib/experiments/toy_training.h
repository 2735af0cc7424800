#pragma once
// Training the toy TTT LM on the in-context permutation task: the shared body of the experiments
// that compare outer-loss curves (norm-variant, mini-batch, gating, gradient-flow).
#include <memory>

#include "experiments/registry.h"
#include "experiments/toy_lm.h"
#include "experiments/trainer.h"

namespace mtt::experiments {

struct ToyRun {
  std::unique_ptr<ToyTTTLM> model;
  TrainResult train;
  double eval_loss = 0;  // on a held-out batch after training
};

// Data keys: vocab, seq_len, follow (task), plus TrainConfig and `ttt:` keys.
at::Tensor toy_batch(const nlohmann::json& cfg, int step, int micro);
at::Tensor toy_eval_batch(const nlohmann::json& cfg);

ToyRun train_toy_lm(const RunContext& ctx, const ttt::Options& opt = {}, const TrainHooks& hooks = {},
                    bool write_run_dir = true);

// Mean and min/max of a history's losses over its last `n` steps.
double tail_mean_loss(const TrainResult& r, int n);

}  // namespace mtt::experiments
