// The `inplace-update` experiment: the In-Place update's effect on the logits by learning rate and
// update clip, on the tiny model (reduced grid) and on the In-Place port's own trained run.
#include <gtest/gtest.h>

#include "experiments/registry.h"
#include "experiments/sweep.h"
#include "test_util.h"

namespace mtt::experiments {
namespace {

double effect(const SweepResult& r, double lr, double clip) {
  for (const auto& p : r.points)
    if (p.result.evidence.value("lr", -1.0) == lr && p.result.evidence.value("clip", -1.0) == clip)
      return p.result.metrics.at("effect").get<double>();
  ADD_FAILURE() << "no point lr " << lr << " clip " << clip;
  return -1;
}

SweepResult sweep(const nlohmann::json& base_override, const std::string& out) {
  ExperimentSpec spec = load_spec((test::source_dir() / "experiments" / "inplace-update.yaml").string());
  for (auto& [k, v] : base_override.items()) spec.base[k] = v;
  SweepOptions o;
  o.out_dir = out;
  o.reduced = true;
  o.progress = false;
  return run_sweep(spec, o);
}

}  // namespace

TEST(InplaceUpdate, ClippedDefaultIsInertAnUnclippedLargeRateIsNot) {
  test::TempDir dir;
  const SweepResult r = sweep(nlohmann::json::object(), (dir / "tiny").string());
  // The port clips the update direction to Frobenius norm 1e-5 before the learning rate scales it,
  // so the effect is ~1e-5 x lr: below float32 noise (~1e-6 of max|logits|) at the default rate,
  // visible only at rates of thousands; without the clip large rates move the logits too.
  EXPECT_LT(effect(r, 1e-3, 1e-5), 1e-5);
  EXPECT_GT(effect(r, 1e4, 1e-5), 1e3 * effect(r, 1e-3, 1e-5));
  EXPECT_GT(effect(r, 1e4, 0.0), 1e-3);
  EXPECT_EQ(r.verdict.status, "confirmed") << r.verdict.text;
}

TEST(InplaceUpdate, OnThePortsOwnRun) {
  // The port's trained run (tests/data/inplace_runs/inplace_default), resolved as ttt-infer does.
  test::TempDir dir;
  const auto data = test::source_dir() / "tests" / "data" / "inplace_runs";
  const SweepResult r = sweep({{"run", (data / "inplace_default" / "run").string()},
                               {"moshi_weight", (data / "base" / "model.safetensors").string()}},
                              (dir / "port").string());
  EXPECT_LT(effect(r, 1e-3, 1e-5), 1e-5);
  EXPECT_GT(effect(r, 1e4, 0.0), 1e-3);
  EXPECT_NE(r.points.front().result.evidence.value("model", "").find("In-Place TTT port"), std::string::npos);
}

}  // namespace mtt::experiments
