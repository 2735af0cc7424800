// ttt-infer's option checks (usage errors naming the flag) and the refusal of NaN/Inf weights.
#include <gtest/gtest.h>

#include <cmath>
#include <sstream>

#include "core/error.h"
#include "infer/infer.h"
#include "infer/weights_check.h"

namespace mtt::infer {
namespace {

std::string usage_error(const InferOptions& o) {
  try {
    check_infer_options(o);
  } catch (const Error& e) {
    EXPECT_EQ(e.exit_status(), kExitUsage) << e.what();
    return e.what();
  }
  return "";
}

TEST(InferOptions, RangesAndCombinations) {
  InferOptions o;
  EXPECT_EQ(usage_error(o), "");
  o.threads = 100000;
  EXPECT_EQ(usage_error(o), "--threads: must be an integer in 0..256 (0: one per core), got 100000");
  o = {};
  o.temp = std::nan("");
  EXPECT_NE(usage_error(o).find("--temp: must be a finite number >= 0"), std::string::npos);
  o = {};
  o.temp_text = -1;
  EXPECT_NE(usage_error(o).find("--temp-text: must be a finite number >= 0"), std::string::npos);
  o = {};
  o.top_k = -5;
  EXPECT_EQ(usage_error(o), "--top-k: must be an integer >= 0 (0: no top-k), got -5");
  o = {};
  o.gates.alpha = INFINITY;
  EXPECT_EQ(usage_error(o), "--force-gating-alpha: must be a finite number in -3.4e38..3.4e38 (a float32 gate), got inf");
  o = {};
  o.gates.multiplier = -INFINITY;
  EXPECT_EQ(usage_error(o),
            "--force-gating-multiplier: must be a finite number in -3.4e38..3.4e38 (a float32 gate), got -inf");
  o = {};
  o.gates.multiplier = 1e308;  // finite, but not a float: the gate tensor would overflow
  EXPECT_EQ(usage_error(o),
            "--force-gating-multiplier: must be a finite number in -3.4e38..3.4e38 (a float32 gate), got 1e+308");
  o = {};
  o.gates.alpha = 0.5;
  o.gates.multiplier = 0.5;
  EXPECT_EQ(usage_error(o), "--force-gating-multiplier: replaces tanh(alpha), so it cannot be combined with "
                            "--force-gating-alpha: give one of them");
  o = {};
  o.tiny = true;
  o.ttt_layers = "99";
  EXPECT_EQ(usage_error(o), "--ttt-layers: layer 99 out of range for 4 layers");
  o.ttt_layers = "1,2";
  EXPECT_EQ(usage_error(o), "");
  o.checkpoint = "x.safetensors";
  EXPECT_NE(usage_error(o).find("--ttt-layers: only for a model with random weights"), std::string::npos);
}

TEST(InferOptions, LayerAlphaSpecs) {
  GateOverride g;
  add_layer_alpha(g, "3=0.5");
  add_layer_alpha(g, "0=-1e-3");
  EXPECT_EQ(g.alpha_per_layer.at(3), 0.5);
  EXPECT_EQ(g.alpha_per_layer.at(0), -1e-3);
  for (const char* bad : {"1=nan", "1=inf", "-1=1", "x=1", "1", "=1", "1=", "1=0.5x", "3=1"}) {
    SCOPED_TRACE(bad);
    try {
      add_layer_alpha(g, bad);
      ADD_FAILURE() << "accepted";
    } catch (const Error& e) {
      EXPECT_EQ(e.exit_status(), kExitUsage);
      EXPECT_EQ(std::string(e.what()).rfind("--force-gating-alpha-layer: ", 0), 0u) << e.what();
      EXPECT_NE(std::string(e.what()).find(std::string("got '") + bad + "'"), std::string::npos) << e.what();
    }
  }
}

TEST(WeightsCheck, NamesTheTensorTheCountsAndTheFirstIndex) {
  std::map<std::string, at::Tensor> w;
  w["a.weight"] = at::ones({4, 4});
  w["b.gating_alpha"] = at::zeros({6}, at::kBFloat16);
  w["c.bias"] = at::zeros({3});
  w["d.codes"] = at::zeros({3}, at::kLong);
  EXPECT_TRUE(find_nonfinite(w).empty());
  w["b.gating_alpha"][4] = NAN;
  w["b.gating_alpha"][2] = INFINITY;
  w["c.bias"][1] = -INFINITY;
  const auto bad = find_nonfinite(w);
  ASSERT_EQ(bad.size(), 2u);
  EXPECT_EQ(bad[0].name, "b.gating_alpha");
  EXPECT_EQ(bad[0].nan, 1);
  EXPECT_EQ(bad[0].inf, 1);
  EXPECT_EQ(bad[0].first_index, 2);
  EXPECT_EQ(bad[1].name, "c.bias");
  std::ostringstream log;
  try {
    check_finite_weights(w, "m.safetensors", false, log);
    FAIL() << "accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.exit_status(), kExitInput);
    EXPECT_EQ(std::string(e.what()).rfind("m.safetensors: b.gating_alpha: 1 NaN and 1 Inf values (first at flat index 2); "
                                          "1 more tensors hold NaN/Inf",
                                          0),
              0u)
        << e.what();
  }
  check_finite_weights(w, "m.safetensors", true, log);
  EXPECT_NE(log.str().find("warning: m.safetensors: b.gating_alpha"), std::string::npos);
}

}  // namespace
}  // namespace mtt::infer
