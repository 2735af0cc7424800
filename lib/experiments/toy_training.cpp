#include "experiments/toy_training.h"

#include <c10/core/GradMode.h>

#include "experiments/synthetic_data.h"
#include "experiments/trainer.h"

namespace mtt::experiments {

at::Tensor toy_batch(const nlohmann::json& cfg, int step, int micro) {
  const uint64_t seed = cfg.value("seed", 0);
  return make_permutation_chain_batch(cfg.value("batch_size", 4), cfg.value("seq_len", 64), cfg.value("vocab", 64),
                                      cfg.value("follow", 0.9), seed * 1000003ULL + step * 131ULL + micro + 17);
}

at::Tensor toy_eval_batch(const nlohmann::json& cfg) {
  return make_permutation_chain_batch(8, cfg.value("seq_len", 64), cfg.value("vocab", 64), cfg.value("follow", 0.9),
                                      0xE7A1ULL + cfg.value("seed", 0));
}

ToyRun train_toy_lm(const RunContext& ctx, const ttt::Options& opt, const TrainHooks& hooks, bool write_run_dir) {
  const auto& cfg = ctx.point.config;
  ToyRun run;
  run.model = std::make_unique<ToyTTTLM>(toy_config_from_json(cfg, ctx.point.id), cfg.value("seed", 0));
  if (ctx.device != "cpu") run.model->to(training_device(ctx.device));
  TrainConfig tc = train_config_from_json(cfg, ctx.point.id);
  ToyTTTLM& m = *run.model;
  run.train = train(
      m.named_parameters(), tc,
      [&](int step, int micro) {
        at::Tensor tokens = toy_batch(cfg, step, micro);
        return StepLoss{m.lm_loss(tokens, nullptr, opt), tokens.numel()};
      },
      write_run_dir ? ctx.run_dir.string() : "", m.config_json(), hooks, ctx.progress);
  c10::NoGradGuard no_grad;
  run.eval_loss = m.lm_loss(toy_eval_batch(cfg), nullptr, opt).item<double>();
  return run;
}

double tail_mean_loss(const TrainResult& r, int n) {
  if (r.history.empty()) return 0;
  int k = std::min<int>(n, static_cast<int>(r.history.size()));
  double s = 0;
  for (int i = static_cast<int>(r.history.size()) - k; i < static_cast<int>(r.history.size()); ++i) s += r.history[i].loss;
  return s / k;
}

}  // namespace mtt::experiments
