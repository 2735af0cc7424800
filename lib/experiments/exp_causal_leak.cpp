// `causal-leak`: does output t of a TTT layer depend on inputs after t? (docs/ttt.md §4, §6:
// the DiT/fork eta has identical rows and no tril, so token i trains on tokens j > i of its
// mini-batch.) Measured exactly: d y_t / d x_s for s > t by autograd in float64.
#include <ATen/ATen.h>
#include <torch/csrc/autograd/autograd.h>

#include <cmath>

#include "core/error.h"
#include "experiments/builtin.h"
#include "experiments/config_keys.h"
#include "experiments/ttt_settings.h"
#include "ttt/ttt_layer.h"

namespace mtt::experiments {

namespace {

RunResult run_causal_leak(const RunContext& ctx) {
  const auto& cfg = ctx.point.config;
  ttt::TTTConfig tc = ttt_config_from_json(cfg, ctx.point.id);
  const int64_t L = cfg.value("seq_len", 2 * tc.mini_batch_size);
  at::manual_seed(static_cast<uint64_t>(cfg.value("seed", 0)));
  ttt::TTTLayer layer(tc, cfg.value("seed", 0));
  layer.to(at::kDouble);
  layer.set_requires_grad(false);
  at::Tensor x = at::randn({1, L, tc.model_dim}, at::kDouble).requires_grad_(true);
  at::Tensor y = layer.forward(x, nullptr);

  // For every output position t: the norm of the gradient flowing to the future inputs s > t,
  // relative to the gradient reaching the past and present inputs s <= t.
  double max_future = 0, max_rel = 0;
  int64_t leaking_positions = 0;
  std::vector<double> future_by_pos;
  for (int64_t t = 0; t < L; ++t) {
    at::Tensor g = torch::autograd::grad({y.select(1, t).sum()}, {x}, {}, /*retain_graph=*/true)[0];
    double future = t + 1 < L ? g.slice(1, t + 1).norm().item<double>() : 0.0;
    double past = g.slice(1, 0, t + 1).norm().item<double>();
    future_by_pos.push_back(future);
    max_future = std::max(max_future, future);
    if (past > 0) max_rel = std::max(max_rel, future / past);
    if (future > 0) ++leaking_positions;
  }
  RunResult r;
  r.metrics["max_future_grad"] = max_future;
  r.metrics["max_future_over_past"] = max_rel;
  r.metrics["leaking_positions"] = leaking_positions;
  r.metrics["positions"] = L;
  r.evidence["eta"] = tc.eta == ttt::Eta::causal ? "causal" : "dit";
  r.evidence["mini_batch_size"] = tc.mini_batch_size;
  r.evidence["future_grad_by_position"] = future_by_pos;
  return r;
}

Verdict verdict_causal_leak(const std::vector<PointOutcome>& pts) {
  Verdict v;
  bool causal_clean = true, dit_leaks = true;
  int causal_runs = 0, dit_runs = 0;
  double dit_max = 0;
  for (const auto& p : pts) {
    bool causal = p.result.evidence.value("eta", "") == "causal";
    double leak = p.result.metrics.value("max_future_grad", 0.0);
    if (causal) {
      ++causal_runs;
      causal_clean = causal_clean && leak == 0.0;
    } else {
      ++dit_runs;
      dit_leaks = dit_leaks && leak > 0.0;
      dit_max = std::max(dit_max, p.result.metrics.value("max_future_over_past", 0.0));
    }
  }
  v.evidence = {{"causal_runs", causal_runs}, {"dit_runs", dit_runs}, {"dit_max_future_over_past", dit_max}};
  if (causal_runs == 0 || dit_runs == 0) {
    v.status = "inconclusive";
    v.text = "the grid needs both ttt.eta = causal and ttt.eta = dit";
  } else if (causal_clean && dit_leaks) {
    v.status = "confirmed";
    char buf[256];
    std::snprintf(buf, sizeof buf,
                  "the causal eta has exactly zero gradient from any output to later inputs; the DiT/fork eta "
                  "leaks future tokens within each mini-batch (future/past gradient ratio up to %.3g)", dit_max);
    v.text = buf;
  } else {
    v.status = "refuted";
    v.text = causal_clean ? "the DiT eta showed no leak" : "the causal eta leaked: a bug in the causal path";
  }
  return v;
}

}  // namespace

ExperimentKind make_causal_leak() {
  ExperimentKind k{"causal-leak", "non-causal (DiT/fork) vs causal eta: gradient of output t w.r.t. inputs after t",
                   run_causal_leak, verdict_causal_leak, /*device_aware=*/false, {}};
  std::set<std::string> ttt = toy_ttt_keys();
  ttt.erase("initial_gating_alpha");  // a bare TTT layer: no gate, no outer training
  ttt.erase("lr");
  k.config = io::ConfigRules()
                 .integer("seed", 0, std::numeric_limits<int64_t>::max())
                 .integer("seq_len", 1, 1024)  // one backward pass per position
                 .section("ttt", ttt_section_check(ttt, /*toy_layer=*/true))
                 .relation(size_cap({{"seq_len", 24}, {"seq_len", 24}, {"ttt.model_dim", 32}}, "seq_len"));
  return k;
}

}  // namespace mtt::experiments
