// `fork-streaming`: what the Moshi-TTT fork's streaming loses (issue 12). Its 2-layer TTTMLP.ttt
// never writes its state back, so in model.streaming() every frame restarts from W0
// (StreamingState::fork_restart) although the run says persistent_states: true. The same codes are
// scored teacher-forced (ttt-infer --score's library calls) three ways: the full sequence, streamed
// with a persistent TTT state, streamed the fork's way; the loss by position shows what the
// stateless streaming costs along the context. `run:` names a fork run dir (`moshi_weight:` for
// adapter-only runs); without it the tiny Moshi-TTT with random weights.
#include <c10/core/GradMode.h>

#include <cmath>
#include <cstdio>
#include <limits>

#include "core/error.h"
#include "experiments/builtin.h"
#include "experiments/config_keys.h"
#include "infer/score.h"
#include "moshi/lm.h"
#include "moshi/model_source.h"
#include "moshi/model_weights.h"

namespace mtt::experiments {

namespace {

using nlohmann::json;

double mean_of(const at::Tensor& loss, int64_t from, int64_t to) {
  // Mean over batch and positions [from, to) of the finite entries (NaN = no target).
  at::Tensor x = loss.narrow(1, from, to - from).to(at::kDouble);
  at::Tensor ok = at::isfinite(x);
  const int64_t n = ok.sum().item<int64_t>();
  return n ? at::where(ok, x, at::zeros_like(x)).sum().item<double>() / static_cast<double>(n) : std::nan("");
}

RunResult run_fork_streaming(const RunContext& ctx) {
  const json& cfg = ctx.point.config;
  const std::string where = ctx.point.id;
  const std::string mode = cfg.value("streaming", "full");
  if (mode != "full" && mode != "persistent" && mode != "fork_restart")
    throw Error(where, "streaming", "expected full, persistent or fork_restart, got '" + mode + "'");
  const uint64_t seed = cfg.value("seed", 0);
  const int64_t T = cfg.value("frames", 48);
  if (T < 2 || T > 100000) throw Error(where, "frames", "must be in 2..100000");

  moshi::LMConfig c;
  std::optional<moshi::ModelSource> src;
  if (cfg.contains("run") && cfg["run"].is_string()) {
    moshi::ModelSourceOptions so;
    so.moshi_weight = cfg.value("moshi_weight", "");
    src = moshi::resolve_model_source(cfg["run"].get<std::string>(), so);
    c = src->config;
  } else {
    c = moshi::LMConfig::tiny();
    c.ttt.enable = true;
    c.ttt.layers = "all";
    c.ttt.mini_batch_size = cfg.value("mini_batch_size", 1);
    c.ttt.initial_gating_alpha = cfg.value("initial_gating_alpha", 0.5);
  }
  if (!c.ttt.enable || c.ttt.variant != moshi::TTTVariant::fork_hybrid)
    throw Error(where, "run", "not a fork hybrid TTT model");
  c.ttt.streaming_state = mode == "fork_restart" ? ttt::StreamingState::fork_restart : ttt::StreamingState::persistent;
  moshi::LMModel lm(c);
  if (src) lm.load(moshi::weight_tensors(*src), moshi::load_options(*src), src->path);
  else lm.init_random(seed);
  lm.set_requires_grad(false);
  c10::NoGradGuard no_grad;

  at::manual_seed(seed + 29);
  at::Tensor codes = at::empty({1, c.num_codebooks(), T}, at::kLong);
  codes.select(1, 0).copy_(at::randint(0, c.text_card, {1, T}, at::kLong));
  for (int64_t k = 1; k < c.num_codebooks(); ++k) codes.select(1, k).copy_(at::randint(0, c.card, {1, T}, at::kLong));
  const moshi::LMOutput out = mode == "full" ? lm.forward(codes) : infer::streamed_forward(lm, codes);
  const infer::PositionLosses pl = infer::position_losses(c, out, codes, infer::ScoreOptions{});

  RunResult r;
  r.metrics["audio_loss"] = mean_of(pl.audio_loss, 0, T);
  r.metrics["audio_loss_first_half"] = mean_of(pl.audio_loss, 0, T / 2);
  r.metrics["audio_loss_second_half"] = mean_of(pl.audio_loss, T / 2, T);
  r.metrics["text_loss"] = mean_of(pl.text_loss, 0, T);
  std::vector<double> by_pos;
  const at::Tensor a = pl.audio_loss[0].to(at::kDouble).contiguous();
  for (int64_t t = 0; t < T; ++t) by_pos.push_back(a[t].item<double>());
  r.evidence["streaming"] = mode;
  r.evidence["audio_loss_by_position"] = by_pos;
  r.evidence["model"] = src ? src->describe() : std::string("tiny Moshi-TTT, TTT in every layer, random weights");
  r.evidence["mini_batch_size"] = c.ttt.mini_batch_size;
  return r;
}

Verdict verdict_fork_streaming(const std::vector<PointOutcome>& pts) {
  Verdict v;
  std::map<std::string, std::vector<double>> curve;
  std::map<std::string, double> loss;
  for (const auto& p : pts) {
    const std::string m = p.result.evidence.value("streaming", "");
    curve[m] = p.result.evidence.value("audio_loss_by_position", std::vector<double>{});
    loss[m] = p.result.metrics.value("audio_loss", 0.0);
  }
  if (!curve.count("full") || !curve.count("persistent") || !curve.count("fork_restart")) {
    v.status = "inconclusive";
    v.text = "the grid needs streaming: full, persistent and fork_restart";
    return v;
  }
  auto max_gap = [&](const std::string& m) {
    double g = 0;
    for (size_t t = 0; t < curve[m].size() && t < curve["full"].size(); ++t)
      if (std::isfinite(curve[m][t]) && std::isfinite(curve["full"][t])) g = std::max(g, std::abs(curve[m][t] - curve["full"][t]));
    return g;
  };
  const double gap_persistent = max_gap("persistent"), gap_fork = max_gap("fork_restart");
  v.evidence = {{"audio_loss", loss}, {"max_gap_to_full_persistent", gap_persistent},
                {"max_gap_to_full_fork_restart", gap_fork}};
  char buf[400];
  std::snprintf(buf, sizeof buf,
                "streamed with a persistent TTT state the per-position audio loss stays within %.2g of the full "
                "sequence; streamed the fork's way (every frame from W0) it departs by up to %.3g (mean audio loss "
                "%.4f vs %.4f full)",
                gap_persistent, gap_fork, loss["fork_restart"], loss["full"]);
  v.text = buf;
  v.status = gap_fork > 100 * std::max(gap_persistent, 1e-6) ? "confirmed" : "refuted";
  return v;
}

}  // namespace

ExperimentKind make_fork_streaming() {
  ExperimentKind k{"fork-streaming",
                   "loss by position: full sequence vs streamed with a persistent TTT state vs the fork's stateless streaming",
                   run_fork_streaming, verdict_fork_streaming, /*device_aware=*/false, {}};
  k.config = io::ConfigRules()
                 .integer("seed", 0, std::numeric_limits<int64_t>::max())
                 .integer("frames", 2, 100000)
                 .choice("streaming", {"full", "persistent", "fork_restart"})
                 .integer("mini_batch_size", 1, 4096)
                 .number("initial_gating_alpha", -1e6, 1e6)
                 .text("run")  // a fork run dir instead of the tiny model
                 .text("moshi_weight");
  return k;
}

}  // namespace mtt::experiments
