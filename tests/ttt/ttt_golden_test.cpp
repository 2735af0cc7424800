// Every golden case of the TTT core (vdit_*, lmpt_*, ln_reconstruction_target) within the README
// tolerances, outputs and gradients, for a float32 and a float64 port.
#include <gtest/gtest.h>

#include <filesystem>
#include <string>

#include "core/error.h"
#include "test_util.h"
#include "ttt/golden_runner.h"

namespace {

const char* kCases[] = {
    "vdit_ttt_mlp_op",           "vdit_ttt_linear_op",          "vdit_ttt_mlp_op_general_eta",
    "vdit_ttt_linear_op_general_eta", "vdit_ttt_mlp_layer_norope", "vdit_ttt_mlp_layer_rope1d",
    "vdit_ttt_linear_layer_rope1d", "ln_reconstruction_target",  "lmpt_ttt_mlp_dual",
    "lmpt_ttt_linear_dual",      "lmpt_ttt_mlp_layer",          "lmpt_ttt_linear_layer",
    "lmpt_ttt_mlp_layer_remainder", "lmpt_ttt_linear_layer_remainder",
};

struct Param {
  std::string name;
  bool f64;
};

class GoldenTTT : public ::testing::TestWithParam<Param> {};

TEST_P(GoldenTTT, OutputsAndGradientsWithinTolerance) {
  const Param& p = GetParam();
  auto path = mtt::test::golden_dir() / "ttt" / (p.name + ".safetensors");
  if (!std::filesystem::exists(path)) GTEST_SKIP() << "golden file missing: " << path;
  mtt::ttt::GoldenRunOptions o;
  o.dtype = p.f64 ? at::kDouble : at::kFloat;
  mtt::ttt::GoldenReport r = mtt::ttt::run_golden(path.string(), o);
  ASSERT_FALSE(r.tensors.empty());
  int outs = 0, grads = 0;
  for (auto& t : r.tensors) {
    EXPECT_TRUE(t.pass) << t.name << ": rel " << t.rel << " (abs " << t.max_abs << ", ref max " << t.ref_max_abs
                        << ") > tol " << t.tol;
    (t.is_grad ? grads : outs)++;
  }
  EXPECT_GT(outs, 0);
  EXPECT_GT(grads, 0);
}

std::vector<Param> all_params() {
  std::vector<Param> v;
  for (const char* c : kCases) {
    v.push_back({c, false});
    v.push_back({c, true});
  }
  return v;
}

INSTANTIATE_TEST_SUITE_P(All, GoldenTTT, ::testing::ValuesIn(all_params()),
                         [](const ::testing::TestParamInfo<Param>& i) {
                           return i.param.name + (i.param.f64 ? "_f64" : "_f32");
                         });

// The runner also compares against the float32 reference run.
TEST(GoldenTTTRunner, AgainstF32ReferenceRun) {
  auto path = mtt::test::golden_dir() / "ttt" / "vdit_ttt_mlp_op.safetensors";
  if (!std::filesystem::exists(path)) GTEST_SKIP() << "golden file missing";
  mtt::ttt::GoldenRunOptions o;
  o.against_f32 = true;
  auto r = mtt::ttt::run_golden(path.string(), o);
  EXPECT_EQ(r.reference, "f32");
  EXPECT_TRUE(r.pass()) << r.to_json();
}

TEST(GoldenTTTRunner, UnsupportedFamilyIsAnInputError) {
  auto path = mtt::test::golden_dir() / "ttt" / "ssm_gating.safetensors";
  if (!std::filesystem::exists(path)) GTEST_SKIP() << "golden file missing";
  EXPECT_THROW(mtt::ttt::run_golden(path.string()), mtt::Error);
}

}  // namespace
