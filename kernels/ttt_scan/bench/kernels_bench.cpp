// Benchmark of the fused TTT scan kernels against the LibTorch op path (lib/ttt ttt_scan_reference)
// on the same device: tokens/s and TFLOP/s for TTT-Linear and TTT-MLP at Moshi-like shapes
// (H 32, d 128 and H 64, d 64; causal eta; docs/ttt.md §9 for the FLOP counts).
//   kernels_bench [--json] [--cpu] [--reps N] [--seq L]
// Without a GPU it says so (and exits 0); --cpu then times the kernels' CPU copy (../cpu_ref)
// against the LibTorch CPU path on a small shape instead (a host-side figure, not a kernel figure).
// The standalone check (../gpu_check, scripts/gpu_check_standalone.sh) times the kernels without
// LibTorch, against the cuBLAS GEMM peak.
#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "kernels/common/cuda_runtime_info.h"
#include "kernels/ttt_scan/test/cpu_ref_launchers.h"  // --cpu: the kernels' CPU copy (test code)
#include "ttt/cuda_dispatch.h"
#include "ttt/ttt_scan.h"

namespace {

struct Shape {
  const char* name;
  int64_t B, H, L, b, d;
  int depth;
};

// Forward FLOPs per head per token (spec §9): TTT-MLP 56 d^2 + 30 b d, TTT-Linear 6 d^2 + 6 b d.
double flops(const Shape& s) {
  const double d = s.d, b = s.b;
  const double per = s.depth == 2 ? 56 * d * d + 30 * b * d : 6 * d * d + 6 * b * d;
  return per * s.H * s.B * s.L;
}

struct Inputs {
  mtt::ttt::ScanInputs in;
  std::vector<at::Tensor> W, Bv;
};

Inputs make(const Shape& s, at::Device dev, at::ScalarType dt) {
  at::manual_seed(0);
  const int64_t NC = s.L / s.b;
  auto o = at::TensorOptions().device(dev);
  Inputs r;
  r.in.XQ = (at::randn({s.B, s.H, NC, s.b, s.d}, o) * 0.5).to(dt);
  r.in.XK = (at::randn({s.B, s.H, NC, s.b, s.d}, o) * 0.5).to(dt);
  r.in.XV = (at::randn({s.B, s.H, NC, s.b, s.d}, o)).to(dt);
  at::Tensor tok = 1.0 / at::arange(1, s.b + 1, o.dtype(at::kFloat)).view({s.b, 1});
  r.in.eta = at::tril(tok * at::sigmoid(at::randn({s.B, s.H, NC, 1, s.b}, o)) / s.d).to(dt);
  r.in.ln_weight = at::ones({s.H, s.d}, o);
  r.in.ln_bias = at::zeros({s.H, s.d}, o);
  const int64_t m1 = s.depth == 2 ? 4 * s.d : s.d;
  r.W.push_back(0.02 * at::randn({s.B, s.H, s.d, m1}, o));
  r.Bv.push_back(at::zeros({s.B, s.H, 1, m1}, o));
  if (s.depth == 2) {
    r.W.push_back(0.02 * at::randn({s.B, s.H, m1, s.d}, o));
    r.Bv.push_back(at::zeros({s.B, s.H, 1, s.d}, o));
  }
  if (dt == at::kBFloat16) {
    r.in.ln_weight = r.in.ln_weight.to(dt);
    r.in.ln_bias = r.in.ln_bias.to(dt);
  }
  return r;
}

template <class F>
double time_ms(F&& f, int reps, bool gpu) {
  f();  // warm-up
  if (gpu) mtt::kernels::cuda_synchronize();
  auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < reps; ++i) f();
  if (gpu) mtt::kernels::cuda_synchronize();
  auto t1 = std::chrono::steady_clock::now();
  return std::chrono::duration<double, std::milli>(t1 - t0).count() / reps;
}

}  // namespace

