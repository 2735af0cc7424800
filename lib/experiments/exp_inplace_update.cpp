// `inplace-update`: how far the In-Place TTT fast-weight update moves the model's output, across
// the TTT learning rate and the update clip (issue 12: the port clips each chunk's update to a
// Frobenius norm of 1e-5 before the learning rate scales it, so the effect is ~1e-5 x lr: at its
// default learning rate 1e-3 the update is below float32 noise).
// One forward of the whole sequence with the update and one with learning rate 0 on the same
// weights; the effect is max |logits - logits(lr 0)| / max |logits(lr 0)| over valid positions.
// `run:` names an In-Place run dir (the port's own, resolved as ttt-infer does, `moshi_weight:` for
// adapter-only runs); without it the tiny Moshi with In-Place layers 1 and 3 and random weights.
#include <c10/core/GradMode.h>

#include <cmath>
#include <limits>
#include <cstdio>

#include "core/error.h"
#include "experiments/builtin.h"
#include "experiments/config_keys.h"
#include "moshi/model_weights.h"
#include "moshi/lm.h"
#include "moshi/model_source.h"

namespace mtt::experiments {

namespace {

using nlohmann::json;

double rel_effect(const at::Tensor& a, const at::Tensor& b, const at::Tensor& mask) {
  const at::Tensor m = mask.to(at::kBool).unsqueeze(-1).expand_as(b);
  const at::Tensor x = a.masked_select(m).to(at::kDouble), y = b.masked_select(m).to(at::kDouble);
  return (x - y).abs().max().item<double>() / y.abs().max().item<double>();
}

RunResult run_inplace_update(const RunContext& ctx) {
  const json& cfg = ctx.point.config;
  const std::string where = ctx.point.id;
  const double lr = cfg.value("lr", 1e-3);
  const double clip = cfg.contains("clip") && !cfg["clip"].is_null() ? cfg["clip"].get<double>() : 0.0;
  if (!(lr >= 0) || !std::isfinite(lr)) throw Error(where, "lr", "must be a finite number >= 0");
  if (!(clip >= 0) || !std::isfinite(clip)) throw Error(where, "clip", "must be a finite number >= 0 (0 or null: no clip)");
  const uint64_t seed = cfg.value("seed", 0);
  const int64_t T = cfg.value("frames", 24);
  if (T <= 0 || T > 100000) throw Error(where, "frames", "must be in 1..100000");

  moshi::LMConfig c;
  std::optional<moshi::ModelSource> src;
  if (cfg.contains("run") && cfg["run"].is_string()) {
    moshi::ModelSourceOptions so;
    so.moshi_weight = cfg.value("moshi_weight", "");
    src = moshi::resolve_model_source(cfg["run"].get<std::string>(), so);
    c = src->config;
    if (!c.ttt.enable || c.ttt.variant != moshi::TTTVariant::inplace)
      throw Error(cfg["run"].get<std::string>(), "ttt", "not an In-Place TTT model");
  } else {
    c = moshi::LMConfig::tiny();
    c.ttt.enable = true;
    c.ttt.variant = moshi::TTTVariant::inplace;
    c.ttt.layers = "inplace";
    c.ttt.inplace_start_layer = 1;
    c.ttt.inplace_layer_frequency = 2;
    c.ttt.inplace_chunk_size = cfg.value("chunk_size", 4);
    c.ttt.inplace_activation = "gelu";  // what the port computes
  }
  c.ttt.inplace_delta_clip = clip;
  auto build = [&](double the_lr) {
    moshi::LMConfig ci = c;
    ci.ttt.inplace_lr = the_lr;
    auto m = std::make_unique<moshi::LMModel>(ci);
    if (src) m->load(moshi::weight_tensors(*src), moshi::load_options(*src), src->path);
    else m->init_random(seed);
    m->set_requires_grad(false);
    return m;
  };
  c10::NoGradGuard no_grad;
  auto with = build(lr), without = build(0.0);
  at::manual_seed(seed + 17);
  at::Tensor codes = at::empty({1, c.num_codebooks(), T}, at::kLong);
  codes.select(1, 0).copy_(at::randint(0, c.text_card, {1, T}, at::kLong));
  for (int64_t k = 1; k < c.num_codebooks(); ++k) codes.select(1, k).copy_(at::randint(0, c.card, {1, T}, at::kLong));
  const auto a = with->forward(codes), b = without->forward(codes);
  RunResult r;
  const double audio = rel_effect(a.logits, b.logits, b.mask), text = rel_effect(a.text_logits, b.text_logits, b.text_mask);
  r.metrics["effect"] = std::max(audio, text);
  r.metrics["effect_audio"] = audio;
  r.metrics["effect_text"] = text;
  r.evidence["lr"] = lr;
  r.evidence["clip"] = clip;
  r.evidence["model"] = src ? src->describe() : std::string("tiny Moshi, In-Place layers 1 and 3, random weights");
  r.evidence["chunk_size"] = c.ttt.inplace_chunk_size;
  r.evidence["frames"] = T;
  return r;
}

Verdict verdict_inplace_update(const std::vector<PointOutcome>& pts) {
  // float32 noise of a forward: ~1e-6 of max|logits| (tests/data/inplace_runs: fp64 vs fp32 4e-7).
  constexpr double kNoise = 1e-5;
  Verdict v;
  double at_default = -1, largest = -1, largest_lr = 0;
  json table = json::array();
  for (const auto& p : pts) {
    const double lr = p.result.evidence.value("lr", 0.0), clip = p.result.evidence.value("clip", 0.0);
    const double e = p.result.metrics.value("effect", 0.0);
    table.push_back({{"lr", lr}, {"clip", clip}, {"effect", e}});
    if (lr == 1e-3 && clip == 1e-5) at_default = e;
    if (e > largest) {
      largest = e;
      largest_lr = lr;
    }
  }
  v.evidence = {{"effect_at_port_default", at_default}, {"largest_effect", largest}, {"largest_effect_lr", largest_lr},
                {"points", table}, {"noise_level", kNoise}};
  if (at_default < 0) {
    v.status = "inconclusive";
    v.text = "the grid needs the port's default point (lr 1e-3, clip 1e-5)";
    return v;
  }
  char buf[400];
  std::snprintf(buf, sizeof buf,
                "at the port's defaults (learning rate 1e-3, update clip 1e-5) the In-Place update moves the logits by "
                "%.3g of their maximum, %s float32 noise (%.0e); the largest effect in the grid is %.3g at lr %g",
                at_default, at_default < kNoise ? "below" : "above", kNoise, largest, largest_lr);
  v.text = buf;
  v.status = at_default < kNoise && largest > 100 * kNoise ? "confirmed" : "refuted";
  return v;
}

}  // namespace

ExperimentKind make_inplace_update() {
  ExperimentKind k{"inplace-update",
                   "effect of the In-Place TTT fast-weight update on the output, by learning rate and update clip",
                   run_inplace_update, verdict_inplace_update, /*device_aware=*/false, {}};
  k.config = io::ConfigRules()
                 .integer("seed", 0, std::numeric_limits<int64_t>::max())
                 .integer("frames", 1, 100000)
                 .integer("chunk_size", 1, 4096)
                 .number("lr", 0)
                 .number("clip", 0).or_null()  // 0 or null: no clip
                 .text("run")                   // a user's In-Place run dir instead of the tiny model
                 .text("moshi_weight");
  return k;
}

}  // namespace mtt::experiments
