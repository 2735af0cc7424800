// SSMGating against every ssm_gating golden file (fork: tanh(clamp(α,−3,3))·x; VDIT: tanh(α)·x),
// configured from the file as ttt-golden does, and the override hooks.
#include <gtest/gtest.h>

#include "golden/golden_runner.h"
#include "inplace_golden_util.h"
#include "ttt/ssm_gating.h"

using namespace mtt::test;
using mtt::ttt::SSMGating;
using mtt::ttt::SSMGatingOptions;

namespace {

using mtt::golden::GoldenFile;

struct GateRun {
  at::Tensor y, g_alpha, g_x;
};

GateRun run_gate(SSMGating& gate, const GoldenFile& g, at::ScalarType dt) {
  at::Tensor x = g.tensor("in.x").to(dt).detach().clone().set_requires_grad(true);
  gate.gating_alpha.mutable_grad() = at::Tensor();
  at::Tensor y = gate.forward(x);
  (y * g.tensor("cot.G").to(dt)).sum().backward();
  return {y.detach(), gate.gating_alpha.grad(), x.grad()};
}

std::vector<std::string> gating_files() {
  std::vector<std::string> dirs;
  for (auto& d : golden_test_dirs()) dirs.push_back(d.string());
  return mtt::golden::golden_cases_of(dirs, mtt::golden::Family::ssm_gating);
}

// Every variant of every ssm_gating file, configured from the file (clamp or not, as its reference).
void check_file(const std::string& file) {
  GoldenFile g = GoldenFile::open(file);
  const auto variants = mtt::golden::variants(g);
  ASSERT_EQ(variants.size(), 2u) << file;  // fork and vdit
  for (const std::string& v : variants) {
    const std::string tag = file + " " + v;
    const auto opts = mtt::golden::ssm_gating_options(g, v);
    {
      // float32 port vs the float64 and the float32 reference runs.
      SSMGating gate(opts);
      mtt::ttt::load_module_tensors(gate, g.tensors(), "", file);
      GateRun r = run_gate(gate, g, at::kFloat);
      EXPECT_TRUE(close_to(tag + " y", r.y, g.tensor("out." + v + ".y"), kOutTol));
      EXPECT_TRUE(close_to(tag + " y f32", r.y, g.tensor("out_f32." + v + ".y"), kOutTol));
      EXPECT_TRUE(close_to(tag + " dalpha", r.g_alpha, g.tensor("grad." + v + ".gating_alpha"), kGradTol));
      EXPECT_TRUE(close_to(tag + " dalpha f32", r.g_alpha, g.tensor("grad_f32." + v + ".gating_alpha"), kGradTol));
      EXPECT_TRUE(close_to(tag + " dx", r.g_x, g.tensor("grad." + v + ".x"), kGradTol));
    }
    {
      // float64 port: the reference is pure fp64 here ("exact" class, 1e-9).
      SSMGating gate(opts);
      gate.to(at::kDouble);
      mtt::ttt::load_module_tensors(gate, g.tensors(), "", file);
      GateRun r = run_gate(gate, g, at::kDouble);
      EXPECT_TRUE(close_to(tag + " y f64", r.y, g.tensor("out." + v + ".y"), 1e-9));
      EXPECT_TRUE(close_to(tag + " dalpha f64", r.g_alpha, g.tensor("grad." + v + ".gating_alpha"), 1e-9));
      EXPECT_TRUE(close_to(tag + " dx f64", r.g_x, g.tensor("grad." + v + ".x"), 1e-9));
    }
  }
}

}  // namespace

TEST(SSMGating, GoldenEveryFileBothVariants) {
  const auto files = gating_files();
  if (files.empty()) GTEST_SKIP() << "no ssm_gating golden files";
  for (const auto& f : files) check_file(f);
}

TEST(SSMGating, ClampEdgesMatchTorchClamp) {
  // alpha strictly outside the clamp range: zero gradient (reference and ours); alpha exactly on
  // an edge: torch.clamp passes the gradient, so do we. Which entries those are is read from the file.
  int outside = 0, edge = 0;
  for (const auto& file : gating_files()) {
    GoldenFile g = GoldenFile::open(file);
    const auto opts = mtt::golden::ssm_gating_options(g, "fork");
    ASSERT_TRUE(opts.clamp_alpha) << file;
    const at::Tensor alpha = g.tensor("gating_alpha");
    const at::Tensor ga = g.tensor("grad.fork.gating_alpha");
    SSMGating gate(opts);
    mtt::ttt::load_module_tensors(gate, g.tensors(), "", file);
    GateRun r = run_gate(gate, g, at::kFloat);
    const double scale = ga.abs().max().item<double>();
    for (int64_t i = 0; i < alpha.size(0); ++i) {
      const double a = alpha[i].item<double>();
      if (std::abs(a) > opts.clamp_limit) {
        ++outside;
        EXPECT_EQ(ga[i].item<double>(), 0.0) << file << " alpha[" << i << "] = " << a;
        EXPECT_EQ(r.g_alpha[i].item<double>(), 0.0) << file << " alpha[" << i << "] = " << a;
      } else if (std::abs(a) == opts.clamp_limit) {
        ++edge;
        EXPECT_NE(r.g_alpha[i].item<double>(), 0.0) << file << " alpha[" << i << "] = " << a;
        EXPECT_NEAR(r.g_alpha[i].item<double>(), ga[i].item<double>(), 3e-5 * scale);
      }
    }
  }
  if (outside + edge == 0) GTEST_SKIP() << "no ssm_gating golden file with alpha outside or on the clamp";
  EXPECT_GT(outside, 0);
  EXPECT_GT(edge, 0);
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
