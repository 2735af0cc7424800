// `mini-batch`: the inner-loop mini-batch size b against the inner learning rate base_lr (spec
// docs/ttt.md §1.1, §9: VDIT trains TTT-MLP with b = 64, base_lr 0.1; LMPT/the fork default to b = 16,
// base_lr 1.0). Smaller b means more inner updates per sequence; larger base_lr larger steps.
#include <cstdio>
#include <limits>

#include "experiments/builtin.h"
#include "experiments/config_keys.h"
#include "experiments/toy_training.h"

namespace mtt::experiments {

namespace {

RunResult run_mini_batch(const RunContext& ctx) {
  ToyRun run = train_toy_lm(ctx);
  RunResult r;
  const auto t = ctx.point.config.value("ttt", nlohmann::json::object());
  r.metrics["final_loss"] = tail_mean_loss(run.train, 5);
  r.metrics["eval_loss"] = run.eval_loss;
  r.metrics["first_loss"] = run.train.history.front().loss;
  r.evidence["mini_batch_size"] = t.value("mini_batch_size", 16);
  r.evidence["base_lr"] = t.value("base_lr", 1.0);
  return r;
}

Verdict verdict_mini_batch(const std::vector<PointOutcome>& pts) {
  Verdict v;
  double best = std::numeric_limits<double>::infinity(), worst = -best;
  nlohmann::json best_point;
  bool finite = true;
  for (const auto& p : pts) {
    double l = p.result.metrics.value("eval_loss", 0.0);
    finite = finite && std::isfinite(l);
    if (l < best) {
      best = l;
      best_point = p.result.evidence;
    }
    worst = std::max(worst, l);
  }
  v.evidence = {{"best", best_point}, {"best_eval_loss", best}, {"worst_eval_loss", worst}};
  char buf[300];
  std::snprintf(buf, sizeof buf, "best eval loss %.4f at b = %s, base_lr = %s; worst %.4f over %zu settings%s", best,
                best_point.value("mini_batch_size", nlohmann::json()).dump().c_str(),
                best_point.value("base_lr", nlohmann::json()).dump().c_str(), worst, pts.size(),
                finite ? "" : " (some runs diverged)");
  v.text = buf;
  v.status = finite ? "measured" : "diverged";
  return v;
}

}  // namespace

ExperimentKind make_mini_batch() {
  ExperimentKind k{"mini-batch", "inner mini-batch size b x inner learning rate base_lr: outer loss", run_mini_batch,
                   verdict_mini_batch, /*device_aware=*/true, {}};
  k.config = toy_lm_rules();
  return k;
}

}  // namespace mtt::experiments
