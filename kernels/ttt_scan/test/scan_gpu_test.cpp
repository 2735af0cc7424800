// GPU tests of the CUDA scan kernels through lib/ttt's dispatch, against the kernels' CPU copy (which
// the CPU tests tie to the goldens and to the LibTorch path). They skip, with the reason, when the
// build has no CUDA kernels or no device is visible; scripts/gpu_check.sh runs them on a GPU machine.
// The state is compared through its update W_out - W_in (the update is ~0.3 % of |W|: comparing
// W_out would hide a broken update GEMM). Tolerances are those of the standalone check
// (../gpu_check/gpu_check.cpp, namespace tol), whose --cpu-only self-checks measure their sources:
// fp32 runs use fp32 FMA GEMMs (the CPU copy's own fp32 error against fp64 is <= 1.4e-5 of dW,
// 1e-6 of the output); bf16 runs use bf16 tensor-core GEMMs, compared with the plain fp32 CPU copy
// on the same rounded inputs (the bf16 rounding of the GEMM operands moves dW by up to 3.3e-3, the
// bf16 output by 6e-3, the backward's gradients by 4.6e-3).
#include <gtest/gtest.h>
#include <ATen/core/grad_mode.h>

#include <algorithm>
#include <cmath>

#include <string>

#include "kernels/common/cuda_runtime_info.h"
#include "kernels/ttt_scan/test/cpu_ref_launchers.h"
#include "ttt/cuda_dispatch.h"
#include "ttt/ttt_scan.h"
#ifdef MTT_TORCH_HAS_CUDA
#include <ATen/cuda/CUDAGraph.h>
#include <ATen/cuda/Sleep.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif

