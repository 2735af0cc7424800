// The `pad-tokens` experiment on its reduced grid (pad mode x length 16 / 12 with b = 8 x projection
// bias init), checked against what the math of the fork's zero pads requires (docs/ttt.md §1.1, §6).
#include <gtest/gtest.h>

#include <cmath>
#include <string>

#include "experiments/registry.h"
#include "experiments/sweep.h"
#include "test_util.h"

namespace mtt::experiments {
namespace {

struct PadGrid {
  SweepResult r;
  const RunResult& at(const std::string& pads, int seq_len, const std::string& init) const {
    for (const auto& p : r.points) {
      const auto& o = p.point.overrides;
      if (o.value("ttt.pad_updates", "") == pads && o.value("seq_len", -1) == seq_len &&
          o.value("ttt.proj_bias_init", "") == init)
        return p.result;
    }
    throw std::runtime_error("no grid point " + pads + "/" + std::to_string(seq_len) + "/" + init);
  }
};

// One sweep for all tests (1-2 s): the grid is deterministic.
const PadGrid& grid() {
  static test::TempDir dir;
  static PadGrid g = [] {
    ExperimentSpec spec = load_spec((test::source_dir() / "experiments" / "pad-tokens.yaml").string());
    SweepOptions o;
    o.out_dir = (dir / "pad-tokens").string();
    o.reduced = true;
    o.progress = false;
    return PadGrid{run_sweep(spec, o)};
  }();
  return g;
}

double metric(const RunResult& r, const std::string& name) { return r.metrics.at(name).get<double>(); }

const char* kInits[] = {"zero", "torch_default"};

TEST(PadTokens, WholeMiniBatchesHaveNoPadsSoBothModesAgreeExactly) {
  for (const char* init : kInits) {
    const auto& legacy = grid().at("legacy", 16, init);
    const auto& masked = grid().at("masked", 16, init);
    EXPECT_EQ(metric(legacy, "pad_tokens"), 0);
    // Measured inside each point against the other mode: bit-identical outputs and gradients.
    for (const auto* r : {&legacy, &masked}) {
      EXPECT_EQ(metric(*r, "real_out_diff_other_mode"), 0.0) << init;
      EXPECT_EQ(metric(*r, "grad_max_diff_other_mode"), 0.0) << init;
      EXPECT_EQ(metric(*r, "real_out_diff_unpadded"), 0.0) << init;
    }
    for (const auto& [name, v] : legacy.evidence.at("grad_norms").items())
      EXPECT_EQ(v.get<double>(), masked.evidence.at("grad_norms").at(name).get<double>()) << init << " " << name;
  }
}

TEST(PadTokens, MaskedPadsLeaveTheRealTokensAsTheUnpaddedSequence) {
  for (const char* init : kInits) {
    const auto& masked = grid().at("masked", 12, init);
    EXPECT_EQ(metric(masked, "pad_tokens"), 4);
    // Same math (pad columns of eta are 0, tail eta 1/b either way), different matmul shapes: fp32 rounding.
    EXPECT_LT(metric(masked, "real_out_diff_unpadded"), 1e-5) << init;
  }
  // Fork pads with non-zero biases update the state and, through the non-causal eta, move every real
  // token of the last mini-batch.
  EXPECT_GT(metric(grid().at("legacy", 12, "torch_default"), "real_out_diff_unpadded"), 1e-5);
  // With all biases zero a pad is XK = 0, target = ttt_norm_bias = 0 and prediction LN(0) = 0:
  // its inner gradient is exactly zero, so the forward values cannot tell the modes apart...
  EXPECT_EQ(metric(grid().at("legacy", 12, "zero"), "real_out_diff_other_mode"), 0.0);
}

TEST(PadTokens, LegacyPadKeysAreTheNormalisedBias) {
  for (const char* init : kInits) {
    const auto& legacy = grid().at("legacy", 12, init);
    EXPECT_EQ(metric(legacy, "pad_xk_minus_normalized_bias"), 0.0) << init;
  }
  EXPECT_EQ(metric(grid().at("legacy", 12, "zero"), "pad_xk_norm_max"), 0.0);
  // U(+-1/sqrt(16)) over 8 channels per head: ||b_h|| is far from the 1e-12 clamp.
  EXPECT_GT(metric(grid().at("legacy", 12, "torch_default"), "pad_xk_norm_min"), 0.01);
}

TEST(PadTokens, ZeroPadsThroughAZeroBiasBlowUpGradWkBias) {
  const auto& legacy = grid().at("legacy", 12, "zero");
  const auto& masked = grid().at("masked", 12, "zero");
  const auto& whole = grid().at("legacy", 16, "zero");
  // ...but their gradient is not: d normalize(x)/dx = 1/1e-12 at x = 0 (spec §1.1 step 2).
  EXPECT_GT(metric(legacy, "grad_wk_bias"), 1e6 * metric(masked, "grad_wk_bias"));
  EXPECT_GT(metric(legacy, "grad_wk_bias"), 1e6 * metric(whole, "grad_wk_bias"));
  EXPECT_GT(metric(legacy, "wk_bias_share"), 0.99);
  // Only a pad's bias sees it (x = 0 multiplies every weight gradient of a pad).
  EXPECT_LT(metric(legacy, "grad_wk_weight"), 1e3);
  // The tiny Moshi LM's hybrid layers pad the same way.
  EXPECT_GT(metric(legacy, "moshi_grad_wk_bias"), 1e6 * metric(whole, "moshi_grad_wk_bias"));
  EXPECT_FALSE(masked.metrics.contains("moshi_grad_wk_bias")) << "the LM has no masked pads";
  for (const auto& p : grid().r.points)
    for (const auto& [name, v] : p.result.metrics.items()) EXPECT_TRUE(std::isfinite(v.get<double>())) << name;
  EXPECT_EQ(grid().r.verdict.status, "confirmed") << grid().r.verdict.text;
}

}  // namespace
}  // namespace mtt::experiments
