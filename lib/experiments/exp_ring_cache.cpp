// `ring-cache`: what the streaming ring KV cache forgets, and whether TTT state remembers it
// (seed 002 "ring KV cache information loss", docs/moshi.md §2.6). The tiny Moshi LM is streamed
// frame by frame with a KV capacity `context`; two batch elements differ only in the text token at
// distance d before the last frame. The influence of that token on the last text logits is
// measured exactly (max |difference|) after streaming in chunks of the TTT mini-batch size: a base transformer can only carry it through its caches
// (reach about num_layers x context), a TTT state carries it on; resetting the state every
// `reset_every` frames cuts that memory again.
#include <c10/core/GradMode.h>

#include <cstdio>

#include "core/error.h"
#include "experiments/builtin.h"
#include "experiments/config_keys.h"
#include "moshi/hybrid.h"
#include "moshi/lm.h"

namespace mtt::experiments {

namespace {

using nlohmann::json;

// Streams in chunks of `chunk` frames: the fork's hybrid TTT uses the DiT eta, whose persistent
// state only advances by whole mini-batches, so chunk = the TTT mini-batch size.
double influence_at(moshi::LMModel& m, const moshi::LMConfig& c, int64_t d, bool reset, int64_t reset_every,
                    int64_t chunk, uint64_t seed) {
  const int64_t K = c.num_codebooks();
  const int64_t S = (d + 1 + chunk) / chunk * chunk;  // >= d + 2 frames, a whole number of chunks
  at::manual_seed(seed + 7919 * static_cast<uint64_t>(d));
  at::Tensor seq = at::empty({2, K, S}, at::kLong);
  seq.select(1, 0).copy_(at::randint(0, c.text_card, {1, S}, at::kLong).expand({2, S}));
  for (int64_t k = 1; k < K; ++k) seq.select(1, k).copy_(at::randint(0, c.card, {1, S}, at::kLong).expand({2, S}));
  // The two elements differ in one text token, d frames before the last one.
  const int64_t p = S - 1 - d;
  const int64_t tok = seq[0][0][p].item<int64_t>();
  seq[1][0][p] = (tok + 1) % c.text_card;

  moshi::LMState st = m.new_state(2);
  at::Tensor last;
  for (int64_t t = 0; t < S; t += chunk) {
    auto out = m.forward_text(seq.narrow(2, t, chunk), &st);
    last = out.second.narrow(2, chunk - 1, 1);
    if (reset && reset_every > 0 && (t + chunk) % reset_every == 0)
      for (auto& layer : st.transformer.ttt)
        if (layer && layer->ttt.defined()) layer->ttt.reset_all();
  }
  return (last[0] - last[1]).abs().max().item<double>();
}

RunResult run_ring_cache(const RunContext& ctx) {
  const json& cfg = ctx.point.config;
  moshi::LMConfig c = moshi::LMConfig::tiny();
  c.context = cfg.value("context", 8);
  c.num_layers = cfg.value("num_layers", 2);
  const std::string model = cfg.value("model", "ttt");
  const std::string state = cfg.value("state", "persistent");
  if (model != "base" && model != "ttt") throw Error(ctx.point.id, "model", "expected base or ttt");
  if (state != "persistent" && state != "reset") throw Error(ctx.point.id, "state", "expected persistent or reset");
  if (model == "ttt") {
    c.ttt.enable = true;
    c.ttt.layers = "all";
    // The one TTT settings reader (moshi/ttt_settings.h): same keys and errors as every ttt: section.
    const moshi::TTTSettings t =
        cfg.contains("ttt") ? moshi::ttt_settings_from_yaml(json{{"ttt", cfg["ttt"]}}.dump(), ctx.point.id)
                            : moshi::TTTSettings{};
    c.ttt.mini_batch_size = t.mini_batch_size;
    c.ttt.initial_gating_alpha = t.initial_gating_alpha;
    c.ttt.base_lr = t.base_lr;
  }
  const uint64_t seed = cfg.value("seed", 0);
  const int64_t reset_every = cfg.value("reset_every", *c.context);
  const int64_t chunk = model == "ttt" ? c.ttt.mini_batch_size : 1;
  if (reset_every % chunk != 0) throw Error(ctx.point.id, "reset_every", "must be a multiple of ttt.mini_batch_size");
  moshi::LMModel m(c);
  m.init_random(seed);
  m.set_requires_grad(false);
  c10::NoGradGuard no_grad;

  std::vector<int64_t> distances = cfg.value("distances", std::vector<int64_t>{2, 4, 8, 16, 32});
  json by_d = json::object();
  int64_t reach = -1;
  double at_max = 0;
  for (int64_t d : distances) {
    double inf = influence_at(m, c, d, state == "reset", reset_every, chunk, seed);
    by_d[std::to_string(d)] = inf;
    if (inf > 0) reach = std::max(reach, d);
    at_max = inf;
  }
  RunResult r;
  r.metrics["reach"] = reach;  // largest tested distance whose token still changes the output
  r.metrics["influence_at_max_distance"] = at_max;
  r.metrics["cache_reach_bound"] = c.num_layers * *c.context;
  r.evidence["model"] = model;
  r.evidence["state"] = state;
  r.evidence["influence_by_distance"] = by_d;
  r.evidence["max_distance"] = distances.back();
  return r;
}

Verdict verdict_ring_cache(const std::vector<PointOutcome>& pts) {
  Verdict v;
  double base_far = -1, ttt_far = -1, reset_far = -1;
  int64_t base_reach = -1, bound = 0;
  for (const auto& p : pts) {
    const auto& e = p.result.evidence;
    double far = p.result.metrics.value("influence_at_max_distance", 0.0);
    bound = p.result.metrics.value("cache_reach_bound", 0);
    if (e.value("model", "") == "base") {
      base_far = std::max(base_far, far);
      base_reach = std::max<int64_t>(base_reach, p.result.metrics.value("reach", -1));
    } else if (e.value("state", "") == "persistent") {
      ttt_far = std::max(ttt_far, far);
    } else {
      reset_far = std::max(reset_far, far);
    }
  }
  v.evidence = {{"base_influence_far", base_far}, {"ttt_persistent_influence_far", ttt_far},
                {"ttt_reset_influence_far", reset_far}, {"base_reach", base_reach}, {"cache_reach_bound", bound}};
  if (base_far < 0 || ttt_far < 0) {
    v.status = "inconclusive";
    v.text = "the grid needs model base and model ttt with persistent state";
    return v;
  }
  char buf[400];
  std::snprintf(buf, sizeof buf,
                "beyond the caches' reach (num_layers x context = %lld frames) a token has exactly no influence on the "
                "base model's output (%.3g; farthest influence at distance %lld); a persistent TTT state still carries "
                "it (%.3g)%s",
                static_cast<long long>(bound), base_far, static_cast<long long>(base_reach), ttt_far,
                reset_far >= 0 ? (reset_far == 0 ? "; resetting the state drops it again (0)." : "; with resets it survives partly.")
                               : ".");
  v.text = buf;
  v.status = (base_far == 0.0 && ttt_far > 0.0) ? "confirmed" : "refuted";
  return v;
}

}  // namespace

ExperimentKind make_ring_cache() {
  ExperimentKind k{"ring-cache", "influence of a token beyond the ring KV capacity: base vs TTT, persistent vs reset state",
                   run_ring_cache, verdict_ring_cache, /*device_aware=*/false, {}};
  k.config = io::ConfigRules()
                 .integer("seed", 0, std::numeric_limits<int64_t>::max())
                 .integer("context", 1, 4096)
                 .integer("num_layers", 1, 64)
                 .choice("model", {"base", "ttt"})
                 .choice("state", {"persistent", "reset"})
                 .integer("reset_every", 1, 65536)
                 .integer_list("distances", 1, 4096, 64)
                 .section("ttt", ttt_section_check({"mini_batch_size", "initial_gating_alpha", "base_lr"}));
  return k;
}

}  // namespace mtt::experiments