namespace {

using mtt::ttt::KernelImpl;

#define SKIP_WITHOUT_GPU()                                                                                   \
  if (!mtt::ttt::cuda_kernels_available())                                                                   \
  GTEST_SKIP() << "GPU test skipped, no CUDA kernels or device: " << mtt::ttt::cuda_kernels_status()

double rel_err(const at::Tensor& a, const at::Tensor& ref) {
  at::Tensor r = ref.cpu().to(at::kDouble);
  return (a.cpu().to(at::kDouble) - r).abs().max().item<double>() / std::max(r.abs().max().item<double>(), 1e-30);
}

struct Tol {
  double state, out, loss;
};
constexpr Tol kFp32{1e-4, 1e-5, 1e-5};
constexpr Tol kBf16VsFp32{2e-2, 2e-2, 1e-2};
constexpr double kFp32Grad = 1e-4, kBf16VsFp32Grad = 2e-2;

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

void compare(const Case& host, at::ScalarType io, const Tol& tol) {
  Case rounded = host;  // the CPU copy sees the same (rounded) inputs as the kernel
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
  EXPECT_LE(rel_err(out->XQW.to(at::kFloat), ref->XQW), tol.out) << "XQW";
  for (size_t k = 0; k < host.W.size(); ++k) {
    EXPECT_LE(rel_err(out->weights[k].cpu() - host.W[k], ref->weights[k] - host.W[k]), tol.state) << "dW" << k + 1;
    EXPECT_LE(rel_err(out->biases[k].cpu() - host.Bv[k], ref->biases[k] - host.Bv[k]), tol.state) << "db" << k + 1;
  }
  EXPECT_LE(rel_err(out->loss_before, ref->loss_before), tol.loss);
  EXPECT_LE(rel_err(out->loss_after, ref->loss_after), tol.loss);
}

TEST(ScanGpu, LinearFp32) {
  SKIP_WITHOUT_GPU();
  compare(random_case(2, 3, 4, 16, 64, 1, true, 1), at::kFloat, kFp32);
  compare(random_case(1, 2, 3, 12, 32, 1, false, 2), at::kFloat, kFp32);   // b not a multiple of 16: SIMT
  compare(random_case(1, 2, 2, 64, 128, 1, true, 3), at::kFloat, kFp32);   // largest supported shape
}
TEST(ScanGpu, MlpFp32) {
  SKIP_WITHOUT_GPU();
  compare(random_case(2, 2, 3, 16, 64, 2, true, 4), at::kFloat, kFp32);
  compare(random_case(1, 2, 2, 32, 128, 2, true, 5), at::kFloat, kFp32);   // state in global workspace
}
TEST(ScanGpu, TensorCoresBf16) {
  SKIP_WITHOUT_GPU();
  compare(random_case(2, 4, 4, 32, 64, 1, true, 6), at::kBFloat16, kBf16VsFp32);
  compare(random_case(1, 4, 4, 16, 64, 2, true, 7), at::kBFloat16, kBf16VsFp32);
  compare(random_case(1, 2, 2, 64, 128, 2, false, 8), at::kBFloat16, kBf16VsFp32);
}
// Backward of the TTT-Linear scan on the GPU against the CPU copy, for several checkpoint groups;
// bf16 inputs run the tensor-core GEMMs (the CPU copy gets the same rounded inputs in fp32, which it
// reads bitwise like bf16 loads: the standalone check's "bwd bf16 loads vs fp32 loads").
void compare_backward(const Case& c, at::ScalarType io, double tol) {
  Case h = c;
  h.in.record_losses = false;
  h.in.XQ = c.in.XQ.to(io).to(at::kFloat);
  h.in.XK = c.in.XK.to(io).to(at::kFloat);
  h.in.XV = c.in.XV.to(io).to(at::kFloat);
  for (int64_t g : {0, 1, 2}) {
    h.in.checkpoint_group = g;
    at::manual_seed(10);
    at::Tensor dO = at::randn_like(h.in.XQ), dWf = at::randn_like(h.W[0]), dbf = at::randn_like(h.Bv[0]);
    auto ref = mtt::ttt::kernel_scan_backward(h.in, h.W, h.Bv, dO, {dWf}, {dbf}, KernelImpl::cpu_reference);
    Case dev = h.to(at::Device(at::kCUDA, 0), io);
    ASSERT_EQ(dev.in.XQ.scalar_type(), io);
    auto out = mtt::ttt::kernel_scan_backward(dev.in, dev.W, dev.Bv, dO.cuda(), {dWf.cuda()}, {dbf.cuda()},
                                              KernelImpl::cuda);
    ASSERT_TRUE(ref && out);
    ASSERT_TRUE(mtt::kernels::cuda_synchronize()) << mtt::kernels::cuda_last_error();
    EXPECT_LE(rel_err(out->dXQ, ref->dXQ), tol) << "group " << g;
    EXPECT_LE(rel_err(out->dXK, ref->dXK), tol) << "group " << g;
    EXPECT_LE(rel_err(out->dXV, ref->dXV), tol) << "group " << g;
    EXPECT_LE(rel_err(out->deta, ref->deta), tol) << "group " << g;
    EXPECT_LE(rel_err(out->dweights[0], ref->dweights[0]), tol) << "group " << g;
    EXPECT_LE(rel_err(out->dbiases[0], ref->dbiases[0]), tol) << "group " << g;
    EXPECT_LE(rel_err(out->dln_weight, ref->dln_weight), tol) << "group " << g;
    EXPECT_LE(rel_err(out->dln_bias, ref->dln_bias), tol) << "group " << g;
  }
}

TEST(ScanGpu, LinearBackwardFp32) {
  SKIP_WITHOUT_GPU();
  compare_backward(random_case(2, 2, 5, 16, 32, 1, true, 9), at::kFloat, kFp32Grad);
  compare_backward(random_case(1, 2, 3, 12, 20, 1, false, 12), at::kFloat, kFp32Grad);  // SIMT GEMMs
}
TEST(ScanGpu, LinearBackwardBf16TensorCores) {
  SKIP_WITHOUT_GPU();
  compare_backward(random_case(2, 2, 5, 16, 32, 1, true, 13), at::kBFloat16, kBf16VsFp32Grad);
  compare_backward(random_case(1, 4, 3, 32, 128, 1, true, 14), at::kBFloat16, kBf16VsFp32Grad);  // Moshi d, b
  compare_backward(random_case(1, 2, 2, 64, 64, 1, false, 15), at::kBFloat16, kBf16VsFp32Grad);  // DiT d, b
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

// The kernels run on LibTorch's current stream: on a side stream (non-blocking, like every pool
// stream), the inputs are written after a long spin kernel; a kernel on any other stream would read
// them before they are there.
TEST(ScanGpu, RunsOnTheCurrentStream) {
  SKIP_WITHOUT_GPU();
#ifndef MTT_TORCH_HAS_CUDA
  GTEST_SKIP() << "LibTorch without CUDA";
#else
  Case dev = random_case(1, 4, 3, 16, 64, 1, true, 21).to(at::Device(at::kCUDA, 0), at::kFloat);
  dev.in.record_losses = false;
  at::NoGradGuard ng;
  auto eager = mtt::ttt::kernel_scan(dev.in, dev.W, dev.Bv, KernelImpl::cuda);
  ASSERT_TRUE(eager.has_value());
  const at::Tensor want = eager->XQW.cpu(), want_w = eager->weights[0].cpu();
  c10::cuda::CUDAStream side = c10::cuda::getStreamFromPool();
  at::Tensor got, got_w;
  {
    c10::cuda::CUDAStreamGuard guard(side);
    Case late = dev;
    late.in.XQ = at::zeros_like(dev.in.XQ);
    late.in.XK = at::zeros_like(dev.in.XK);
    at::cuda::sleep(int64_t(200) * 1000 * 1000);  // ~0.1 s of spinning on the side stream
    late.in.XQ.copy_(dev.in.XQ);
    late.in.XK.copy_(dev.in.XK);
    auto out = mtt::ttt::kernel_scan(late.in, late.W, late.Bv, KernelImpl::cuda);
    ASSERT_TRUE(out.has_value());
    got = out->XQW.cpu();  // waits for the side stream
    got_w = out->weights[0].cpu();
  }
  EXPECT_TRUE(at::equal(got, want));
  EXPECT_TRUE(at::equal(got_w, want_w));
#endif
}

// On the current stream the scan can be captured into a CUDA graph; the replay computes what the
// eager call computed.
TEST(ScanGpu, CapturesIntoCudaGraph) {
  SKIP_WITHOUT_GPU();
#ifndef MTT_TORCH_HAS_CUDA
  GTEST_SKIP() << "LibTorch without CUDA";
#else
  Case dev = random_case(1, 2, 3, 16, 32, 2, true, 22).to(at::Device(at::kCUDA, 0), at::kBFloat16);
  dev.in.record_losses = false;
  at::NoGradGuard ng;
  auto eager = mtt::ttt::kernel_scan(dev.in, dev.W, dev.Bv, KernelImpl::cuda);
  ASSERT_TRUE(eager.has_value());
  c10::cuda::CUDAStream side = c10::cuda::getStreamFromPool();
  at::cuda::CUDAGraph graph;
  at::Tensor out_xqw, out_w;
  {
    c10::cuda::CUDAStreamGuard guard(side);
    graph.capture_begin();
    auto out = mtt::ttt::kernel_scan(dev.in, dev.W, dev.Bv, KernelImpl::cuda);
    graph.capture_end();
    ASSERT_TRUE(out.has_value());
    out_xqw = out->XQW;
    out_w = out->weights[1];
    graph.replay();
    side.synchronize();
  }
  EXPECT_TRUE(at::equal(out_xqw.cpu(), eager->XQW.cpu()));
  EXPECT_TRUE(at::equal(out_w.cpu(), eager->weights[1].cpu()));
#endif
}

// Tensors on another device than the current one: the kernel runs there and the caller's current
// device is unchanged afterwards (needs two GPUs).
TEST(ScanGpu, LeavesTheCurrentDevice) {
  SKIP_WITHOUT_GPU();
  if (mtt::kernels::cuda_device_count() < 2) GTEST_SKIP() << "needs two CUDA devices";
  Case h = random_case(1, 2, 2, 16, 32, 1, true, 23);
  h.in.record_losses = false;
  ASSERT_TRUE(mtt::kernels::cuda_set_device(0));
  Case d1 = h.to(at::Device(at::kCUDA, 1), at::kFloat);
  at::NoGradGuard ng;
  auto out = mtt::ttt::kernel_scan(d1.in, d1.W, d1.Bv, KernelImpl::cuda);
  ASSERT_TRUE(out.has_value());
  EXPECT_EQ(out->XQW.device(), at::Device(at::kCUDA, 1));
  EXPECT_EQ(mtt::kernels::cuda_current_device(), 0);
  auto ref = mtt::ttt::kernel_scan(h.in, h.W, h.Bv, KernelImpl::cpu_reference);
  EXPECT_LE(rel_err(out->XQW, ref->XQW), kFp32.out);
}

}  // namespace
