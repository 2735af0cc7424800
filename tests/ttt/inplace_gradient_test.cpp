// Gradient flow through the In-Place TTT target generator V̂ = W_target(Conv(t)).
// The seed note 003 claims that with one of the two factors at zero both gradients stay zero.
// The chain rule says otherwise: ∂L/∂conv = f(W_targetᵀ·∂L/∂V̂, t) and ∂L/∂W_target = ∂L/∂V̂ ⊗ Conv(t),
// so the zero factor receives a non-zero gradient whenever the other factor is non-zero, and the
// non-zero factor receives an exactly-zero one. Checked here with autograd and with central finite
// differences in float64; the measured norms are printed ("[grad-flow]") for the report.
#include <cstdio>

#include <gtest/gtest.h>

#include "inplace_golden_util.h"
#include "ttt/gradient_flow.h"
#include "ttt/inplace_ttt.h"

using namespace mtt::test;
using namespace mtt::ttt;

namespace {

const char* kConv = "target_generator.conv1d.conv.weight";
const char* kWt = "target_generator.W_target.weight";

struct Case {
  InPlaceTTTOptions opts;
  TargetInit conv, wt;
};

struct Grads {
  double conv = 0, wt = 0;
  at::Tensor g_conv, g_wt;
};

// The golden block (x, embeddings, slow weights, cotangent of inplace_ttt_random_init) with the
// target generator re-initialised; L = sum(y ⊙ G).
std::unique_ptr<InPlaceTTT> make_block(const Golden& g, const Case& c, at::ScalarType dt) {
  auto block = std::make_unique<InPlaceTTT>(c.opts);
  if (dt == at::kDouble) block->to(at::kDouble);
  block->load(g.t, "", "golden");
  init_target_generator(*block, c.conv, c.wt);
  return block;
}

double loss(InPlaceTTT& b, const Golden& g, at::ScalarType dt) {
  at::NoGradGuard ng;
  auto out = b.forward(g["in.x"].to(dt), g["in.token_embeddings"].to(dt));
  return (out.y * g["cot.G"].to(dt)).sum().item<double>();
}

Grads grads(InPlaceTTT& b, const Golden& g, at::ScalarType dt) {
  auto out = b.forward(g["in.x"].to(dt), g["in.token_embeddings"].to(dt));
  (out.y * g["cot.G"].to(dt)).sum().backward();
  Grads r;
  r.g_conv = b.conv_weight.grad();
  r.g_wt = b.target_proj.grad();
  r.conv = r.g_conv.defined() ? r.g_conv.norm().item<double>() : 0.0;
  r.wt = r.g_wt.defined() ? r.g_wt.norm().item<double>() : 0.0;
  return r;
}

// Central finite difference of L along the unit direction u of `param`.
double fd(InPlaceTTT& b, at::Tensor& param, const at::Tensor& u, double eps, const Golden& g) {
  at::NoGradGuard ng;
  at::Tensor orig = param.clone();
  param.add_(eps * u);
  double lp = loss(b, g, at::kDouble);
  param.copy_(orig).sub_(eps * u);
  double lm = loss(b, g, at::kDouble);
  param.copy_(orig);
  return (lp - lm) / (2 * eps);
}

InPlaceTTTOptions port(double lr, std::optional<double> clip) {
  auto o = InPlaceTTTOptions::moshi_port(16, 64);
  o.chunk_size = 4;
  o.lr = lr;
  o.delta_clip_fro_norm = clip;
  return o;
}

void report(const std::string& label, const Grads& r) {
  std::printf("[grad-flow] %-44s |dL/dconv| = %.6e  |dL/dW_target| = %.6e\n", label.c_str(), r.conv, r.wt);
}

}  // namespace

TEST(InPlaceGradient, BothZeroGivesExactlyZeroGradients) {
  Golden g = load_golden("ttt/inplace_ttt_random_init.safetensors");
  for (auto o : {port(1e-3, 1e-5), port(1.0, std::nullopt)}) {
    auto b = make_block(g, {o, TargetInit::zero(), TargetInit::zero()}, at::kFloat);
    Grads r = grads(*b, g, at::kFloat);
    report(std::string("both zero, ") + (o.delta_clip_fro_norm ? "clip 1e-5 lr 1e-3" : "no clip lr 1"), r);
    EXPECT_TRUE(exactly_zero("conv", r.g_conv));
    EXPECT_TRUE(exactly_zero("W_target", r.g_wt));
  }
}

