// gradient_flow_probe: per-parameter gradient norms of the In-Place TTT block over a few SGD steps.
#include <cstdio>

#include <gtest/gtest.h>

#include "ttt/gradient_flow.h"

using namespace mtt::ttt;

namespace {
const std::string kConv = "target_generator.conv1d.conv.weight";
const std::string kWt = "target_generator.W_target.weight";

GradientFlowConfig cfg(TargetInit conv, TargetInit wt) {
  GradientFlowConfig c;
  c.block = InPlaceTTTOptions::moshi_port(16, 64);
  c.block.chunk_size = 4;
  c.block.lr = 1.0;
  c.block.delta_clip_fro_norm = std::nullopt;
  c.conv_init = conv;
  c.target_proj_init = wt;
  c.seq_len = 16;
  c.steps = 3;
  c.sgd_lr = 0.1;
  c.seed = 7;
  return c;
}

void print(const std::string& label, const std::vector<GradientFlowStep>& steps) {
  for (const auto& s : steps) {
    std::printf("[grad-flow-probe] %-32s step %lld loss %.6f |g conv| %.4e |g W_target| %.4e |g w_down| %.4e\n",
                label.c_str(), static_cast<long long>(s.step), s.loss, s.grad_norms.at(kConv), s.grad_norms.at(kWt),
                s.grad_norms.at("w_down"));
  }
}
}  // namespace

TEST(InPlaceGradientFlowProbe, BothZeroStaysStuckForever) {
  auto steps = gradient_flow_probe(cfg(TargetInit::zero(), TargetInit::zero()));
  print("both zero", steps);
  ASSERT_EQ(steps.size(), 3u);
  for (const auto& s : steps) {
    EXPECT_EQ(s.grad_norms.at(kConv), 0.0);
    EXPECT_EQ(s.grad_norms.at(kWt), 0.0);
    EXPECT_EQ(s.param_norms.at(kConv), 0.0);  // SGD never moves them
    EXPECT_GT(s.grad_norms.at("w_down"), 0.0);
    EXPECT_EQ(s.grad_norms.at("linear_out.weight"), 0.0);  // dead in the TTT path
  }
}

TEST(InPlaceGradientFlowProbe, OneZeroFactorIsUnstuckAfterOneStep) {
  for (bool conv_zero : {true, false}) {
    auto steps = gradient_flow_probe(conv_zero ? cfg(TargetInit::zero(), TargetInit::normal(1e-2))
                                               : cfg(TargetInit::normal(1e-2), TargetInit::zero()));
    print(conv_zero ? "conv zero, W_target N(0,1e-2)" : "conv N(0,1e-2), W_target zero", steps);
    const auto& s0 = steps[0];
    // Step 0: the zero factor gets the gradient, the non-zero one exactly none (chain rule).
    EXPECT_GT(s0.grad_norms.at(conv_zero ? kConv : kWt), 0.0);
    EXPECT_EQ(s0.grad_norms.at(conv_zero ? kWt : kConv), 0.0);
    // After one SGD step both factors are non-zero, and both get gradients.
    EXPECT_GT(steps[1].grad_norms.at(kConv), 0.0);
    EXPECT_GT(steps[1].grad_norms.at(kWt), 0.0);
    EXPECT_GT(steps[1].param_norms.at(conv_zero ? kConv : kWt), 0.0);
  }
}

TEST(InPlaceGradientFlowProbe, DeterministicForASeedAndScalesWithInit) {
  auto a = gradient_flow_probe(cfg(TargetInit::normal(1e-4), TargetInit::normal(1e-4)));
  auto b = gradient_flow_probe(cfg(TargetInit::normal(1e-4), TargetInit::normal(1e-4)));
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) EXPECT_EQ(a[i].grad_norms, b[i].grad_norms);
  auto big = gradient_flow_probe(cfg(TargetInit::normal(1e-2), TargetInit::normal(1e-2)));
  print("both N(0,1e-4)", a);
  print("both N(0,1e-2)", big);
  // At step 0, ∂L/∂conv is linear in W_target (and vice versa): 100x the init scale, ~100x the gradient.
  const double ratio = big[0].grad_norms.at(kConv) / a[0].grad_norms.at(kConv);
  EXPECT_GT(ratio, 50.0);
  EXPECT_LT(ratio, 200.0);
}
