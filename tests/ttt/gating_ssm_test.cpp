// SSMGating against golden/ttt/ssm_gating.safetensors (fork: tanh(clamp(α,−3,3))·x; VDIT: tanh(α)·x)
// and the override hooks.
#include <gtest/gtest.h>

#include "inplace_golden_util.h"
#include "ttt/ssm_gating.h"

using namespace mtt::test;
using mtt::ttt::SSMGating;
using mtt::ttt::SSMGatingOptions;

namespace {

struct GateRun {
  at::Tensor y, g_alpha, g_x;
};

GateRun run_gate(SSMGating& gate, const Golden& g, at::ScalarType dt) {
  at::Tensor x = g["in.x"].to(dt).detach().clone().set_requires_grad(true);
  gate.gating_alpha.mutable_grad() = at::Tensor();
  at::Tensor y = gate.forward(x);
  (y * g["cot.G"].to(dt)).sum().backward();
  return {y.detach(), gate.gating_alpha.grad(), x.grad()};
}

void check_variant(const std::string& v, bool clamp) {
  Golden g = load_golden("ttt/ssm_gating.safetensors");
  const int64_t D = g["gating_alpha"].size(0);
  auto opts = clamp ? SSMGatingOptions::fork(D) : SSMGatingOptions::vdit(D);
  {
    // float32 port vs the float64 and the float32 reference runs.
    SSMGating gate(opts);
    mtt::ttt::load_module_tensors(gate, g.t, "", "ssm_gating.safetensors");
    GateRun r = run_gate(gate, g, at::kFloat);
    EXPECT_TRUE(close_to(v + " y", r.y, g["out." + v + ".y"], kOutTol));
    EXPECT_TRUE(close_to(v + " y f32", r.y, g["out_f32." + v + ".y"], kOutTol));
    EXPECT_TRUE(close_to(v + " dalpha", r.g_alpha, g["grad." + v + ".gating_alpha"], kGradTol));
    EXPECT_TRUE(close_to(v + " dalpha f32", r.g_alpha, g["grad_f32." + v + ".gating_alpha"], kGradTol));
    EXPECT_TRUE(close_to(v + " dx", r.g_x, g["grad." + v + ".x"], kGradTol));
  }
  {
    // float64 port: the reference is pure fp64 here ("exact" class, 1e-9).
    SSMGating gate(opts);
    gate.to(at::kDouble);
    mtt::ttt::load_module_tensors(gate, g.t, "", "ssm_gating.safetensors");
    GateRun r = run_gate(gate, g, at::kDouble);
    EXPECT_TRUE(close_to(v + " y f64", r.y, g["out." + v + ".y"], 1e-9));
    EXPECT_TRUE(close_to(v + " dalpha f64", r.g_alpha, g["grad." + v + ".gating_alpha"], 1e-9));
    EXPECT_TRUE(close_to(v + " dx f64", r.g_x, g["grad." + v + ".x"], 1e-9));
  }
}

}  // namespace

TEST(SSMGating, GoldenFork) { check_variant("fork", true); }
TEST(SSMGating, GoldenVdit) { check_variant("vdit", false); }

TEST(SSMGating, ClampEdgesMatchTorchClamp) {
  // α = −3.5 and 4.0 lie outside the clamp: zero gradient; α = 3.0 sits on the edge: gradient passes.
  Golden g = load_golden("ttt/ssm_gating.safetensors");
  const at::Tensor ga = g["grad.fork.gating_alpha"];
  EXPECT_EQ(ga[1].item<double>(), 0.0);
  EXPECT_EQ(ga[2].item<double>(), 0.0);
  SSMGating gate(SSMGatingOptions::fork(g["gating_alpha"].size(0)));
  mtt::ttt::load_module_tensors(gate, g.t, "", "ssm_gating.safetensors");
  GateRun r = run_gate(gate, g, at::kFloat);
  EXPECT_EQ(r.g_alpha[1].item<double>(), 0.0);
  EXPECT_EQ(r.g_alpha[2].item<double>(), 0.0);
  EXPECT_NE(r.g_alpha[3].item<double>(), 0.0);
  EXPECT_NEAR(r.g_alpha[3].item<double>(), ga[3].item<double>(), 3e-5 * ga.abs().max().item<double>());
}

TEST(SSMGating, InitIsConstantAlpha) {
  SSMGating gate(SSMGatingOptions::fork(8, 0.1));
  EXPECT_TRUE(at::equal(gate.gating_alpha, at::full({8}, 0.1f)));
  EXPECT_NEAR(gate.multiplier()[0].item<double>(), std::tanh(0.1), 1e-7);
  auto names = gate.named_parameters();
  ASSERT_EQ(names.size(), 1u);
  EXPECT_EQ(names.begin()->key(), "gating_alpha");
}

TEST(SSMGating, ForceAlphaAndMultiplierOverrideWithoutWritingTheParameter) {
  const int64_t D = 6;
  SSMGating gate(SSMGatingOptions::fork(D));
  at::Tensor y = at::randn({2, 3, D});
  at::Tensor before = gate.gating_alpha.detach().clone();

  gate.force_alpha(0.5);
  EXPECT_TRUE(at::allclose(gate.forward(y), std::tanh(0.5) * y, 1e-6, 1e-7));
  gate.force_alpha(5.0);  // clamp still applies to a forced alpha (fork): tanh(3)
  EXPECT_TRUE(at::allclose(gate.forward(y), std::tanh(3.0) * y, 1e-6, 1e-7));
  gate.force_alpha(std::nullopt);
  EXPECT_TRUE(at::allclose(gate.forward(y), std::tanh(0.1) * y, 1e-6, 1e-7));

  gate.force_multiplier(0.0);  // switches the branch off
  EXPECT_EQ(gate.forward(y).abs().max().item<double>(), 0.0);
  gate.force_multiplier(1.0);
  EXPECT_TRUE(at::equal(gate.forward(y), y));
  EXPECT_TRUE(gate.overridden());
  gate.force_multiplier(std::nullopt);
  EXPECT_FALSE(gate.overridden());

  gate.force_alpha_tensor(at::linspace(-1, 1, D));
  EXPECT_TRUE(at::allclose(gate.forward(y), at::tanh(at::linspace(-1, 1, D)) * y, 1e-6, 1e-7));
  EXPECT_THROW(gate.force_alpha_tensor(at::zeros({D + 1})), mtt::Error);
  EXPECT_TRUE(at::equal(gate.gating_alpha, before));

  SSMGating vdit(SSMGatingOptions::vdit(D));
  vdit.force_alpha(5.0);  // no clamp in VDIT
  EXPECT_TRUE(at::allclose(vdit.forward(y), std::tanh(5.0) * y, 1e-6, 1e-7));
}

TEST(SSMGating, LoadRejectsWrongShapeWithKey) {
  SSMGating gate(SSMGatingOptions::fork(4));
  std::map<std::string, at::Tensor> sd{{"blk.gating_alpha", at::zeros({5})}};
  try {
    mtt::ttt::load_module_tensors(gate, sd, "blk.", "ckpt.safetensors");
    FAIL() << "no error";
  } catch (const mtt::Error& e) {
    EXPECT_EQ(e.key(), "blk.gating_alpha");
    EXPECT_EQ(e.file(), "ckpt.safetensors");
  }
  std::map<std::string, at::Tensor> none;
  EXPECT_THROW(mtt::ttt::load_module_tensors(gate, none, "blk.", "ckpt.safetensors"), mtt::Error);
}