TEST(InPlaceGradient, SmallRandomInitOfBothGivesNonZeroGradients) {
  Golden g = load_golden("ttt/inplace_ttt_random_init.safetensors");
  for (auto o : {port(1e-3, 1e-5), port(1.0, std::nullopt)}) {
    auto b = make_block(g, {o, TargetInit::normal(1e-4), TargetInit::normal(1e-4)}, at::kFloat);
    Grads r = grads(*b, g, at::kFloat);
    report(std::string("both N(0,1e-4), ") + (o.delta_clip_fro_norm ? "clip 1e-5 lr 1e-3" : "no clip lr 1"), r);
    EXPECT_GT(r.conv, 0.0);
    EXPECT_GT(r.wt, 0.0);
  }
}

TEST(InPlaceGradient, OnlyOneFactorZeroTheZeroFactorGetsTheGradient) {
  Golden g = load_golden("ttt/inplace_ttt_random_init.safetensors");
  struct Sub {
    std::string label;
    TargetInit conv, wt;
    bool conv_is_zero;
  };
  const std::vector<Sub> subs = {
      {"conv zero, W_target N(0,1e-4)", TargetInit::zero(), TargetInit::normal(1e-4), true},
      {"conv zero, W_target N(0,1e-2)", TargetInit::zero(), TargetInit::normal(1e-2), true},
      {"conv N(0,1e-4), W_target zero", TargetInit::normal(1e-4), TargetInit::zero(), false},
      {"conv N(0,1e-2), W_target zero", TargetInit::normal(1e-2), TargetInit::zero(), false},
  };
  for (auto o : {port(1e-3, 1e-5), port(1.0, std::nullopt)}) {
    const std::string cfg = o.delta_clip_fro_norm ? ", clip 1e-5 lr 1e-3" : ", no clip lr 1";
    for (const Sub& s : subs) {
      auto b = make_block(g, {o, s.conv, s.wt}, at::kFloat);
      Grads r = grads(*b, g, at::kFloat);
      report(s.label + cfg, r);
      if (s.conv_is_zero) {
        EXPECT_GT(r.conv, 0.0) << s.label << cfg;          // ∂L/∂conv = W_targetᵀ-weighted signal ≠ 0
        EXPECT_TRUE(exactly_zero("W_target", r.g_wt));     // ∂L/∂W_target ∝ Conv(t) = 0
      } else {
        EXPECT_TRUE(exactly_zero("conv", r.g_conv));       // ∂L/∂conv ∝ W_target = 0
        EXPECT_GT(r.wt, 0.0) << s.label << cfg;            // ∂L/∂W_target = ∂L/∂V̂ ⊗ Conv(t) ≠ 0
      }
    }
  }
}

TEST(InPlaceGradient, FiniteDifferencesConfirmTheZeroFactorGradient) {
  // float64, no clip (L is then exactly linear in each factor): the directional derivative of L
  // along the autograd gradient's direction equals ‖g‖; along any direction of the non-zero
  // factor it is exactly 0 because V̂ stays identically zero.
  Golden g = load_golden("ttt/inplace_ttt_random_init.safetensors");
  auto o = port(1.0, std::nullopt);
  for (bool conv_zero : {true, false}) {
    Case c{o, conv_zero ? TargetInit::zero() : TargetInit::normal(1e-2),
           conv_zero ? TargetInit::normal(1e-2) : TargetInit::zero()};
    auto b = make_block(g, c, at::kDouble);
    Grads r = grads(*b, g, at::kDouble);
    at::Tensor& zero_param = conv_zero ? b->conv_weight : b->target_proj;
    at::Tensor& other_param = conv_zero ? b->target_proj : b->conv_weight;
    const at::Tensor gz = conv_zero ? r.g_conv : r.g_wt;
    const double norm = gz.norm().item<double>();
    ASSERT_GT(norm, 0.0);
    const double d = fd(*b, zero_param, gz / norm, 1e-3, g);
    std::printf("[grad-flow] fd check (%s): autograd |g| = %.9e, finite difference = %.9e\n",
                conv_zero ? "conv zero" : "W_target zero", norm, d);
    EXPECT_NEAR(d, norm, 1e-6 * norm);
    at::Tensor u = at::randn(other_param.sizes(), at::kDouble);
    u = u / u.norm();
    EXPECT_EQ(fd(*b, other_param, u, 1e-2, g), 0.0);
  }
}

TEST(InPlaceGradient, OfficialVariantSameChainRule) {
  // Official init: conv zero, ttt_proj diagonal: the conv gets a gradient, ttt_proj none.
  auto o = InPlaceTTTOptions::official(16, 40);
  o.chunk_size = 4;
  o.lr = 0.3;
  InPlaceTTT b(o);
  at::Tensor x = at::randn({2, 13, 16}), G = at::randn({2, 13, 16});
  auto out = b.forward(x, x);  // official default target source: the MLP input itself
  (out.y * G).sum().backward();
  EXPECT_GT(b.conv_weight.grad().norm().item<double>(), 0.0);
  EXPECT_TRUE(exactly_zero("ttt_proj", b.target_proj.grad()));
}
