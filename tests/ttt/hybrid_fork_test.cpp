// The fork's hybrid TTT sub-path against every fork_hybrid_ttt_path golden file (shared set and
// variants; configured from the file as ttt-golden does): outputs, every gradient, the exact zeros
// of the dead parameters the file lists; plus the DiT bidirectional option and the padding variants.
#include <gtest/gtest.h>

#include <sstream>

#include "golden/golden_runner.h"
#include "inplace_golden_util.h"
#include "ttt/hybrid_ttt_path.h"

using namespace mtt::test;
using namespace mtt::ttt;
using mtt::golden::GoldenFile;

namespace {

std::vector<std::string> hybrid_files() {
  std::vector<std::string> dirs;
  for (auto& d : golden_test_dirs()) dirs.push_back(d.string());
  return mtt::golden::golden_cases_of(dirs, mtt::golden::Family::fork_hybrid_ttt_path);
}

// The file's list of parameters the reference never reads ("a, b, c").
std::vector<std::string> dead_parameters(const GoldenFile& g) {
  std::vector<std::string> v;
  std::stringstream ss(g.meta("unused_parameters_zero_grad"));
  std::string s;
  while (std::getline(ss, s, ',')) {
    while (!s.empty() && s.front() == ' ') s.erase(s.begin());
    while (!s.empty() && s.back() == ' ') s.pop_back();
    if (!s.empty()) v.push_back(s);
  }
  return v;
}

void check(const std::string& file, at::ScalarType dt) {
  GoldenFile g = GoldenFile::open(file);
  HybridTTTPath path(mtt::golden::fork_hybrid_options(g));
  if (dt == at::kDouble) path.to(at::kDouble);
  path.load(g.tensors(), "", file);
  path.set_requires_grad(true);
  at::Tensor x = g.tensor("in.x").to(dt).detach().clone().set_requires_grad(true);
  auto out = path.forward(x);
  (out.y * g.tensor("cot.G").to(dt)).sum().backward();
  const std::string tag = file + (dt == at::kFloat ? " f32 " : " f64 ");
  // The fork computes the op in float32 even in its fp64 run: fp32 tolerances for both.
  EXPECT_TRUE(close_to(tag + "y", out.y, g.tensor("out.y"), kOutTol));
  EXPECT_TRUE(close_to(tag + "y vs f32 run", out.y, g.tensor("out_f32.y"), kOutTol));
  EXPECT_TRUE(close_to(tag + "ttt_out", out.ttt_out, g.tensor("out.ttt_out"), kOutTol));
  EXPECT_TRUE(close_to(tag + "grad x", x.grad(), g.tensor("grad.x"), kGradTol));
  const auto dead = dead_parameters(g);
  EXPECT_EQ(dead.size(), 5u) << "wo.weight/bias, post_norm.weight/bias and the backward gate";
  int checked = 0, grads_in_file = 0;
  for (const auto& [k, t] : g.tensors()) grads_in_file += k.rfind("grad.", 0) == 0 && k != "grad.x";
  for (auto& [name, p] : path.named_parameters()) {
    const at::Tensor& ref = g.tensor("grad." + name);
    if (std::find(dead.begin(), dead.end(), name) != dead.end()) {
      EXPECT_EQ(ref.abs().max().item<double>(), 0.0) << name;
      EXPECT_TRUE(exactly_zero(tag + "grad " + name, p.grad()));
    } else {
      EXPECT_TRUE(close_to(tag + "grad " + name, p.grad(), ref, kGradTol));
      EXPECT_TRUE(close_to(tag + "grad_f32 " + name, p.grad(), g.tensor("grad_f32." + name), kGradTol));
    }
    ++checked;
  }
  EXPECT_EQ(checked, grads_in_file);  // every parameter the golden lists, no more
}

}  // namespace

TEST(HybridFork, GoldenEveryFile) {
  const auto files = hybrid_files();
  if (files.empty()) GTEST_SKIP() << "no fork_hybrid_ttt_path golden files";
  for (const auto& f : files) {
    check(f, at::kFloat);
    check(f, at::kDouble);
  }
}

