// The fork's hybrid TTT sub-path against golden/ttt/fork_hybrid_ttt_path.safetensors (outputs and
// every gradient, including the exact zeros of the dead wo/post_norm and backward gate), plus the
// DiT bidirectional option and the padding variants.
#include <gtest/gtest.h>

#include "inplace_golden_util.h"
#include "ttt/hybrid_ttt_path.h"

using namespace mtt::test;
using namespace mtt::ttt;

namespace {

// config: TTTConfig(model_dim=32, num_heads=2, ttt_base_lr=1.0, mini_batch_size=8, gating 0.1, no rope).
HybridTTTPathOptions golden_options() { return HybridTTTPathOptions::fork(32, 2, 8, 1.0, 0.1); }

const std::vector<std::string> kDead = {"ttt_layer.ttt.wo.weight", "ttt_layer.ttt.wo.bias",
                                        "ttt_layer.ttt.post_norm.weight", "ttt_layer.ttt.post_norm.bias",
                                        "backward_ssm_gating.gating_alpha"};

void check(at::ScalarType dt) {
  Golden g = load_golden("ttt/fork_hybrid_ttt_path.safetensors");
  HybridTTTPath path(golden_options());
  if (dt == at::kDouble) path.to(at::kDouble);
  path.load(g.t, "", "fork_hybrid_ttt_path.safetensors");
  path.set_requires_grad(true);
  at::Tensor x = g["in.x"].to(dt).detach().clone().set_requires_grad(true);
  auto out = path.forward(x);
  (out.y * g["cot.G"].to(dt)).sum().backward();
  const std::string tag = dt == at::kFloat ? "f32 " : "f64 ";
  // The fork computes the op in float32 even in its fp64 run: fp32 tolerances for both.
  EXPECT_TRUE(close_to(tag + "y", out.y, g["out.y"], kOutTol));
  EXPECT_TRUE(close_to(tag + "y vs f32 run", out.y, g["out_f32.y"], kOutTol));
  EXPECT_TRUE(close_to(tag + "ttt_out", out.ttt_out, g["out.ttt_out"], kOutTol));
  EXPECT_TRUE(close_to(tag + "grad x", x.grad(), g["grad.x"], kGradTol));
  int checked = 0;
  for (auto& [name, p] : path.named_parameters()) {
    const at::Tensor& ref = g["grad." + name];
    if (std::find(kDead.begin(), kDead.end(), name) != kDead.end()) {
      EXPECT_EQ(ref.abs().max().item<double>(), 0.0) << name;
      EXPECT_TRUE(exactly_zero(tag + "grad " + name, p.grad()));
    } else {
      EXPECT_TRUE(close_to(tag + "grad " + name, p.grad(), ref, kGradTol));
      EXPECT_TRUE(close_to(tag + "grad_f32 " + name, p.grad(), g["grad_f32." + name], kGradTol));
    }
    ++checked;
  }
  EXPECT_EQ(checked, 20);  // 18 TTT tensors + 2 gates, as the golden lists
}

}  // namespace

TEST(HybridFork, GoldenFloat32) { check(at::kFloat); }
TEST(HybridFork, GoldenFloat64) { check(at::kDouble); }

TEST(HybridFork, ConsumedNamesLeaveOutTheDeadParameters) {
  HybridTTTPath path(golden_options());
  auto consumed = path.consumed_names();
  for (const auto& d : kDead) EXPECT_EQ(std::count(consumed.begin(), consumed.end(), d), 0) << d;
  EXPECT_EQ(consumed.size(), 15u);
  auto opts = golden_options();
  opts.direction = HybridDirection::bidirectional;
  HybridTTTPath bi(opts);
  auto c2 = bi.consumed_names();
  EXPECT_EQ(std::count(c2.begin(), c2.end(), "backward_ssm_gating.gating_alpha"), 1);
}

TEST(HybridFork, GateOverridesAndBidirectionalPass) {
  Golden g = load_golden("ttt/fork_hybrid_ttt_path.safetensors");
  at::Tensor x = g["in.x"];
  auto opts = golden_options();
  opts.direction = HybridDirection::bidirectional;
  HybridTTTPath bi(opts);
  bi.load(g.t, "", "golden");
  HybridTTTPath fwd(golden_options());
  fwd.load(g.t, "", "golden");
  at::NoGradGuard ng;
  at::Tensor y_fwd = fwd.forward(x).y;
  // With the backward gate forced shut the DiT pass reduces to the fork's forward pass.
  bi.backward_ssm_gating().force_multiplier(0.0);
  EXPECT_TRUE(at::allclose(bi.forward(x).y, y_fwd, 0, 0));
  bi.backward_ssm_gating().force_multiplier(std::nullopt);
  auto o = bi.forward(x);
  EXPECT_GT(rel_err(o.y, y_fwd), 1e-4);
  // The backward branch equals the reversed TTT of the reversed forward residual.
  at::Tensor e = y_fwd;
  HybridTTTPath probe(golden_options());
  probe.load(g.t, "", "golden");
  probe.forward_ssm_gating().force_multiplier(1.0);
  at::Tensor rev_e = at::flip(e, {1});
  at::Tensor expect_back = at::flip(probe.forward(rev_e).ttt_out, {1});
  EXPECT_TRUE(close_to("backward branch", o.ttt_out_back, expect_back, 1e-6));
  // Forward gate forced to 0: the path is the identity.
  fwd.forward_ssm_gating().force_multiplier(0.0);
  EXPECT_TRUE(at::equal(fwd.forward(x).y, x));
}

TEST(HybridFork, PadTokensUpdateTheStateOnlyInLegacyMode) {
  Golden g = load_golden("ttt/fork_hybrid_ttt_path.safetensors");
  at::NoGradGuard ng;
  auto masked_opts = golden_options();
  masked_opts.pad_updates = PadUpdates::masked;
  HybridTTTPath legacy(golden_options()), masked(masked_opts);
  legacy.load(g.t, "", "golden");
  masked.load(g.t, "", "golden");
  at::Tensor x21 = g["in.x"];                 // L = 21: 3 pad tokens in the last mini-batch
  at::Tensor x16 = x21.narrow(1, 0, 16);      // L = 16: no padding
  EXPECT_TRUE(at::allclose(legacy.forward(x16).y, masked.forward(x16).y, 1e-6, 1e-6));
  // The dit eta lets every token of a mini-batch see that mini-batch's update, pads included.
  EXPECT_GT(rel_err(legacy.forward(x21).y.narrow(1, 16, 5), masked.forward(x21).y.narrow(1, 16, 5)), 1e-6);
}
