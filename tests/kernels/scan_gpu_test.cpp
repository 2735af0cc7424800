// GPU tests of the CUDA scan kernels against the CPU reference of the same launcher API (which the
// CPU tests tie to the goldens and to the LibTorch path). They skip, with the reason, when the build
// has no CUDA or no device is visible. Tolerances: fp32 runs use fp32 FMA GEMMs (summation order
// differs only); bf16 runs use bf16 tensor-core GEMMs, so operands are rounded to 8 mantissa bits
// before each product inside the inner loop (relative tolerance a few 2^-8).
#include <gtest/gtest.h>
#include <ATen/core/grad_mode.h>

#include <algorithm>
#include <cmath>

#include <string>

#include "kernels/cuda_runtime_info.h"
#include "ttt/cuda_dispatch.h"
#include "ttt/ttt_scan.h"

namespace {

using mtt::ttt::KernelImpl;

#define SKIP_WITHOUT_GPU()                                                                  \
  if (!mtt::ttt::cuda_kernels_available())                                                  \
  GTEST_SKIP() << "no CUDA kernels/device: " << mtt::ttt::cuda_kernels_status()

double rel_err(const at::Tensor& a, const at::Tensor& ref) {
  at::Tensor r = ref.cpu().to(at::kDouble);
  return (a.cpu().to(at::kDouble) - r).abs().max().item<double>() / std::max(r.abs().max().item<double>(), 1e-30);
}

struct Case {
  mtt::ttt::ScanInputs in;
  std::vector<at::Tensor> W, Bv;
  Case to(at::Device dev, at::ScalarType io) const {
    Case c = *this;
    c.in.XQ = in.XQ.to(dev, io);
    c.in.XK = in.XK.to(dev, io);
    c.in.XV = in.XV.to(dev, io);
    c.in.eta = in.eta.to(dev);
    c.in.ln_weight = in.ln_weight.to(dev);
    c.in.ln_bias = in.ln_bias.to(dev);
    for (auto& w : c.W) w = w.to(dev);
    for (auto& b : c.Bv) b = b.to(dev);
    return c;
  }
};

Case random_case(int64_t B, int64_t H, int64_t NC, int64_t b, int64_t d, int depth, bool causal, uint64_t seed) {
  at::manual_seed(seed);
  Case c;
  c.in.XQ = at::randn({B, H, NC, b, d}) * 0.5;
  c.in.XK = at::randn({B, H, NC, b, d}) * 0.5;
  c.in.XV = at::randn({B, H, NC, b, d}) + c.in.XK;
  at::Tensor lr = at::sigmoid(at::randn({B, H, NC, 1, b})) / d;
  at::Tensor tok = 1.0 / at::arange(1, b + 1, at::kFloat).view({b, 1});
  c.in.eta = causal ? at::tril(tok * lr) : (lr / b).expand({B, H, NC, b, b}).contiguous();
  c.in.ln_weight = 1 + 0.2 * at::randn({H, d});
  c.in.ln_bias = 0.1 * at::randn({H, d});
  c.in.record_losses = true;
  const int64_t m1 = depth == 2 ? 4 * d : d;
  c.W.push_back(0.3 * at::randn({B, H, d, m1}) / std::sqrt(double(d) / 16));
  c.Bv.push_back(0.1 * at::randn({B, H, 1, m1}));
  if (depth == 2) {
    c.W.push_back(0.15 * at::randn({B, H, m1, d}) / std::sqrt(double(d) / 16));
    c.Bv.push_back(0.1 * at::randn({B, H, 1, d}));
  }
  return c;
}

void compare(const Case& host, at::ScalarType io, double tol) {
  Case rounded = host;  // the CPU reference sees the same (rounded) inputs as the kernel
  rounded.in.XQ = host.in.XQ.to(io).to(at::kFloat);
  rounded.in.XK = host.in.XK.to(io).to(at::kFloat);
  rounded.in.XV = host.in.XV.to(io).to(at::kFloat);
  auto ref = mtt::ttt::kernel_scan(rounded.in, rounded.W, rounded.Bv, KernelImpl::cpu_reference);
  ASSERT_TRUE(ref.has_value());
  Case dev = host.to(at::Device(at::kCUDA, 0), io);
  ASSERT_EQ(mtt::ttt::kernel_unsupported_reason(dev.in, dev.W, dev.Bv, KernelImpl::cuda), "");
  auto out = mtt::ttt::kernel_scan(dev.in, dev.W, dev.Bv, KernelImpl::cuda);
  ASSERT_TRUE(out.has_value());
  ASSERT_TRUE(mtt::kernels::cuda_synchronize()) << mtt::kernels::cuda_last_error();
  EXPECT_LE(rel_err(out->XQW.to(at::kFloat), ref->XQW), tol);
  for (size_t k = 0; k < host.W.size(); ++k) {
    EXPECT_LE(rel_err(out->weights[k], ref->weights[k]), tol) << "W" << k + 1;
    EXPECT_LE(rel_err(out->biases[k], ref->biases[k]), tol) << "b" << k + 1;
  }
  EXPECT_LE(rel_err(out->loss_before, ref->loss_before), tol);
  EXPECT_LE(rel_err(out->loss_after, ref->loss_after), tol);
}

TEST(ScanGpu, LinearFp32) {
  SKIP_WITHOUT_GPU();
  compare(random_case(2, 3, 4, 16, 64, 1, true, 1), at::kFloat, 2e-5);
  compare(random_case(1, 2, 3, 12, 32, 1, false, 2), at::kFloat, 2e-5);   // b not a multiple of 16: SIMT
  compare(random_case(1, 2, 2, 64, 128, 1, true, 3), at::kFloat, 2e-5);   // largest supported shape
}
TEST(ScanGpu, MlpFp32) {
  SKIP_WITHOUT_GPU();
  compare(random_case(2, 2, 3, 16, 64, 2, true, 4), at::kFloat, 2e-5);
  compare(random_case(1, 2, 2, 32, 128, 2, true, 5), at::kFloat, 2e-5);   // state in global workspace
}
TEST(ScanGpu, TensorCoresBf16) {
  SKIP_WITHOUT_GPU();
  compare(random_case(2, 4, 4, 32, 64, 1, true, 6), at::kBFloat16, 3e-2);
  compare(random_case(1, 4, 4, 16, 64, 2, true, 7), at::kBFloat16, 3e-2);
  compare(random_case(1, 2, 2, 64, 128, 2, false, 8), at::kBFloat16, 3e-2);
}
TEST(ScanGpu, LinearBackwardFp32) {
  SKIP_WITHOUT_GPU();
  Case h = random_case(2, 2, 5, 16, 32, 1, true, 9);
  h.in.record_losses = false;
  for (int64_t g : {0, 1, 2}) {
    h.in.checkpoint_group = g;
    at::manual_seed(10);
    at::Tensor dO = at::randn_like(h.in.XQ), dWf = at::randn_like(h.W[0]), dbf = at::randn_like(h.Bv[0]);
    auto ref = mtt::ttt::kernel_scan_backward(h.in, h.W, h.Bv, dO, {dWf}, {dbf}, KernelImpl::cpu_reference);
    Case dev = h.to(at::Device(at::kCUDA, 0), at::kFloat);
    auto out = mtt::ttt::kernel_scan_backward(dev.in, dev.W, dev.Bv, dO.cuda(), {dWf.cuda()}, {dbf.cuda()},
                                              KernelImpl::cuda);
    ASSERT_TRUE(ref && out);
    ASSERT_TRUE(mtt::kernels::cuda_synchronize()) << mtt::kernels::cuda_last_error();
    EXPECT_LE(rel_err(out->dXQ, ref->dXQ), 5e-5);
    EXPECT_LE(rel_err(out->dXK, ref->dXK), 5e-5);
    EXPECT_LE(rel_err(out->dXV, ref->dXV), 5e-5);
    EXPECT_LE(rel_err(out->deta, ref->deta), 5e-5);
    EXPECT_LE(rel_err(out->dweights[0], ref->dweights[0]), 5e-5);
    EXPECT_LE(rel_err(out->dbiases[0], ref->dbiases[0]), 5e-5);
    EXPECT_LE(rel_err(out->dln_weight, ref->dln_weight), 5e-5);
    EXPECT_LE(rel_err(out->dln_bias, ref->dln_bias), 5e-5);
  }
}
TEST(ScanGpu, DispatchTakesCudaTensors) {
  SKIP_WITHOUT_GPU();
  Case dev = random_case(1, 2, 2, 16, 32, 2, true, 11).to(at::Device(at::kCUDA, 0), at::kFloat);
  dev.in.record_losses = false;
  mtt::ttt::register_cuda_scan_backend();
  at::NoGradGuard ng;
  auto via = mtt::ttt::ttt_scan(dev.in, dev.W, dev.Bv);           // kernel (backend registered)
  auto ref = mtt::ttt::ttt_scan_reference(dev.in, dev.W, dev.Bv);  // LibTorch ops on the GPU
  EXPECT_LE(rel_err(via.XQW, ref.XQW), 2e-5);
  EXPECT_LE(rel_err(via.weights[1], ref.weights[1]), 2e-5);
}

}  // namespace