int main(int argc, char** argv) {
  bool json = false, cpu = false;
  int reps = 10;
  int64_t seq = 2048;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--json")) json = true;
    else if (!std::strcmp(argv[i], "--cpu")) cpu = true;
    else if (!std::strcmp(argv[i], "--reps") && i + 1 < argc) reps = std::atoi(argv[++i]);
    else if (!std::strcmp(argv[i], "--seq") && i + 1 < argc) seq = std::atoll(argv[++i]);
    else {
      std::fprintf(stderr, "usage: kernels_bench [--json] [--cpu] [--reps N] [--seq L]\n");
      return 64;
    }
  }
  at::NoGradGuard ng;
  const bool gpu = mtt::ttt::cuda_kernels_available();
  const std::string status = mtt::ttt::cuda_kernels_status();
  if (!gpu && !cpu) {
    if (json)
      std::printf("{\"format\":\"moshi-ttt/bench/kernels/1\",\"gpu\":false,\"status\":\"%s\",\"results\":[]}\n", status.c_str());
    else
      std::printf("kernels_bench: no GPU (%s); nothing to measure (use --cpu for the CPU reference)\n", status.c_str());
    return 0;
  }
  std::vector<Shape> shapes;
  if (gpu) {
    shapes = {{"linear_H32_d128_b32", 4, 32, seq, 32, 128, 1}, {"mlp_H32_d128_b32", 4, 32, seq, 32, 128, 2},
              {"linear_H64_d64_b16", 4, 64, seq, 16, 64, 1},   {"mlp_H64_d64_b16", 4, 64, seq, 16, 64, 2}};
  } else {
    shapes = {{"linear_H4_d64_b16_cpu", 1, 4, 256, 16, 64, 1}, {"mlp_H4_d32_b16_cpu", 1, 4, 256, 16, 32, 2}};
  }
  const at::Device dev = gpu ? at::Device(at::kCUDA, 0) : at::Device(at::kCPU);
  const auto impl = gpu ? mtt::ttt::KernelImpl::cuda : mtt::ttt::KernelImpl::cpu_reference;
  std::vector<at::ScalarType> dts = gpu ? std::vector<at::ScalarType>{at::kBFloat16, at::kFloat}
                                        : std::vector<at::ScalarType>{at::kFloat};
  std::string out = "[";
  for (const Shape& s : shapes) {
    for (auto dt : dts) {
      Inputs r = make(s, dev, dt);
      const std::string why = mtt::ttt::kernel_unsupported_reason(r.in, r.W, r.Bv, impl);
      if (!why.empty()) {
        std::fprintf(stderr, "%s: unsupported: %s\n", s.name, why.c_str());
        continue;
      }
      double tk = time_ms([&] { (void)mtt::ttt::kernel_scan(r.in, r.W, r.Bv, impl); }, reps, gpu);
      double tr = time_ms([&] { (void)mtt::ttt::ttt_scan_reference(r.in, r.W, r.Bv); }, reps, gpu);
      const double tokens = double(s.B) * s.L, fl = flops(s);
      char buf[512];
      std::snprintf(buf, sizeof buf,
                    "%s{\"shape\":\"%s\",\"dtype\":\"%s\",\"impl\":\"%s\",\"B\":%lld,\"H\":%lld,\"L\":%lld,\"b\":%lld,"
                    "\"d\":%lld,\"kernel_ms\":%.4f,\"libtorch_ms\":%.4f,\"kernel_tokens_per_s\":%.1f,"
                    "\"libtorch_tokens_per_s\":%.1f,\"kernel_tflops\":%.4f,\"libtorch_tflops\":%.4f,\"speedup\":%.3f}",
                    out.size() > 1 ? "," : "", s.name, dt == at::kBFloat16 ? "bf16" : "fp32", gpu ? "cuda" : "cpu_reference",
                    (long long)s.B, (long long)s.H, (long long)s.L, (long long)s.b, (long long)s.d, tk, tr,
                    tokens / tk * 1e3, tokens / tr * 1e3, fl / tk * 1e-9, fl / tr * 1e-9, tr / tk);
      out += buf;
      if (!json)
        std::printf("%-24s %-4s kernel %9.3f ms (%10.0f tok/s, %7.3f TFLOP/s)  libtorch %9.3f ms  speedup %.2fx\n",
                    s.name, dt == at::kBFloat16 ? "bf16" : "fp32", tk, tokens / tk * 1e3, fl / tk * 1e-9, tr, tr / tk);
    }
  }
  out += "]";
  if (json)
    std::printf("{\"format\":\"moshi-ttt/bench/kernels/1\",\"gpu\":%s,\"status\":\"%s\",\"results\":%s}\n",
                gpu ? "true" : "false", status.c_str(), out.c_str());
  return 0;
}
