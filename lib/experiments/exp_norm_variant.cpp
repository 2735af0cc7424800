// `norm-variant`: the reconstruction target (seed 002, docs/ttt.md §1.1 step 4 and §7a).
//   correct: T = LN(XV - XK) (the op then trains the inner model to map XK to a normalised target)
//   legacy:  T = LN(XV) - XK (the fork's bug: XK is subtracted after the norm)
// Evidence: per-token statistics of T at init (with gamma = 1, beta = 0 the correct T has mean 0 and
// unbiased std 1 by construction), the inner-loop losses before/after the update, the outer loss.
#include <c10/core/GradMode.h>

#include <cmath>
#include <cstdio>

#include "experiments/builtin.h"
#include "experiments/config_keys.h"
#include "experiments/toy_training.h"
#include "ttt/inner_loop_log.h"

namespace mtt::experiments {

namespace {

RunResult run_norm_variant(const RunContext& ctx) {
  const auto& cfg = ctx.point.config;
  RunResult r;
  {
    // Target statistics of the untrained model (gamma = 1, beta = 0).
    ToyTTTLM probe(toy_config_from_json(cfg, ctx.point.id), cfg.value("seed", 0));
    c10::NoGradGuard no_grad;
    auto d = probe.ttt_layer().forward_detailed(probe.embed(toy_eval_batch(cfg)), nullptr);
    at::Tensor T = (d.XV - d.XK).to(at::kDouble);  // [B, H, L, d]
    at::Tensor mean = T.mean(-1), std = T.std(-1, /*unbiased=*/true);
    r.metrics["target_mean_abs"] = mean.abs().mean().item<double>();
    r.metrics["target_std"] = std.mean().item<double>();
    r.metrics["target_std_minus_1_abs"] = (std - 1).abs().max().item<double>();
  }
  ToyRun run = train_toy_lm(ctx);
  ttt::InnerLoopLog log;
  ttt::Options opt;
  opt.inner_loop_log = &log;
  {
    c10::NoGradGuard no_grad;
    run.model->lm_loss(toy_eval_batch(cfg), nullptr, opt);
  }
  log.write_json((ctx.run_dir / "inner_loop.json").string());
  const auto& rec = log.layers().begin()->second;
  auto mean_of = [](const std::vector<double>& v) {
    double s = 0;
    for (double x : v) s += x;
    return v.empty() ? 0.0 : s / static_cast<double>(v.size());
  };
  r.metrics["inner_loss_w0"] = mean_of(rec.loss_w0);
  r.metrics["inner_loss_before"] = mean_of(rec.loss_before);
  r.metrics["inner_loss_after"] = mean_of(rec.loss_after);
  r.metrics["final_loss"] = tail_mean_loss(run.train, 5);
  r.metrics["eval_loss"] = run.eval_loss;
  r.evidence["recon_target"] = cfg.value("ttt", nlohmann::json::object()).value("recon_target", "correct");
  std::vector<double> curve;
  for (const auto& h : run.train.history) curve.push_back(h.loss);
  r.evidence["loss_curve"] = curve;
  return r;
}

Verdict verdict_norm_variant(const std::vector<PointOutcome>& pts) {
  Verdict v;
  double correct_dev = -1, legacy_dev = -1, correct_loss = 0, legacy_loss = 0, legacy_std = 0;
  int nc = 0, nl = 0;
  for (const auto& p : pts) {
    std::string variant = p.result.evidence.value("recon_target", "correct");
    double dev = std::max(p.result.metrics.value("target_std_minus_1_abs", 0.0),
                          p.result.metrics.value("target_mean_abs", 0.0));
    if (variant == "correct") {
      correct_dev = std::max(correct_dev, dev);
      correct_loss += p.result.metrics.value("eval_loss", 0.0);
      ++nc;
    } else if (variant == "legacy") {
      legacy_dev = std::max(legacy_dev, dev);
      legacy_std += p.result.metrics.value("target_std", 0.0);
      legacy_loss += p.result.metrics.value("eval_loss", 0.0);
      ++nl;
    }
  }
  if (nc == 0 || nl == 0) {
    v.status = "inconclusive";
    v.text = "the grid needs ttt.recon_target correct and legacy";
    return v;
  }
  correct_loss /= nc;
  legacy_loss /= nl;
  legacy_std /= nl;
  v.evidence = {{"correct_target_max_deviation", correct_dev}, {"legacy_target_max_deviation", legacy_dev},
                {"legacy_target_std", legacy_std}, {"correct_eval_loss", correct_loss},
                {"legacy_eval_loss", legacy_loss}};
  char buf[400];
  std::snprintf(buf, sizeof buf,
                "LN(XV - XK) gives a target with per-token mean 0 and std 1 (max deviation %.2g); the fork's "
                "LN(XV) - XK does not (deviation %.3g, mean std %.3f), so the inner LN output can never match it. "
                "Eval loss: correct %.4f, legacy %.4f.",
                correct_dev, legacy_dev, legacy_std, correct_loss, legacy_loss);
  v.text = buf;
  v.status = (correct_dev < 1e-4 && legacy_dev > 5e-3) ? "confirmed" : "refuted";
  return v;
}

}  // namespace

ExperimentKind make_norm_variant() {
  ExperimentKind k{"norm-variant", "reconstruction target LN(XV - XK) (correct) vs LN(XV) - XK (fork legacy)",
                   run_norm_variant, verdict_norm_variant, /*device_aware=*/true, {}};
  k.config = toy_lm_rules();
  return k;
}

}  // namespace mtt::experiments