TEST(HybridFork, ConsumedNamesLeaveOutTheDeadParameters) {
  auto opts = HybridTTTPathOptions::fork(32, 2, 8, 1.0, 0.1);
  HybridTTTPath path(opts);
  auto consumed = path.consumed_names();
  for (const std::string d : {"ttt_layer.ttt.wo.weight", "ttt_layer.ttt.wo.bias", "ttt_layer.ttt.post_norm.weight",
                              "ttt_layer.ttt.post_norm.bias", "backward_ssm_gating.gating_alpha"})
    EXPECT_EQ(std::count(consumed.begin(), consumed.end(), d), 0) << d;
  EXPECT_EQ(consumed.size(), 15u);
  opts.direction = HybridDirection::bidirectional;
  HybridTTTPath bi(opts);
  auto c2 = bi.consumed_names();
  EXPECT_EQ(std::count(c2.begin(), c2.end(), "backward_ssm_gating.gating_alpha"), 1);
}

TEST(HybridFork, GateOverridesAndBidirectionalPass) {
  const auto files = hybrid_files();
  if (files.empty()) GTEST_SKIP() << "no fork_hybrid_ttt_path golden files";
  for (const auto& file : files) {
    SCOPED_TRACE(file);
    GoldenFile g = GoldenFile::open(file);
    const auto base = mtt::golden::fork_hybrid_options(g);
    at::Tensor x = g.tensor("in.x");
    auto opts = base;
    opts.direction = HybridDirection::bidirectional;
    HybridTTTPath bi(opts);
    bi.load(g.tensors(), "", file);
    HybridTTTPath fwd(base);
    fwd.load(g.tensors(), "", file);
    at::NoGradGuard ng;
    at::Tensor y_fwd = fwd.forward(x).y;
    // With the backward gate forced shut the DiT pass reduces to the fork's forward pass.
    bi.backward_ssm_gating().force_multiplier(0.0);
    EXPECT_TRUE(at::allclose(bi.forward(x).y, y_fwd, 0, 0));
    bi.backward_ssm_gating().force_multiplier(std::nullopt);
    auto o = bi.forward(x);
    EXPECT_GT(rel_err(o.y, y_fwd), 1e-4);
    // The backward branch equals the reversed TTT of the reversed forward residual.
    HybridTTTPath probe(base);
    probe.load(g.tensors(), "", file);
    probe.forward_ssm_gating().force_multiplier(1.0);
    at::Tensor expect_back = at::flip(probe.forward(at::flip(y_fwd, {1})).ttt_out, {1});
    EXPECT_TRUE(close_to("backward branch", o.ttt_out_back, expect_back, 1e-6));
    // Forward gate forced to 0: the path is the identity.
    fwd.forward_ssm_gating().force_multiplier(0.0);
    EXPECT_TRUE(at::equal(fwd.forward(x).y, x));
  }
}

TEST(HybridFork, PadTokensUpdateTheStateOnlyInLegacyMode) {
  int padded_files = 0;
  for (const auto& file : hybrid_files()) {
    SCOPED_TRACE(file);
    GoldenFile g = GoldenFile::open(file);
    const auto base = mtt::golden::fork_hybrid_options(g);
    const int64_t b = base.ttt.mini_batch_size, L = g.tensor("in.x").size(1), full = (L / b) * b;
    if (L % b == 0 || full == 0) continue;
    ++padded_files;
    at::NoGradGuard ng;
    auto masked_opts = base;
    masked_opts.pad_updates = PadUpdates::masked;
    HybridTTTPath legacy(base), masked(masked_opts);
    legacy.load(g.tensors(), "", file);
    masked.load(g.tensors(), "", file);
    at::Tensor x = g.tensor("in.x");        // L % b != 0: pad tokens in the last mini-batch
    at::Tensor xf = x.narrow(1, 0, full);   // whole mini-batches: no padding
    EXPECT_TRUE(at::allclose(legacy.forward(xf).y, masked.forward(xf).y, 1e-6, 1e-6));
    // The dit eta lets every token of a mini-batch see that mini-batch's update, pads included.
    EXPECT_GT(rel_err(legacy.forward(x).y.narrow(1, full, L - full), masked.forward(x).y.narrow(1, full, L - full)), 1e-6);
  }
  if (padded_files == 0) GTEST_SKIP() << "no fork_hybrid_ttt_path golden file with a partial last mini-batch";
}
