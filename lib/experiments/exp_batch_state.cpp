// `batch-state`: persistent TTT state with B > 1 (seed 002, docs/ttt.md §7b). The fork copies batch
// element 0's final inner state into the parameters and starts every element of the next chunk
// from it; per-element state keeps each element on its own trajectory. Each element of a batched,
// chunked run is compared with the same element run alone through the same chunks.
#include <ATen/ATen.h>

#include <cstdio>

#include "experiments/builtin.h"
#include "experiments/config_keys.h"
#include "experiments/ttt_settings.h"
#include "ttt/ttt_layer.h"

namespace mtt::experiments {

namespace {

ttt::StateMode state_mode(const nlohmann::json& cfg) {
  std::string m = cfg.value("state_mode", "functional");
  if (m == "legacy_batch0_copy") return ttt::StateMode::legacy_batch0_copy;
  if (m == "legacy_write_params") return ttt::StateMode::legacy_write_params;
  return ttt::StateMode::functional;
}

// Runs `chunks` through a fresh layer (same seed => same W0) with one persistent state.
std::vector<at::Tensor> run_chunks(const ttt::TTTConfig& tc, uint64_t seed, const std::vector<at::Tensor>& chunks,
                                   ttt::StateMode mode) {
  ttt::TTTLayer layer(tc, seed);
  layer.to(at::kDouble);
  layer.set_requires_grad(false);
  layer.train(false);  // streaming inference, where the fork persisted its state
  ttt::TTTState state;
  ttt::Options opt;
  opt.state_mode = mode;
  std::vector<at::Tensor> outs;
  for (const auto& c : chunks) outs.push_back(layer.forward(c, &state, opt));
  return outs;
}

RunResult run_batch_state(const RunContext& ctx) {
  const auto& cfg = ctx.point.config;
  ttt::TTTConfig tc = ttt_config_from_json(cfg, ctx.point.id);
  const int64_t B = cfg.value("batch_size", 3);
  const int64_t chunk = cfg.value("chunk_len", tc.mini_batch_size);
  const int64_t n_chunks = cfg.value("chunks", 3);
  const uint64_t seed = cfg.value("seed", 0);
  const ttt::StateMode mode = state_mode(cfg);
  at::manual_seed(seed + 1);
  std::vector<at::Tensor> chunks;
  for (int64_t i = 0; i < n_chunks; ++i) chunks.push_back(at::randn({B, chunk, tc.model_dim}, at::kDouble));

  std::vector<at::Tensor> batched = run_chunks(tc, seed, chunks, mode);
  RunResult r;
  std::vector<double> per_element;
  double elem0 = 0, others = 0;
  for (int64_t b = 0; b < B; ++b) {
    std::vector<at::Tensor> alone_in;
    for (const auto& c : chunks) alone_in.push_back(c.narrow(0, b, 1));
    std::vector<at::Tensor> alone = run_chunks(tc, seed, alone_in, ttt::StateMode::functional);
    double div = 0;
    for (int64_t i = 0; i < n_chunks; ++i)
      div = std::max(div, (batched[i].narrow(0, b, 1) - alone[i]).abs().max().item<double>());
    per_element.push_back(div);
    (b == 0 ? elem0 : others) = std::max(b == 0 ? elem0 : others, div);
  }
  r.metrics["divergence_element0"] = elem0;
  r.metrics["divergence_other_elements"] = others;
  r.evidence["state_mode"] = cfg.value("state_mode", "functional");
  r.evidence["per_element_max_abs_divergence"] = per_element;
  return r;
}

Verdict verdict_batch_state(const std::vector<PointOutcome>& pts) {
  Verdict v;
  const double tol = 1e-9;  // float64 runs: agreement to rounding
  double func_max = -1, legacy_others = -1;
  for (const auto& p : pts) {
    std::string mode = p.result.evidence.value("state_mode", "functional");
    double others = p.result.metrics.value("divergence_other_elements", 0.0);
    double e0 = p.result.metrics.value("divergence_element0", 0.0);
    if (mode == "functional")
      func_max = std::max(func_max, std::max(others, e0));
    else
      legacy_others = std::max(legacy_others, others);
  }
  v.evidence = {{"functional_max_divergence", func_max}, {"legacy_other_elements_divergence", legacy_others}};
  if (func_max < 0 || legacy_others < 0) {
    v.status = "inconclusive";
    v.text = "the grid needs state_mode functional and a legacy mode";
    return v;
  }
  char buf[320];
  std::snprintf(buf, sizeof buf,
                "per-element state reproduces every element run alone (max divergence %.2g); the fork's batch-0 "
                "copy makes elements 1..B-1 continue from element 0's state (divergence %.3g)",
                func_max, legacy_others);
  v.text = buf;
  v.status = (func_max < tol && legacy_others > 1e-6) ? "confirmed" : "refuted";
  return v;
}

}  // namespace

ExperimentKind make_batch_state() {
  ExperimentKind k{"batch-state", "B > 1 with the fork's batch-0 state copy vs per-element state: per-element divergence",
                   run_batch_state, verdict_batch_state, /*device_aware=*/false, {}};
  std::set<std::string> ttt = toy_ttt_keys();
  ttt.erase("initial_gating_alpha");
  ttt.erase("lr");
  k.config = io::ConfigRules()
                 .integer("seed", 0, std::numeric_limits<int64_t>::max())
                 .choice("state_mode", {"functional", "legacy_batch0_copy", "legacy_write_params"})
                 .integer("batch_size", 1, 256)
                 .integer("chunk_len", 1, 8192)
                 .integer("chunks", 1, 256)
                 .section("ttt", ttt_section_check(ttt, /*toy_layer=*/true))
                 .relation(size_cap({{"batch_size", 3}, {"chunk_len", 16}, {"ttt.model_dim", 32}}, "chunk_len"));
  return k;
}

}  // namespace mtt::experiments
