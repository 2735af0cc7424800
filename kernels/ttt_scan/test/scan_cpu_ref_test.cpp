// The kernels' algorithm (../algo.h) through the launcher API's CPU copy (../cpu_ref), reached via
// lib/ttt's dispatch (KernelImpl::cpu_reference): against the golden reference files
// (VDIT op and LMPT causal dual form, forward and gradients) and against the LibTorch path of lib/ttt
// (ttt_scan_reference + autograd) on shapes the goldens do not cover.
#include <gtest/gtest.h>
#include <ATen/core/grad_mode.h>

#include <algorithm>
#include <cmath>

#include <map>
#include <string>

#include "kernels/ttt_scan/test/cpu_ref_launchers.h"
#include "nn/tensor_io.h"
#include "test_util.h"
#include "ttt/cuda_dispatch.h"
#include "ttt/ttt_scan.h"

namespace {

using mtt::ttt::KernelImpl;
using mtt::ttt::ScanInputs;

std::map<std::string, at::Tensor> golden(const std::string& name) {
  return mtt::nn::load_tensors((mtt::test::golden_dir() / "ttt" / name).string());
}

// max|a - ref| / max|ref| (golden README "Tolerances").
double rel_err(const at::Tensor& a, const at::Tensor& ref) {
  at::Tensor r = ref.to(at::kDouble);
  return (a.to(at::kDouble) - r).abs().max().item<double>() / std::max(r.abs().max().item<double>(), 1e-30);
}

#define EXPECT_CLOSE(a, ref, tol) EXPECT_LE(rel_err(a, ref), tol) << #a " vs " #ref

struct Case {
  ScanInputs in;
  std::vector<at::Tensor> W, Bv;
};

// VDIT op files: inputs already in the op layout [B,H,NC,b,d], states per batch element.
Case vdit_case(std::map<std::string, at::Tensor>& g, int depth) {
  Case c;
  c.in.XQ = g.at("in.XQ");
  c.in.XK = g.at("in.XK");
  c.in.XV = g.at("in.XV");
  c.in.eta = g.at("in.eta");
  c.in.ln_weight = g.at("in.ttt_norm_weight");
  c.in.ln_bias = g.at("in.ttt_norm_bias");
  c.in.ln_eps = 1e-8;  // VDIT ops/utils.py
  c.W.push_back(g.at("in.W1"));
  c.Bv.push_back(g.at("in.b1"));
  if (depth == 2) {
    c.W.push_back(g.at("in.W2"));
    c.Bv.push_back(g.at("in.b2"));
  }
  return c;
}

void check_vdit_forward(const std::string& file, int depth) {
  auto g = golden(file);
  Case c = vdit_case(g, depth);
  auto out = mtt::ttt::kernel_scan(c.in, c.W, c.Bv, KernelImpl::cpu_reference);
  ASSERT_TRUE(out.has_value()) << mtt::ttt::kernel_unsupported_reason(c.in, c.W, c.Bv, KernelImpl::cpu_reference);
  // Golden out.XQW is [B,NC,b,H,d] = permute(0,2,3,1,4) of the scan layout.
  EXPECT_CLOSE(out->XQW.permute({0, 2, 3, 1, 4}), g.at("out.XQW"), 1e-5);
  EXPECT_CLOSE(out->weights[0], g.at("out.final_W1"), 1e-5);
  EXPECT_CLOSE(out->biases[0], g.at("out.final_b1"), 1e-5);
  if (depth == 2) {
    EXPECT_CLOSE(out->weights[1], g.at("out.final_W2"), 1e-5);
    EXPECT_CLOSE(out->biases[1], g.at("out.final_b2"), 1e-5);
  }
}

TEST(ScanCpuRef, VditLinearOp) { check_vdit_forward("vdit_ttt_linear_op.safetensors", 1); }
TEST(ScanCpuRef, VditLinearOpGeneralEta) { check_vdit_forward("vdit_ttt_linear_op_general_eta.safetensors", 1); }
TEST(ScanCpuRef, VditMlpOp) { check_vdit_forward("vdit_ttt_mlp_op.safetensors", 2); }
TEST(ScanCpuRef, VditMlpOpGeneralEta) { check_vdit_forward("vdit_ttt_mlp_op_general_eta.safetensors", 2); }

// LMPT causal dual form: inputs [B,H,L,d] after projection, eta [B,H,NC,b,b] before tril, initial
// states [H,...] shared by the batch; out.XQW is [B,L,D].
void check_lmpt_forward(const std::string& file, int depth) {
  auto g = golden(file);
  const at::Tensor XQ = g.at("in.XQ");
  const int64_t B = XQ.size(0), H = XQ.size(1), L = XQ.size(2), d = XQ.size(3);
  const at::Tensor eta = g.at("out.eta");
  const int64_t NC = eta.size(2), b = eta.size(3);
  ASSERT_EQ(NC * b, L);
  Case c;
  auto mb = [&](const at::Tensor& t) { return t.reshape({B, H, NC, b, d}); };
  c.in.XQ = mb(XQ);
  c.in.XK = mb(g.at("in.XK"));
  c.in.XV = mb(g.at("in.XV"));
  c.in.eta = at::tril(eta);  // causal: tril(eta) (spec §2.2)
  c.in.ln_weight = g.at("ttt_norm_weight");
  c.in.ln_bias = g.at("ttt_norm_bias");
  c.in.ln_eps = 1e-6;
  std::vector<std::string> names = depth == 1 ? std::vector<std::string>{"W1", "b1"}
                                              : std::vector<std::string>{"W1", "b1", "W2", "b2"};
  for (size_t k = 0; k < names.size(); k += 2) {
    c.W.push_back(g.at(names[k]).unsqueeze(0).expand({B, -1, -1, -1}).contiguous());
    c.Bv.push_back(g.at(names[k + 1]).unsqueeze(0).expand({B, -1, -1, -1}).contiguous());
  }
  auto out = mtt::ttt::kernel_scan(c.in, c.W, c.Bv, KernelImpl::cpu_reference);
  ASSERT_TRUE(out.has_value());
  at::Tensor y = out->XQW.reshape({B, H, L, d}).permute({0, 2, 1, 3}).reshape({B, L, H * d});
  EXPECT_CLOSE(y, g.at("out.XQW"), 1e-5);
  EXPECT_CLOSE(out->weights[0], g.at("out.final_W1"), 1e-5);
  EXPECT_CLOSE(out->biases[0], g.at("out.final_b1"), 1e-5);
  if (depth == 2) {
    EXPECT_CLOSE(out->weights[1], g.at("out.final_W2"), 1e-5);
    EXPECT_CLOSE(out->biases[1], g.at("out.final_b2"), 1e-5);
  }
}

TEST(ScanCpuRef, LmptLinearCausalDual) { check_lmpt_forward("lmpt_ttt_linear_dual.safetensors", 1); }
TEST(ScanCpuRef, LmptMlpCausalDual) { check_lmpt_forward("lmpt_ttt_mlp_dual.safetensors", 2); }

// Backward (TTT-Linear): gradients of sum(XQW * cot.G) against the golden autograd gradients, for
// several checkpoint group sizes (recompute per group must not change the values).
void check_vdit_backward(const std::string& file, int64_t group) {
  auto g = golden(file);
  Case c = vdit_case(g, 1);
  c.in.checkpoint_group = group;
  at::Tensor cot = g.at("cot.G").permute({0, 3, 1, 2, 4}).contiguous();  // -> [B,H,NC,b,d]
  auto gr = mtt::ttt::kernel_scan_backward(c.in, c.W, c.Bv, cot, {}, {}, KernelImpl::cpu_reference);
  ASSERT_TRUE(gr.has_value());
  const double tol = 3e-5;
  EXPECT_CLOSE(gr->dXQ, g.at("grad.XQ"), tol);
  EXPECT_CLOSE(gr->dXK, g.at("grad.XK"), tol);
  EXPECT_CLOSE(gr->dXV, g.at("grad.XV"), tol);
  EXPECT_CLOSE(gr->deta, g.at("grad.eta"), tol);
  EXPECT_CLOSE(gr->dweights[0], g.at("grad.W1"), tol);
  EXPECT_CLOSE(gr->dbiases[0], g.at("grad.b1"), tol);
  EXPECT_CLOSE(gr->dln_weight, g.at("grad.ttt_norm_weight"), tol);
  EXPECT_CLOSE(gr->dln_bias, g.at("grad.ttt_norm_bias"), tol);
}

TEST(ScanCpuRef, VditLinearBackwardNoRemat) { check_vdit_backward("vdit_ttt_linear_op.safetensors", 0); }
TEST(ScanCpuRef, VditLinearBackwardGroup1) { check_vdit_backward("vdit_ttt_linear_op.safetensors", 1); }
TEST(ScanCpuRef, VditLinearBackwardGroup2) { check_vdit_backward("vdit_ttt_linear_op.safetensors", 2); }
TEST(ScanCpuRef, VditLinearBackwardGeneralEta) {
  check_vdit_backward("vdit_ttt_linear_op_general_eta.safetensors", 2);
}

// Random causal inputs in the shapes the goldens do not cover (b not a power of two, NC = 1 and 4,
// d = 32, hidden 4d and 2d), against lib/ttt's LibTorch path, with the inner-loss recording.
Case random_case(int64_t B, int64_t H, int64_t NC, int64_t b, int64_t d, int depth, int64_t hidden, uint64_t seed) {
  at::manual_seed(seed);
  Case c;
  c.in.XQ = at::randn({B, H, NC, b, d}) * 0.5;
  c.in.XK = at::randn({B, H, NC, b, d}) * 0.5;
  c.in.XV = at::randn({B, H, NC, b, d}) + c.in.XK;
  at::Tensor tok = 1.0 / at::arange(1, b + 1, at::kFloat).view({b, 1});
  at::Tensor lr = at::sigmoid(at::randn({B, H, NC, 1, b})) / d;
  c.in.eta = at::tril(tok * lr);  // causal eta: tril(token factor x lr gate) (spec §1.2, §2.2)
  c.in.ln_weight = 1 + 0.2 * at::randn({H, d});
  c.in.ln_bias = 0.1 * at::randn({H, d});
  c.in.ln_eps = 1e-6;
  c.in.record_losses = true;
  const int64_t m1 = depth == 2 ? hidden : d;
  c.W.push_back(0.3 * at::randn({B, H, d, m1}));
  c.Bv.push_back(0.1 * at::randn({B, H, 1, m1}));
  if (depth == 2) {
    c.W.push_back(0.15 * at::randn({B, H, m1, d}));
    c.Bv.push_back(0.1 * at::randn({B, H, 1, d}));
  }
  return c;
}

void check_against_libtorch(const Case& c) {
  auto out = mtt::ttt::kernel_scan(c.in, c.W, c.Bv, KernelImpl::cpu_reference);
  ASSERT_TRUE(out.has_value()) << mtt::ttt::kernel_unsupported_reason(c.in, c.W, c.Bv, KernelImpl::cpu_reference);
  auto ref = mtt::ttt::ttt_scan_reference(c.in, c.W, c.Bv);
  EXPECT_CLOSE(out->XQW, ref.XQW, 1e-5);
  for (size_t k = 0; k < c.W.size(); ++k) {
    EXPECT_CLOSE(out->weights[k], ref.weights[k], 1e-5);
    EXPECT_CLOSE(out->biases[k], ref.biases[k], 1e-5);
  }
  ASSERT_TRUE(ref.loss_before.defined() && ref.loss_after.defined());
  EXPECT_CLOSE(out->loss_before, ref.loss_before, 1e-5);
  EXPECT_CLOSE(out->loss_after, ref.loss_after, 1e-5);
}

TEST(ScanCpuRef, LinearMatchesLibTorchPath) {
  check_against_libtorch(random_case(2, 3, 4, 12, 32, 1, 0, 11));
  check_against_libtorch(random_case(1, 2, 1, 16, 16, 1, 0, 12));
}
TEST(ScanCpuRef, MlpMatchesLibTorchPath) {
  check_against_libtorch(random_case(2, 2, 3, 12, 16, 2, 64, 13));
  check_against_libtorch(random_case(1, 1, 2, 8, 32, 2, 64, 14));  // expansion 2
}

// bf16 inputs/outputs: the CPU reference upcasts exactly, so it equals the fp32 run on the rounded
// inputs up to the final bf16 rounding of XQW.
TEST(ScanCpuRef, Bf16IoMatchesFp32OnRoundedInputs) {
  Case c = random_case(1, 2, 2, 16, 32, 2, 128, 15);
  c.in.record_losses = false;
  Case h = c;
  h.in.XQ = c.in.XQ.to(at::kBFloat16);
  h.in.XK = c.in.XK.to(at::kBFloat16);
  h.in.XV = c.in.XV.to(at::kBFloat16);
  Case f = c;
  f.in.XQ = h.in.XQ.to(at::kFloat);
  f.in.XK = h.in.XK.to(at::kFloat);
  f.in.XV = h.in.XV.to(at::kFloat);
  auto oh = mtt::ttt::kernel_scan(h.in, h.W, h.Bv, KernelImpl::cpu_reference);
  auto of = mtt::ttt::kernel_scan(f.in, f.W, f.Bv, KernelImpl::cpu_reference);
  ASSERT_TRUE(oh && of);
  EXPECT_EQ(oh->XQW.scalar_type(), at::kBFloat16);
  EXPECT_CLOSE(oh->XQW.to(at::kFloat), of->XQW, 8e-3);  // one bf16 rounding (2^-8 relative)
  EXPECT_CLOSE(oh->weights[0], of->weights[0], 1e-6);
}

// Linear backward with a cotangent on the final state too (streaming/TBPTT carries), against autograd
// through the LibTorch path.
TEST(ScanCpuRef, LinearBackwardMatchesAutograd) {
  Case c = random_case(2, 2, 3, 12, 16, 1, 0, 21);
  c.in.record_losses = false;
  c.in.checkpoint_group = 2;
  at::manual_seed(22);
  at::Tensor dO = at::randn_like(c.in.XQ), dWf = at::randn_like(c.W[0]), dbf = at::randn_like(c.Bv[0]);
  auto gr = mtt::ttt::kernel_scan_backward(c.in, c.W, c.Bv, dO, {dWf}, {dbf}, KernelImpl::cpu_reference);
  ASSERT_TRUE(gr.has_value());

  ScanInputs in = c.in;
  std::vector<at::Tensor> leaves = {in.XQ.clone().requires_grad_(), in.XK.clone().requires_grad_(),
                                    in.XV.clone().requires_grad_(), in.eta.clone().requires_grad_(),
                                    in.ln_weight.clone().requires_grad_(), in.ln_bias.clone().requires_grad_(),
                                    c.W[0].clone().requires_grad_(), c.Bv[0].clone().requires_grad_()};
  in.XQ = leaves[0]; in.XK = leaves[1]; in.XV = leaves[2]; in.eta = leaves[3];
  in.ln_weight = leaves[4]; in.ln_bias = leaves[5];
  in.checkpoint_group = 0;  // plain autograd through the LibTorch path (no remat node)
  auto ref = mtt::ttt::ttt_scan_reference(in, {leaves[6]}, {leaves[7]});
  at::Tensor L = (ref.XQW * dO).sum() + (ref.weights[0] * dWf).sum() + (ref.biases[0] * dbf).sum();
  L.backward();
  const double tol = 3e-5;
  EXPECT_CLOSE(gr->dXQ, leaves[0].grad(), tol);
  EXPECT_CLOSE(gr->dXK, leaves[1].grad(), tol);
  EXPECT_CLOSE(gr->dXV, leaves[2].grad(), tol);
  // The causal eta's upper triangle is a constant zero in the model; compare where it is used.
  at::Tensor mask = at::tril(at::ones({c.in.eta.size(3), c.in.eta.size(3)}));
  EXPECT_CLOSE(gr->deta * mask, leaves[3].grad() * mask, tol);
  EXPECT_CLOSE(gr->dln_weight, leaves[4].grad(), tol);
  EXPECT_CLOSE(gr->dln_bias, leaves[5].grad(), tol);
  EXPECT_CLOSE(gr->dweights[0], leaves[6].grad(), tol);
  EXPECT_CLOSE(gr->dbiases[0], leaves[7].grad(), tol);
}

// Dispatch: without a usable CUDA device (or with CPU tensors) the kernel path declines and ttt_scan
// runs the LibTorch path; unsupported shapes and autograd needs are reported, not run.
TEST(Dispatch, DeclinesAndFallsBack) {
  Case c = random_case(1, 2, 2, 8, 16, 1, 0, 31);
  const std::string why = mtt::ttt::kernel_unsupported_reason(c.in, c.W, c.Bv, KernelImpl::cuda);
  EXPECT_FALSE(why.empty());
  if (!mtt::ttt::cuda_kernels_available()) {
    EXPECT_NE(why.find("not available"), std::string::npos) << why;
  } else {
    EXPECT_NE(why.find("not on a CUDA device"), std::string::npos) << why;
  }
  EXPECT_FALSE(mtt::ttt::cuda_scan_backend(c.in, c.W, c.Bv).has_value());
  mtt::ttt::register_cuda_scan_backend();
  // ttt_scan then runs a CPU path (the fused CPU scan for f32/f64, else the LibTorch op path):
  // the same math, up to summation order.
  auto via_scan = mtt::ttt::ttt_scan(c.in, c.W, c.Bv);
  auto ref = mtt::ttt::ttt_scan_reference(c.in, c.W, c.Bv);
  EXPECT_TRUE(at::allclose(via_scan.XQW, ref.XQW, 1e-5, 1e-6));

  EXPECT_EQ(mtt::ttt::kernel_unsupported_reason(c.in, c.W, c.Bv, KernelImpl::cpu_reference), "");
  // The CPU copy is test code outside the product library: without the hand-over the dispatch
  // declines it and says why.
  mtt::ttt::set_cpu_reference_launchers({});
  EXPECT_NE(mtt::ttt::kernel_unsupported_reason(c.in, c.W, c.Bv, KernelImpl::cpu_reference).find("test code"),
            std::string::npos);
  EXPECT_FALSE(mtt::ttt::kernel_scan(c.in, c.W, c.Bv, KernelImpl::cpu_reference).has_value());
  mtt::kernels::test::hand_cpu_copy_to_dispatch();
  EXPECT_TRUE(mtt::ttt::kernel_scan(c.in, c.W, c.Bv, KernelImpl::cpu_reference).has_value());
  Case big = random_case(1, 1, 1, 8, 16, 1, 0, 32);
  big.in.XQ = at::randn({1, 1, 1, 80, 16});
  EXPECT_FALSE(mtt::ttt::kernel_unsupported_reason(big.in, big.W, big.Bv, KernelImpl::cpu_reference).empty());
  Case dbl = c;
  dbl.in.XQ = c.in.XQ.to(at::kDouble);
  dbl.in.XK = c.in.XK.to(at::kDouble);
  dbl.in.XV = c.in.XV.to(at::kDouble);
  EXPECT_NE(mtt::ttt::kernel_unsupported_reason(dbl.in, dbl.W, dbl.Bv, KernelImpl::cpu_reference).find("dtype"),
            std::string::npos);
  // Autograd: TTT-Linear runs as a kernel node; TTT-MLP (no backward kernel yet) declines.
  Case grad = c;
  grad.W[0] = c.W[0].clone().requires_grad_();
  EXPECT_EQ(mtt::ttt::kernel_unsupported_reason(grad.in, grad.W, grad.Bv, KernelImpl::cpu_reference), "");
  Case mlp = random_case(1, 2, 2, 8, 16, 2, 64, 33);
  mlp.W[1] = mlp.W[1].clone().requires_grad_();
  EXPECT_NE(mtt::ttt::kernel_unsupported_reason(mlp.in, mlp.W, mlp.Bv, KernelImpl::cpu_reference).find("autograd"),
            std::string::npos);
  {
    at::NoGradGuard ng;
    EXPECT_EQ(mtt::ttt::kernel_unsupported_reason(mlp.in, mlp.W, mlp.Bv, KernelImpl::cpu_reference), "");
  }
}

// The autograd node of the TTT-Linear kernel path: gradients of a loss on XQW, the final state and
// nothing else equal autograd through the LibTorch path (bf16-free, checkpoint groups of 1).
TEST(Dispatch, LinearAutogradNodeMatchesLibTorch) {
  Case c = random_case(1, 2, 3, 8, 16, 1, 0, 34);
  c.in.record_losses = true;
  c.in.checkpoint_group = 1;
  auto run = [&](bool kernel) {
    ScanInputs in = c.in;
    std::vector<at::Tensor> leaves = {in.XQ.clone().requires_grad_(), in.XK.clone().requires_grad_(),
                                      in.XV.clone().requires_grad_(), in.eta.clone().requires_grad_(),
                                      in.ln_weight.clone().requires_grad_(), in.ln_bias.clone().requires_grad_(),
                                      c.W[0].clone().requires_grad_(), c.Bv[0].clone().requires_grad_()};
    in.XQ = leaves[0]; in.XK = leaves[1]; in.XV = leaves[2]; in.eta = leaves[3];
    in.ln_weight = leaves[4]; in.ln_bias = leaves[5];
    mtt::ttt::ScanOutputs o;
    if (kernel) {
      auto k = mtt::ttt::kernel_scan(in, {leaves[6]}, {leaves[7]}, KernelImpl::cpu_reference);
      EXPECT_TRUE(k.has_value());
      o = *k;
    } else {
      in.checkpoint_group = 0;  // plain autograd through the LibTorch path (no remat node)
      o = mtt::ttt::ttt_scan_reference(in, {leaves[6]}, {leaves[7]});
    }
    EXPECT_TRUE(o.loss_before.defined());
    at::Tensor L = (o.XQW * o.XQW).sum() + (o.weights[0] * o.weights[0]).sum() * 0.5 + o.biases[0].sum();
    L.backward();
    std::vector<at::Tensor> g;
    for (auto& t : leaves) g.push_back(t.grad());
    return g;
  };
  auto gk = run(true), gr = run(false);
  for (size_t i = 0; i < gk.size(); ++i) {
    ASSERT_TRUE(gk[i].defined()) << i;
    EXPECT_LE(rel_err(gk[i], gr[i]), 3e-5) << "input " << i;
  }
}

}  // namespace
