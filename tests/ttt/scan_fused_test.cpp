// The fused CPU scan (lib/ttt/scan_cpu_fused.h) against the LibTorch reference path
// (ttt_scan_reference + autograd) op by op: outputs, final states, loss records and every gradient,
// for TTT-Linear and TTT-MLP of depth 2 and 3, causal and DiT eta, B = 2, checkpoint groups 0 and 2,
// float64 and float32; its gradients by central finite differences; the VDIT goldens; and the
// dispatch of ttt_scan (fused by default, reference with MTT_TTT_SCAN=reference).
#include <gtest/gtest.h>
#include <ATen/core/grad_mode.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/function.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "nn/tensor_io.h"
#include "test_util.h"
#include "ttt/scan_cpu_fused.h"
#include "ttt/ttt_scan.h"

namespace {

using mtt::ttt::ScanInputs;
using mtt::ttt::ScanOutputs;

// max|a - ref| / max|ref| (golden README "Tolerances").
double rel_err(const at::Tensor& a, const at::Tensor& ref) {
  at::Tensor r = ref.to(at::kDouble);
  return (a.to(at::kDouble) - r).abs().max().item<double>() / std::max(r.abs().max().item<double>(), 1e-30);
}

struct Config {
  int depth;        // 1: TTT-Linear, 2: TTT-MLP, 3: deeper MLP
  bool causal;      // tril'ed eta (LM) or VDIT's identical rows
  int64_t group;    // checkpoint group
  at::ScalarType dtype;
  bool record = false;
};

std::string name(const Config& c) {
  return "depth" + std::to_string(c.depth) + (c.causal ? "_causal" : "_dit") + "_g" + std::to_string(c.group) +
         (c.dtype == at::kDouble ? "_f64" : "_f32") + (c.record ? "_losses" : "");
}

// Leaves (what gradients are taken for) and the scan inputs built from them; the inner state is
// [H, ...] expanded to B as the layer does, so its gradient sums over the batch.
struct Problem {
  std::vector<at::Tensor> leaves;  // XQ, XK, XV, eta, lnw, lnb, W_0.., b_0..
  int depth = 1;
  int64_t B = 2, H = 2, NC = 5, b = 4, d = 8;
};

Problem make_problem(const Config& c, uint64_t seed = 7) {
  Problem p;
  p.depth = c.depth;
  at::manual_seed(seed);
  auto opt = at::TensorOptions().dtype(at::kDouble);
  const int64_t B = p.B, H = p.H, NC = p.NC, b = p.b, d = p.d;
  auto l2 = [](const at::Tensor& t) { return t / t.norm(2, {-1}, true); };
  at::Tensor XQ = l2(at::randn({B, H, NC, b, d}, opt)), XK = l2(at::randn({B, H, NC, b, d}, opt));
  at::Tensor XV = at::randn({B, H, NC, b, d}, opt);
  // Learning rates large enough that the state moves visibly across the five mini-batches.
  at::Tensor lr = at::sigmoid(at::randn({B, H, NC, 1, b}, opt)) * 0.5;
  at::Tensor eta;
  if (c.causal) {
    at::Tensor tok = 1.0 / at::arange(1, b + 1, opt);
    eta = at::tril(tok.view({1, 1, 1, b, 1}) * lr);
  } else {
    eta = (lr / static_cast<double>(b)).expand({B, H, NC, b, b}).contiguous();
  }
  at::Tensor lnw = 1.0 + 0.3 * at::randn({H, d}, opt), lnb = 0.3 * at::randn({H, d}, opt);
  std::vector<int64_t> dims{d};
  if (c.depth == 2) dims.push_back(4 * d);
  if (c.depth == 3) {
    dims.push_back(16);
    dims.push_back(24);
  }
  dims.push_back(d);
  std::vector<at::Tensor> W, Bv;
  for (size_t k = 0; k + 1 < dims.size(); ++k) {
    W.push_back(at::randn({H, dims[k], dims[k + 1]}, opt) / std::sqrt(static_cast<double>(dims[k])));
    Bv.push_back(0.1 * at::randn({H, 1, dims[k + 1]}, opt));
  }
  p.leaves = {XQ, XK, XV, eta, lnw, lnb};
  for (auto& t : W) p.leaves.push_back(t);
  for (auto& t : Bv) p.leaves.push_back(t);
  for (auto& t : p.leaves) t = t.to(c.dtype).detach().requires_grad_(true);
  return p;
}

struct ScanRun {
  ScanOutputs out;
  std::vector<at::Tensor> grads;  // w.r.t. the leaves
};

// The scan on the leaves through `fn`; gradients of sum(XQW * cXQW) + sum_k sum(W_k' * cW_k) + ...
// (a cotangent on the final state too, as streaming training carries it).
template <typename Fn>
ScanRun run(const Problem& p, const Config& c, Fn fn, bool grads = true) {
  const auto& L = p.leaves;
  const size_t n = p.depth;
  ScanInputs in;
  in.XQ = L[0];
  in.XK = L[1];
  in.XV = L[2];
  in.eta = L[3];
  in.ln_weight = L[4];
  in.ln_bias = L[5];
  in.ln_eps = 1e-6;
  in.checkpoint_group = c.group;
  in.record_losses = c.record;
  std::vector<at::Tensor> W, Bv;
  for (size_t k = 0; k < n; ++k) {
    at::Tensor w = L[6 + k], bb = L[6 + n + k];
    W.push_back(w.unsqueeze(0).expand({p.B, w.size(0), w.size(1), w.size(2)}));
    Bv.push_back(bb.unsqueeze(0).expand({p.B, bb.size(0), bb.size(1), bb.size(2)}));
  }
  ScanRun r;
  at::AutoGradMode on(grads);
  r.out = fn(in, W, Bv);
  if (!grads) return r;
  at::manual_seed(11);
  auto cot = [&](const at::Tensor& t) { return at::randn(t.sizes(), t.options().requires_grad(false)); };
  at::Tensor loss = (r.out.XQW * cot(r.out.XQW)).sum();
  for (size_t k = 0; k < n; ++k)
    loss = loss + (r.out.weights[k] * cot(r.out.weights[k])).sum() + (r.out.biases[k] * cot(r.out.biases[k])).sum();
  r.grads = torch::autograd::grad({loss}, L, {}, /*retain_graph=*/false, /*create_graph=*/false, /*allow_unused=*/true);
  return r;
}

ScanOutputs fused(const ScanInputs& in, const std::vector<at::Tensor>& W, const std::vector<at::Tensor>& Bv) {
  auto o = mtt::ttt::cpu_fused_scan(in, W, Bv);
  EXPECT_TRUE(o.has_value()) << mtt::ttt::cpu_fused_unsupported_reason(in, W, Bv);
  return o ? *o : ScanOutputs{};
}

ScanOutputs reference(const ScanInputs& in, const std::vector<at::Tensor>& W, const std::vector<at::Tensor>& Bv) {
  return mtt::ttt::ttt_scan_reference(in, W, Bv);
}

const char* kLeafNames[] = {"XQ", "XK", "XV", "eta", "ln_weight", "ln_bias"};
std::string leaf_name(size_t i, size_t n) {
  if (i < 6) return kLeafNames[i];
  return (i < 6 + n ? "W" : "b") + std::to_string((i - 6) % n);
}

class FusedVsReference : public ::testing::TestWithParam<Config> {};

TEST_P(FusedVsReference, OutputsStatesLossesAndGradients) {
  const Config& c = GetParam();
  // Spec tolerances: float64 to rounding (the two paths only reorder sums), float32 1e-5 relative.
  const double tol = c.dtype == at::kDouble ? 1e-10 : 1e-5;
  Problem p = make_problem(c);
  ScanRun f = run(p, c, fused), r = run(p, c, reference);
  EXPECT_LE(rel_err(f.out.XQW, r.out.XQW), tol) << "XQW";
  EXPECT_EQ(f.out.XQW.scalar_type(), r.out.XQW.scalar_type());
  ASSERT_EQ(f.out.weights.size(), r.out.weights.size());
  for (size_t k = 0; k < r.out.weights.size(); ++k) {
    EXPECT_LE(rel_err(f.out.weights[k], r.out.weights[k]), tol) << "final W" << k;
    EXPECT_LE(rel_err(f.out.biases[k], r.out.biases[k]), tol) << "final b" << k;
    EXPECT_EQ(f.out.weights[k].sizes(), r.out.weights[k].sizes());
  }
  if (c.record) {
    ASSERT_TRUE(f.out.loss_before.defined() && f.out.loss_after.defined());
    EXPECT_EQ(f.out.loss_before.sizes(), r.out.loss_before.sizes());
    EXPECT_LE(rel_err(f.out.loss_before, r.out.loss_before), tol) << "loss_before";
    EXPECT_LE(rel_err(f.out.loss_after, r.out.loss_after), tol) << "loss_after";
    // The inner step lowers the reconstruction loss on average (Figure 5), in both paths.
    EXPECT_LT(f.out.loss_after.mean().item<double>(), f.out.loss_before.mean().item<double>());
  }
  ASSERT_EQ(f.grads.size(), r.grads.size());
  for (size_t i = 0; i < r.grads.size(); ++i) {
    ASSERT_TRUE(r.grads[i].defined()) << leaf_name(i, p.depth);
    ASSERT_TRUE(f.grads[i].defined()) << leaf_name(i, p.depth);
    EXPECT_GT(r.grads[i].abs().max().item<double>(), 0.0) << leaf_name(i, p.depth);
    // Gradients are sums over many more terms than outputs; float32 gets the golden README's 3e-5.
    const double gtol = c.dtype == at::kDouble ? tol : 3e-5;
    EXPECT_LE(rel_err(f.grads[i], r.grads[i]), gtol) << "grad " << leaf_name(i, p.depth);
  }
}

std::vector<Config> configs() {
  std::vector<Config> v;
  for (at::ScalarType dt : {at::kDouble, at::kFloat})
    for (int depth : {1, 2, 3})
      for (bool causal : {true, false})
        for (int64_t g : {0, 2}) v.push_back({depth, causal, g, dt});
  v.push_back({2, true, 0, at::kDouble, true});
  v.push_back({1, false, 2, at::kFloat, true});
  v.push_back({3, true, 2, at::kDouble, true});
  return v;
}

INSTANTIATE_TEST_SUITE_P(All, FusedVsReference, ::testing::ValuesIn(configs()),
                         [](const ::testing::TestParamInfo<Config>& i) { return name(i.param); });

// Without grad mode the fused forward runs without an autograd node and gives the same values.
TEST(FusedScan, NoGradForwardMatchesReference) {
  Config c{2, true, 0, at::kDouble, true};
  Problem p = make_problem(c);
  ScanRun f = run(p, c, fused, false), r = run(p, c, reference, false);
  EXPECT_FALSE(f.out.XQW.requires_grad());
  EXPECT_LE(rel_err(f.out.XQW, r.out.XQW), 1e-10);
  EXPECT_LE(rel_err(f.out.weights[1], r.out.weights[1]), 1e-10);
  EXPECT_LE(rel_err(f.out.loss_after, r.out.loss_after), 1e-10);
}

// Central finite differences of the fused scan's scalar loss along a random direction per leaf,
// against the fused backward (float64): an invariant independent of the reference path.
TEST(FusedScan, GradientsMatchFiniteDifferences) {
  for (int depth : {1, 2}) {
    Config c{depth, true, 2, at::kDouble};
    Problem p = make_problem(c, 3);
    ScanRun base = run(p, c, fused);
    at::manual_seed(5);
    for (size_t i = 0; i < p.leaves.size(); ++i) {
      at::Tensor v = at::randn(p.leaves[i].sizes(), p.leaves[i].options().requires_grad(false));
      const double analytic = (base.grads[i] * v).sum().item<double>();
      auto loss_at = [&](double h) {
        Problem q = p;
        q.leaves[i] = (p.leaves[i].detach() + h * v).requires_grad_(true);
        ScanRun rr = run(q, c, fused, false);
        at::manual_seed(11);
        auto cot = [&](const at::Tensor& t) { return at::randn(t.sizes(), t.options()); };
        at::Tensor loss = (rr.out.XQW * cot(rr.out.XQW)).sum();
        for (size_t k = 0; k < static_cast<size_t>(depth); ++k)
          loss = loss + (rr.out.weights[k] * cot(rr.out.weights[k])).sum() +
                 (rr.out.biases[k] * cot(rr.out.biases[k])).sum();
        return loss.item<double>();
      };
      const double h = 1e-5;
      const double numeric = (loss_at(h) - loss_at(-h)) / (2 * h);
      EXPECT_NEAR(analytic, numeric, 1e-6 * std::max(1.0, std::abs(numeric)))
          << "depth " << depth << " leaf " << leaf_name(i, depth);
    }
  }
}

// The VDIT op goldens (an outside reference) through the fused path: outputs and gradients.
TEST(FusedScan, VditGoldens) {
  for (auto [file, depth] : {std::pair<const char*, int>{"vdit_ttt_mlp_op", 2}, {"vdit_ttt_linear_op", 1},
                             {"vdit_ttt_mlp_op_general_eta", 2}, {"vdit_ttt_linear_op_general_eta", 1}}) {
    auto path = mtt::test::golden_dir() / "ttt" / (std::string(file) + ".safetensors");
    if (!std::filesystem::exists(path)) GTEST_SKIP() << "golden file missing: " << path;
    auto g = mtt::nn::load_tensors(path.string());
    for (at::ScalarType dt : {at::kFloat, at::kDouble}) {
      auto in_t = [&](const char* k) { return g.at(std::string("in.") + k).to(dt).detach().requires_grad_(true); };
      ScanInputs in;
      in.XQ = in_t("XQ");
      in.XK = in_t("XK");
      in.XV = in_t("XV");
      in.eta = in_t("eta");
      in.ln_weight = in_t("ttt_norm_weight");
      in.ln_bias = in_t("ttt_norm_bias");
      in.ln_eps = 1e-8;  // VDIT ops/utils.py
      std::vector<at::Tensor> W{in_t("W1")}, Bv{in_t("b1")};
      if (depth == 2) {
        W.push_back(in_t("W2"));
        Bv.push_back(in_t("b2"));
      }
      at::AutoGradMode on(true);
      auto o = mtt::ttt::cpu_fused_scan(in, W, Bv);
      ASSERT_TRUE(o.has_value());
      // Golden float32 tolerances (README): 1e-5 outputs, 3e-5 gradients (the goldens are fp32-accurate).
      EXPECT_LE(rel_err(o->XQW.permute({0, 2, 3, 1, 4}), g.at("out.XQW")), 1e-5) << file;
      EXPECT_LE(rel_err(o->weights[0], g.at("out.final_W1")), 1e-5) << file;
      at::Tensor cot = g.at("cot.G").permute({0, 3, 1, 2, 4}).to(dt);
      std::vector<at::Tensor> leaves{in.XQ, in.XK, in.XV, in.eta, in.ln_weight, in.ln_bias, W[0], Bv[0]};
      auto gr = torch::autograd::grad({(o->XQW * cot).sum()}, leaves, {}, false, false, true);
      const char* keys[] = {"XQ", "XK", "XV", "eta", "ttt_norm_weight", "ttt_norm_bias", "W1", "b1"};
      for (size_t i = 0; i < leaves.size(); ++i)
        EXPECT_LE(rel_err(gr[i], g.at(std::string("grad.") + keys[i])), 3e-5) << file << " grad " << keys[i];
    }
  }
}

// ttt_scan picks the fused path for CPU float inputs and the reference path with
// MTT_TTT_SCAN=reference; both agree.
TEST(FusedScan, TttScanDispatch) {
  Config c{2, true, 0, at::kDouble};
  Problem p = make_problem(c);
  ::unsetenv("MTT_TTT_SCAN");
  EXPECT_TRUE(mtt::ttt::cpu_fused_scan_enabled());
  ScanRun a = run(p, c, [](auto& in, auto& W, auto& Bv) { return mtt::ttt::ttt_scan(in, W, Bv); });
  ASSERT_TRUE(a.out.XQW.grad_fn());
  EXPECT_NE(a.out.XQW.grad_fn()->name().find("FusedScanFn"), std::string::npos) << a.out.XQW.grad_fn()->name();
  ::setenv("MTT_TTT_SCAN", "reference", 1);
  EXPECT_FALSE(mtt::ttt::cpu_fused_scan_enabled());
  ScanRun b = run(p, c, [](auto& in, auto& W, auto& Bv) { return mtt::ttt::ttt_scan(in, W, Bv); });
  ::unsetenv("MTT_TTT_SCAN");
  ASSERT_TRUE(b.out.XQW.grad_fn());
  EXPECT_EQ(b.out.XQW.grad_fn()->name().find("FusedScanFn"), std::string::npos);
  EXPECT_LE(rel_err(a.out.XQW, b.out.XQW), 1e-10);
  for (size_t i = 0; i < a.grads.size(); ++i) EXPECT_LE(rel_err(a.grads[i], b.grads[i]), 1e-10) << i;
}

// Inputs the fused path does not take are declined with a reason (ttt_scan then runs the reference).
TEST(FusedScan, DeclinesUnsupportedInputs) {
  Config c{1, true, 0, at::kFloat};
  Problem p = make_problem(c);
  ScanInputs in;
  in.XQ = p.leaves[0].detach().to(at::kBFloat16);
  in.XK = p.leaves[1].detach().to(at::kBFloat16);
  in.XV = p.leaves[2].detach().to(at::kBFloat16);
  in.eta = p.leaves[3].detach().to(at::kBFloat16);
  in.ln_weight = p.leaves[4].detach();
  in.ln_bias = p.leaves[5].detach();
  std::vector<at::Tensor> W{p.leaves[6].detach().unsqueeze(0).expand({2, 2, 8, 8}).to(at::kBFloat16)};
  std::vector<at::Tensor> Bv{p.leaves[7].detach().unsqueeze(0).expand({2, 2, 1, 8}).to(at::kBFloat16)};
  EXPECT_NE(mtt::ttt::cpu_fused_unsupported_reason(in, W, Bv).find("dtype"), std::string::npos);
  EXPECT_FALSE(mtt::ttt::cpu_fused_scan(in, W, Bv).has_value());
  // A depth chain that does not return to d.
  in.XQ = p.leaves[0].detach();
  in.XK = p.leaves[1].detach();
  in.XV = p.leaves[2].detach();
  in.eta = p.leaves[3].detach();
  std::vector<at::Tensor> W2{at::zeros({2, 2, 8, 6})}, B2{at::zeros({2, 2, 1, 6})};
  EXPECT_FALSE(mtt::ttt::cpu_fused_unsupported_reason(in, W2, B2).empty());
}

}  // namespace
