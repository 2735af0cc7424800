// `gating`: the tanh SSM gate of the TTT branch (seed 001, docs/ttt.md §4). Two questions:
//   1. With alpha trained from its init, does it collapse towards 0 (the seeds saw mean 0.000-0.095)?
//   2. Forcing alpha (as `ttt-infer --force-gating-alpha` does) in {0, 0.05, ..., 1}: how does the loss
//      depend on the branch multiplier tanh(alpha)? alpha = 0 is the model without TTT.
// Grid keys: ttt.initial_gating_alpha (trained gate) or force_alpha (gate frozen at that value).
#include <c10/core/GradMode.h>

#include <cmath>
#include <cstdio>

#include "experiments/builtin.h"
#include "experiments/config_keys.h"
#include "experiments/toy_training.h"
#include "ttt/inner_loop_log.h"

namespace mtt::experiments {

namespace {

RunResult run_gating(const RunContext& ctx) {
  const auto& cfg = ctx.point.config;
  const bool forced = cfg.contains("force_alpha") && !cfg["force_alpha"].is_null();
  std::vector<double> alpha_mean, alpha_abs_mean, mult_mean;
  ToyRun* live = nullptr;
  TrainHooks hooks;
  hooks.after_step = [&](const StepRecord&) {
    at::Tensor a = live->model->forward_gate().gating_alpha.detach().to(at::kDouble);
    alpha_mean.push_back(a.mean().item<double>());
    alpha_abs_mean.push_back(a.abs().mean().item<double>());
    mult_mean.push_back(live->model->forward_gate().multiplier().detach().to(at::kDouble).mean().item<double>());
  };
  // The model is built inside train_toy_lm; forcing must happen before training starts, so the
  // run is assembled here rather than through train_toy_lm's defaults.
  ToyRun run;
  live = &run;
  run.model = std::make_unique<ToyTTTLM>(toy_config_from_json(cfg, ctx.point.id), cfg.value("seed", 0));
  if (ctx.device != "cpu") run.model->to(training_device(ctx.device));
  if (forced) {
    run.model->forward_gate().force_alpha(cfg["force_alpha"].get<double>());
    run.model->forward_gate().gating_alpha.requires_grad_(false);
  }
  TrainConfig tc = train_config_from_json(cfg, ctx.point.id);
  ToyTTTLM& m = *run.model;
  run.train = train(m.named_parameters(), tc,
                    [&](int step, int micro) {
                      at::Tensor tokens = toy_batch(cfg, step, micro);
                      return StepLoss{m.lm_loss(tokens, nullptr), tokens.numel()};
                    },
                    ctx.run_dir.string(), m.config_json(), hooks, ctx.progress);
  {
    // Eval loss, and the inner-loop losses of the trained layer for the Figure 5 plot.
    c10::NoGradGuard no_grad;
    run.eval_loss = m.lm_loss(toy_eval_batch(cfg), nullptr).item<double>();
    ttt::InnerLoopLog log;
    ttt::Options opt;
    opt.inner_loop_log = &log;
    m.lm_loss(toy_eval_batch(cfg), nullptr, opt);
    log.write_json((ctx.run_dir / "inner_loop.json").string());
  }
  RunResult r;
  r.metrics["final_loss"] = tail_mean_loss(run.train, 5);
  r.metrics["eval_loss"] = run.eval_loss;
  r.metrics["alpha_mean_final"] = alpha_mean.back();
  r.metrics["alpha_abs_mean_final"] = alpha_abs_mean.back();
  r.metrics["multiplier_mean_final"] = mult_mean.back();
  r.evidence["forced"] = forced;
  r.evidence["alpha_init"] = forced ? cfg["force_alpha"].get<double>()
                                    : cfg.value("ttt", nlohmann::json::object()).value("initial_gating_alpha", 0.1);
  r.evidence["alpha_mean_history"] = alpha_mean;
  r.evidence["multiplier_mean_history"] = mult_mean;
  return r;
}

Verdict verdict_gating(const std::vector<PointOutcome>& pts) {
  Verdict v;
  // Trained gates: did |alpha| shrink relative to its init?
  int trained = 0, collapsed = 0;
  double best_forced = INFINITY, zero_forced = NAN, best_alpha = NAN;
  for (const auto& p : pts) {
    double init = p.result.evidence.value("alpha_init", 0.0);
    if (!p.result.evidence.value("forced", false)) {
      ++trained;
      if (std::fabs(p.result.metrics.value("alpha_abs_mean_final", 0.0)) < 0.5 * std::fabs(init)) ++collapsed;
    } else {
      double l = p.result.metrics.value("eval_loss", 0.0);
      if (init == 0.0) zero_forced = l;
      if (l < best_forced) {
        best_forced = l;
        best_alpha = init;
      }
    }
  }
  v.evidence = {{"trained_runs", trained}, {"collapsed_runs", collapsed}, {"best_forced_alpha", best_alpha},
                {"best_forced_eval_loss", best_forced}, {"alpha0_eval_loss", zero_forced}};
  char buf[400];
  std::snprintf(buf, sizeof buf,
                "%d of %d trained gates shrank below half their init |alpha|; among forced gates the best eval loss "
                "%.4f is at alpha = %.3g (tanh = %.3f) against %.4f with the TTT branch off (alpha = 0).",
                collapsed, trained, best_forced, best_alpha, std::tanh(best_alpha), zero_forced);
  v.text = buf;
  v.status = trained == 0 && std::isnan(zero_forced) ? "inconclusive" : (collapsed > 0 ? "confirmed" : "refuted");
  return v;
}

}  // namespace

ExperimentKind make_gating() {
  ExperimentKind k{"gating", "alpha init and forced alpha: loss and alpha history (does the gate collapse?)",
                   run_gating, verdict_gating, /*device_aware=*/true, {}};
  k.config = io::ConfigRules().include(toy_lm_rules()).number("force_alpha").or_null();  // null: trained gate
  return k;
}

}  // namespace mtt::experiments
