// The `fork-streaming` experiment: with mini-batch 1 a persistent streamed TTT state equals the full
// sequence, the fork's stateless streaming (every frame from W0) does not; on a fork run dir too.
#include <gtest/gtest.h>

#include <cmath>

#include "experiments/registry.h"
#include "experiments/sweep.h"
#include "test_util.h"

namespace mtt::experiments {
namespace {

SweepResult sweep(const nlohmann::json& base_override, const std::string& out) {
  ExperimentSpec spec = load_spec((test::source_dir() / "experiments" / "fork-streaming.yaml").string());
  for (auto& [k, v] : base_override.items()) spec.base[k] = v;
  SweepOptions o;
  o.out_dir = out;
  o.reduced = true;
  o.progress = false;
  return run_sweep(spec, o);
}

double loss(const SweepResult& r, const std::string& mode) {
  for (const auto& p : r.points)
    if (p.result.evidence.value("streaming", "") == mode) return p.result.metrics.at("audio_loss").get<double>();
  ADD_FAILURE() << "no point " << mode;
  return std::nan("");
}

}  // namespace

TEST(ForkStreaming, PersistentStateEqualsTheFullSequenceTheForksStreamingDoesNot) {
  test::TempDir dir;
  const SweepResult r = sweep(nlohmann::json::object(), (dir / "tiny").string());
  EXPECT_NEAR(loss(r, "persistent"), loss(r, "full"), 1e-4);
  EXPECT_GT(std::abs(loss(r, "fork_restart") - loss(r, "full")), 1e-3);
  EXPECT_EQ(r.verdict.status, "confirmed") << r.verdict.text;
}

TEST(ForkStreaming, OnAForkRunDir) {
  // The TTT fork's run (b 8): streamed scores differ from the full sequence either way (pads), the
  // fork's stateless streaming is the one the run really gets.
  test::TempDir dir;
  const auto data = test::source_dir() / "tests" / "data" / "fork_runs";
  const SweepResult r = sweep({{"run", (data / "ttt_other" / "run").string()},
                               {"moshi_weight", (data / "base" / "model.safetensors").string()}},
                              (dir / "fork").string());
  EXPECT_TRUE(std::isfinite(loss(r, "full")));
  EXPECT_NE(loss(r, "fork_restart"), loss(r, "full"));
  EXPECT_NE(r.points.front().result.evidence.value("model", "").find("TTT fork"), std::string::npos);
}

}  // namespace mtt::experiments
