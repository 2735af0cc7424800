// Standalone check of the TTT scan kernels on a bare GPU machine: the kernels and their CPU copy
// (../cpu_ref), no LibTorch, no other library. Built by scripts/gpu_check_standalone.sh with nvcc
// alone (or, for --cpu-only, with a C++ compiler alone). One verdict line per check:
//   PASS|FAIL|SKIP  <check>  <errors (tolerance)>
// and one TIME line per timed shape. Exit status: 0 every check passed, 1 a check failed, 77 no GPU
// (and none expected: without --expect-gpu), 64 bad usage.
//
//   ttt_scan_gpu_check --cpu-only            self-checks of the CPU copy on the check shapes
//   ttt_scan_gpu_check [--expect-gpu]        kernels vs the CPU copy (forward, backward; fp32, bf16)
//   ttt_scan_gpu_check --sanitize            small shapes, every kernel and buffer placement, for
//                                            compute-sanitizer (memcheck, racecheck, synccheck, initcheck)
//   ttt_scan_gpu_check --timing              tokens/s and TFLOP/s per shape, against cuBLAS's GEMM peak
// Options: --threads N (CPU copy; default: all cores), --quick (smaller shapes, for the CTests).
//
// Errors are max |a - ref| / max |ref| per tensor; the state is compared through its update
// dW = W_out - W_in (the update is ~0.3 % of |W|: comparing W_out itself would hide a broken update).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "kernels/ttt_scan/algo.h"
#include "kernels/ttt_scan/gpu_check/cases.h"

#ifdef MTT_HAVE_CUDA
#ifdef MTT_GPU_CHECK_FAKE_CUDA
#include "kernels/ttt_scan/gpu_check/fake_cuda.h"  // dry run without a GPU (--fake-gpu build)
#else
#include <cuda_runtime_api.h>
#endif

#include "kernels/ttt_scan/cuda/launch.h"
#ifndef MTT_GPU_CHECK_NO_CUBLAS
#include <cublas_v2.h>
#endif
#endif

namespace mtt::kernels::check {
namespace {

// ---------------------------------------------------------------------------------------------
// Tolerances (relative to the reference's max magnitude). Each bounds a difference with a known
// source, about 4x what the --cpu-only self-checks measure for that source on the CPU (the figures
// in the comments: the largest over the check shapes, kernels/README.md). The self-checks require
// the measured source to stay inside a quarter (a half where noted) of its bound, so a tolerance
// that stopped being justified fails on the CPU before it can hide a kernel bug.
namespace tol {
// fp32 kernels (fp32 FMA GEMMs) vs the fp32 CPU copy: the same operations in the same order per
// element; they differ by FMA contraction, the device's tanhf/sqrtf/division (<= 2 ulp), amplified
// over the NC steps of the scan like any fp32 rounding. Source measured: the fp32 copy against the
// independent fp64 forward (dW 1.4e-5, out 1.0e-6, losses 6.6e-7).
constexpr double kFp32State = 1e-4;  // dW, db
constexpr double kFp32Out = 1e-5;    // XQW
constexpr double kFp32Loss = 1e-5;   // per-token inner losses
// bf16 tensor-core kernels vs the CPU image of the tensor-core path (GEMM operands rounded to bf16
// where the kernel runs WMMA, products summed in fp32): the summation inside the MMA differs, so
// some intermediates land on the other side of a bf16 rounding boundary and move by one bf16 ulp
// (2^-8 relative) when they are next used as operands. Source measured: the image with every GEMM
// summed in reverse order (dW 1.4e-3, losses 2.0e-4; XQW 3.0e-3, which is one bf16 output ulp: the
// output bound is checked at half).
constexpr double kTcState = 1e-2;
constexpr double kTcOut = 1.2e-2;
constexpr double kTcLoss = 2e-3;
// bf16 tensor-core kernels vs the plain fp32 CPU copy: the bf16 rounding of every GEMM operand
// through the scan (a sanity bound; a broken update GEMM moves dW by O(1)). Source measured: the
// image against the fp32 copy (dW 3.3e-3, XQW 6.0e-3, losses 9.7e-4); checked at half.
constexpr double kTcVsFp32State = 2e-2;
constexpr double kTcVsFp32Out = 2e-2;
constexpr double kTcVsFp32Loss = 1e-2;
// Backward (TTT-Linear), every gradient relative to its max magnitude. Sources measured: the fp32
// copy and the tensor-core image each against itself in reverse summation order (fp32: see the
// self-check line; image: 9.7e-4), the image against the fp32 copy (4.6e-3, checked at half).
constexpr double kFp32Grad = 1e-4;
constexpr double kTcGrad = 8e-3;
constexpr double kTcVsFp32Grad = 2e-2;
// The fp32 CPU backward against central differences of the fp64 forward (h = 1e-5): the backward's
// fp32 rounding (measured 3.6e-7 on the tiny shapes) plus the differences' O(h^2) truncation and
// O(1e-16/h) cancellation (~1e-10).
constexpr double kFiniteDiff = 1e-5;
}  // namespace tol

struct Bounds {
  double state, out, loss;
};
constexpr Bounds kFp32{tol::kFp32State, tol::kFp32Out, tol::kFp32Loss};
constexpr Bounds kTc{tol::kTcState, tol::kTcOut, tol::kTcLoss};
constexpr Bounds kTcVsFp32{tol::kTcVsFp32State, tol::kTcVsFp32Out, tol::kTcVsFp32Loss};

bool within(const FwdErr& e, const Bounds& b, double scale = 1.0) {
  return e.dW <= b.state * scale && e.db <= b.state * scale && e.out <= b.out * scale && e.lb <= b.loss * scale &&
         e.la <= b.loss * scale;
}
std::string detail(const FwdErr& e, const Bounds& b, double scale = 1.0) {
  return e.str() + fmt("  (tol %.1e/%.1e/%.1e)", b.state * scale, b.out * scale, b.loss * scale);
}

const char* depth_name(int depth) { return depth == 2 ? "ttt-mlp" : "ttt-linear"; }
const char* io_name(IoType io) { return io == IoType::bf16 ? "bf16/tc" : "fp32"; }
std::string case_name(const char* what, const Shape& s, int depth, IoType io) {
  return fmt("%s %s %s %s", what, s.name.c_str(), depth_name(depth), io_name(io));
}

// Check shapes (short sequences): Moshi-7B's TTT heads (H 32, d 128, b 32; causal eta) and the DiT
// of CogVideoX-5B (d 64, b 64; identical eta rows), B 2 there to exercise the batch index.
std::vector<Shape> check_shapes(bool quick) {
  if (quick) return {{"moshi", 1, 4, 2, 32, 128, true}, {"dit", 2, 2, 2, 64, 64, false}};
  return {{"moshi", 1, 32, 3, 32, 128, true}, {"dit", 2, 4, 3, 64, 64, false}};
}
int default_threads() { return std::max(1u, std::thread::hardware_concurrency()); }

// =============================================================================================
// CPU half: the copy of the kernel algorithm against an independent fp64 forward, central
// differences for its backward, and the invariances the GPU comparisons rely on.
void cpu_self_checks(Verdicts& V, bool quick, int threads) {
  CpuRefOptions par;
  par.threads = threads;
  for (const Shape& s : check_shapes(quick))
    for (int depth : {1, 2}) {
      const uint64_t seed = 1000 + 10 * depth + s.d;
      Inputs in = make_inputs(s, depth, IoType::f32, seed);
      const FwdOut ref = run_cpu_forward(in, par);
      const FwdErr e64 = fwd_err64(in, ref, naive::forward(to_naive(in)));
      V.check(within(e64, kFp32, 0.25), case_name("cpu fp32-copy vs fp64", s, depth, IoType::f32), detail(e64, kFp32, 0.25));

      // Placement and threading: the same numbers whatever the shared-memory budget (every buffer
      // "on chip", or none) and the thread count.
      CpuRefOptions one;
      one.threads = 1;
      one.smem_budget_floats = 1ll << 40;
      const FwdOut alt = run_cpu_forward(in, one);
      bool same = bit_equal(alt.XQW, ref.XQW) && bit_equal(alt.loss_before, ref.loss_before) &&
                  bit_equal(alt.loss_after, ref.loss_after);
      for (int k = 0; k < depth; ++k) same = same && bit_equal(alt.W[k], ref.W[k]) && bit_equal(alt.bias[k], ref.bias[k]);
      V.check(same, case_name("cpu placement/threads invariance", s, depth, IoType::f32),
              "budget 0 + " + std::to_string(threads) + " threads vs all-shared + 1 thread: bitwise");

      Inputs h = make_inputs(s, depth, IoType::bf16, seed);
      const FwdOut plain = run_cpu_forward(h, par);
      const FwdErr e16 = fwd_err64(h, plain, naive::forward(to_naive(h)));
      // bf16 I/O on the fp32 path: the state and losses as accurate as with fp32 I/O; XQW rounded to
      // bf16 once (<= 2^-9 of the max) on top.
      const Bounds b16{kFp32.state / 4, 2.0 / 512, kFp32.loss / 4};
      V.check(within(e16, b16), case_name("cpu bf16-io vs fp64", s, depth, IoType::bf16), detail(e16, b16));
      CpuRefOptions tc = par;
      tc.emulate_tensor_cores = true;
      const FwdOut emul = run_cpu_forward(h, tc);
      tc.reverse_k = true;
      const FwdOut emul_rev = run_cpu_forward(h, tc);
      const FwdErr order = fwd_err(h, emul_rev, emul);
      // The output's bf16 rounding is outside the order sensitivity; the bound covers it separately.
      V.check(order.dW <= kTc.state / 4 && order.db <= kTc.state / 4 && order.lb <= kTc.loss / 4 &&
                  order.la <= kTc.loss / 4 && order.out <= kTc.out / 2,
              case_name("cpu tc-image order sensitivity", s, depth, IoType::bf16),
              order.str() + fmt("  (tol %.1e/%.1e/%.1e)", kTc.state / 4, kTc.out / 2, kTc.loss / 4));
      const FwdErr tce = fwd_err(h, emul, plain);
      V.check(within(tce, kTcVsFp32, 0.5), case_name("cpu tc-image vs fp32 copy", s, depth, IoType::bf16),
              detail(tce, kTcVsFp32, 0.5));
    }

  // Backward (TTT-Linear) on the check shapes: checkpoint groups, bf16 loads, the tensor-core image.
  for (const Shape& s : check_shapes(quick)) {
    const uint64_t seed = 2000 + s.d;
    Inputs in = make_inputs(s, 1, IoType::f32, seed);
    const Cotangents c = make_cotangents(in, seed + 1);
    const BwdOut g0 = run_cpu_backward(in, c, 0, nullptr, par);
    const FwdOut f2 = run_cpu_forward(in, par, 2, true);
    const BwdOut g2 = run_cpu_backward(in, c, 2, &f2, par);
    CpuRefOptions rev = par;
    rev.reverse_k = true;
    const BwdErr e32 = bwd_err(run_cpu_backward(in, c, 0, nullptr, rev), g0);
    V.check(e32.max() <= tol::kFp32Grad / 4, case_name("cpu bwd fp32 order sensitivity", s, 1, IoType::f32),
            e32.str() + fmt("  (tol %.1e)", tol::kFp32Grad / 4));
    const BwdErr eg = bwd_err(g2, g0);
    V.check(eg.max() <= 1e-5, case_name("cpu bwd group 2 (fwd ckpts) vs 1 group", s, 1, IoType::f32),
            eg.str() + "  (tol 1e-05)");
    Inputs h = make_inputs(s, 1, IoType::bf16, seed);
    Inputs hf = h;  // the same (bf16-representable) numbers through fp32 loads
    hf.io = IoType::f32;
    const BwdOut gh = run_cpu_backward(h, c, 2, nullptr, par), ghf = run_cpu_backward(hf, c, 2, nullptr, par);
    V.check(bit_equal(gh.dXQ, ghf.dXQ) && bit_equal(gh.dXK, ghf.dXK) && bit_equal(gh.dXV, ghf.dXV) &&
                bit_equal(gh.deta, ghf.deta) && bit_equal(gh.dW, ghf.dW) && bit_equal(gh.dlnw, ghf.dlnw),
            case_name("cpu bwd bf16 loads vs fp32 loads", s, 1, IoType::bf16), "bitwise on bf16-representable inputs");
    CpuRefOptions tc = par;
    tc.emulate_tensor_cores = true;
    const BwdOut ge = run_cpu_backward(h, c, 2, nullptr, tc);
    tc.reverse_k = true;
    const BwdOut ger = run_cpu_backward(h, c, 2, nullptr, tc);
    const BwdErr order = bwd_err(ger, ge), tce = bwd_err(ge, gh);
    V.check(order.max() <= tol::kTcGrad / 4, case_name("cpu bwd tc-image order sensitivity", s, 1, IoType::bf16),
            order.str() + fmt("  (tol %.1e)", tol::kTcGrad / 4));
    V.check(tce.max() <= tol::kTcVsFp32Grad / 2, case_name("cpu bwd tc-image vs fp32 copy", s, 1, IoType::bf16),
            tce.str() + fmt("  (tol %.0e)", tol::kTcVsFp32Grad / 2));
  }

  // Central differences of the fp64 forward on tiny shapes, every input, several checkpoint groups.
  const std::vector<Shape> tiny = {{"tiny-causal", 2, 2, 3, 4, 8, true}, {"tiny-dit", 1, 2, 2, 4, 8, false}};
  for (const Shape& s : tiny) {
    Inputs in = make_inputs(s, 1, IoType::f32, 3000 + s.NC);
    const Cotangents c = make_cotangents(in, 3100 + s.NC);
    const BwdOut fd = finite_differences(in, c, 1e-5);
    for (int group : {0, 1, 2}) {
      const FwdOut f = run_cpu_forward(in, par, group, true);
      for (bool ck : {false, true}) {
        const BwdOut g = sum_ln_over_batch(in, run_cpu_backward(in, c, group, ck ? &f : nullptr, par));
        const BwdErr e = bwd_err(g, fd);
        V.check(e.max() <= tol::kFiniteDiff,
                fmt("cpu bwd vs finite diff %s g%d%s", s.name.c_str(), group, ck ? " ckpt" : ""),
                e.str() + fmt("  (tol %.0e)", tol::kFiniteDiff));
      }
    }
  }
}

// =============================================================================================
#ifdef MTT_HAVE_CUDA

// Small shapes for the sanitizers: both GEMM paths (b, d multiples of 16 or not), a TTT-MLP whose
// state spills to the workspace at the device's budget, and a state that fits.
std::vector<Shape> sanitize_shapes() {
  return {{"small", 1, 2, 3, 16, 32, true}, {"odd", 1, 1, 2, 12, 20, false}, {"spill", 1, 1, 2, 16, 128, true}};
}
// Timing shapes: B 1 (inference), 2048 Moshi tokens (NC 64), 4096 DiT tokens.
// (--quick: 2 heads, 2 mini-batches; what the dry run without a GPU times.)
std::vector<Shape> timing_shapes(bool quick) {
  if (quick) return {{"moshi", 1, 2, 2, 32, 128, true}, {"dit", 1, 2, 2, 64, 64, false}};
  return {{"moshi", 1, 32, 64, 32, 128, true}, {"dit", 1, 48, 64, 64, 64, false}};
}

void ck(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorName(e) + " " + cudaGetErrorString(e));
}
void ck(const KernelStatus& s, const char* what) {
  if (!s.ok()) throw std::runtime_error(std::string(what) + ": " + s.message);
}

struct DevBuf {
  void* p = nullptr;
  size_t bytes = 0;
  DevBuf() = default;
  explicit DevBuf(size_t n) : bytes(n) {
    if (n) ck(cudaMalloc(&p, n), "cudaMalloc");
  }
  DevBuf(const DevBuf&) = delete;
  DevBuf& operator=(const DevBuf&) = delete;
  DevBuf(DevBuf&& o) noexcept : p(o.p), bytes(o.bytes) { o.p = nullptr; }
  DevBuf& operator=(DevBuf&& o) noexcept {
    std::swap(p, o.p);
    std::swap(bytes, o.bytes);
    return *this;
  }
  ~DevBuf() {
    if (p) cudaFree(p);
  }
  template <class T>
  T* as() const { return static_cast<T*>(p); }
};

template <class T>
DevBuf upload(const std::vector<T>& v) {
  DevBuf d(v.size() * sizeof(T));
  if (!v.empty()) ck(cudaMemcpy(d.p, v.data(), d.bytes, cudaMemcpyHostToDevice), "upload");
  return d;
}
std::vector<float> download(const DevBuf& d, size_t n) {
  std::vector<float> v(n);
  if (n) ck(cudaMemcpy(v.data(), d.p, n * sizeof(float), cudaMemcpyDeviceToHost), "download");
  return v;
}

// One case on the device: inputs uploaded once, outputs allocated once; runs may repeat.
struct DeviceCase {
  const Inputs& in;
  DevBuf XQ, XK, XV, eta, lnw, lnb, W[2], b[2], Wo[2], bo[2], XQW, lb, la, ck_, ws, bws;
  Ptrs q;

  explicit DeviceCase(const Inputs& i) : in(i) {
    const bool h = in.io == IoType::bf16;
    XQ = h ? upload(in.XQ16) : upload(in.XQ);
    XK = h ? upload(in.XK16) : upload(in.XK);
    XV = h ? upload(in.XV16) : upload(in.XV);
    eta = upload(in.eta);
    lnw = upload(in.lnw);
    lnb = upload(in.lnb);
    q.XQ = XQ.p;
    q.XK = XK.p;
    q.XV = XV.p;
    q.eta = eta.as<float>();
    q.lnw = lnw.as<float>();
    q.lnb = lnb.as<float>();
    for (int k = 0; k < in.depth; ++k) {
      W[k] = upload(in.W[k]);
      b[k] = upload(in.bias[k]);
      Wo[k] = DevBuf(in.W[k].size() * sizeof(float));
      bo[k] = DevBuf(in.bias[k].size() * sizeof(float));
      q.W[k] = W[k].as<float>();
      q.b[k] = b[k].as<float>();
      q.Wo[k] = Wo[k].as<float>();
      q.bo[k] = bo[k].as<float>();
    }
    XQW = DevBuf(in.tokens() * (h ? 2 : 4));
    q.XQW = XQW.p;
    // A pageable cudaMemcpy may return before its DMA lands, and our stream does not wait for the
    // legacy stream.
    ck(cudaDeviceSynchronize(), "uploads");
  }

  // Forward; losses and checkpoints (group g) when asked; smem_cap < 0: the device's budget.
  TTTScanParams forward_params(int group, bool losses, bool checkpoints, long long smem_cap) {
    const size_t nl = in.tokens() / in.s.d;
    if (losses && !lb.p) {
      lb = DevBuf(nl * 4);
      la = DevBuf(nl * 4);
    }
    Ptrs r = q;
    r.lb = losses ? lb.as<float>() : nullptr;
    r.la = losses ? la.as<float>() : nullptr;
    if (checkpoints) {
      const size_t n = checkpoint_floats(in, group) * 4;
      if (ck_.bytes != n) ck_ = DevBuf(n);
      r.ck = ck_.as<float>();
    }
    TTTScanParams p = make_params(in, r, group);
    p.smem_cap_floats = smem_cap;
    const size_t need = ttt_scan_workspace_bytes(p);
    if (ws.bytes < need) ws = DevBuf(need);
    p.workspace = ws.p;
    p.workspace_bytes = ws.bytes;
    return p;
  }

  KernelStatus launch_forward(const TTTScanParams& p, cudaStream_t st) {
    return in.depth == 2 ? ttt_mlp_scan_forward(p, st) : ttt_linear_scan_forward(p, st);
  }

  FwdOut fetch_forward(bool losses, bool checkpoints, int group) {
    FwdOut r;
    for (int k = 0; k < in.depth; ++k) {
      r.W[k] = download(Wo[k], in.W[k].size());
      r.bias[k] = download(bo[k], in.bias[k].size());
    }
    if (in.io == IoType::bf16) {
      std::vector<uint16_t> h(in.tokens());
      ck(cudaMemcpy(h.data(), XQW.p, h.size() * 2, cudaMemcpyDeviceToHost), "download");
      r.XQW.resize(h.size());
      for (size_t i = 0; i < h.size(); ++i) r.XQW[i] = algo::bf16_to_f32(h[i]);
    } else {
      r.XQW = download(XQW, in.tokens());
    }
    if (losses) {
      r.loss_before = download(lb, in.tokens() / in.s.d);
      r.loss_after = download(la, in.tokens() / in.s.d);
    }
    if (checkpoints) r.checkpoints = download(ck_, checkpoint_floats(in, group));
    return r;
  }

  FwdOut forward(int group, bool checkpoints, long long smem_cap, cudaStream_t st) {
    const TTTScanParams p = forward_params(group, true, checkpoints, smem_cap);
    ck(launch_forward(p, st), "forward launch");
    ck(cudaStreamSynchronize(st), "forward");
    return fetch_forward(true, checkpoints, group);
  }

  // Backward (depth 1) with the device checkpoints of the last forward(group, true, ...) when
  // use_ckpt, else recomputed by the kernel.
  struct Grads {
    DevBuf dO, dWo, dbo, dXQ, dXK, dXV, deta, dlnw, dlnb, dW, db;
    TTTScanGradParams g;
  };
  Grads grads(const Cotangents& c) {
    Grads r;
    const size_t n = in.tokens(), BH = size_t(in.s.B) * in.s.H;
    r.dO = upload(c.dXQW);
    r.dWo = upload(c.dW);
    r.dbo = upload(c.db);
    r.dXQ = DevBuf(n * 4);
    r.dXK = DevBuf(n * 4);
    r.dXV = DevBuf(n * 4);
    r.deta = DevBuf(in.eta.size() * 4);
    r.dlnw = DevBuf(BH * in.s.d * 4);
    r.dlnb = DevBuf(BH * in.s.d * 4);
    r.dW = DevBuf(in.W[0].size() * 4);
    r.db = DevBuf(in.bias[0].size() * 4);
    TTTScanGradParams& g = r.g;
    g.dXQW = r.dO.as<float>();
    g.dW_out[0] = r.dWo.as<float>();
    g.db_out[0] = r.dbo.as<float>();
    g.dXQ = r.dXQ.as<float>();
    g.dXK = r.dXK.as<float>();
    g.dXV = r.dXV.as<float>();
    g.deta = r.deta.as<float>();
    g.dln_weight = r.dlnw.as<float>();
    g.dln_bias = r.dlnb.as<float>();
    g.dW_in[0] = r.dW.as<float>();
    g.db_in[0] = r.db.as<float>();
    ck(cudaDeviceSynchronize(), "uploads");
    return r;
  }
  TTTScanParams backward_params(int group, bool use_ckpt, long long smem_cap) {
    Ptrs r = q;
    r.ck = use_ckpt ? ck_.as<float>() : nullptr;
    TTTScanParams p = make_params(in, r, group);
    p.smem_cap_floats = smem_cap;
    const size_t need = ttt_scan_bwd_workspace_bytes(p);
    if (bws.bytes < need) bws = DevBuf(need);
    p.workspace = bws.p;
    p.workspace_bytes = bws.bytes;
    return p;
  }
  BwdOut backward(const Cotangents& c, int group, bool use_ckpt, long long smem_cap, cudaStream_t st) {
    Grads r = grads(c);
    ck(ttt_linear_scan_backward(backward_params(group, use_ckpt, smem_cap), r.g, st), "backward launch");
    ck(cudaStreamSynchronize(st), "backward");
    BwdOut o;
    const size_t n = in.tokens(), BH = size_t(in.s.B) * in.s.H;
    o.dXQ = download(r.dXQ, n);
    o.dXK = download(r.dXK, n);
    o.dXV = download(r.dXV, n);
    o.deta = download(r.deta, in.eta.size());
    o.dlnw = download(r.dlnw, BH * in.s.d);
    o.dlnb = download(r.dlnb, BH * in.s.d);
    o.dW = download(r.dW, in.W[0].size());
    o.db = download(r.db, in.bias[0].size());
    return o;
  }
};

bool fwd_bit_equal(const FwdOut& a, const FwdOut& b, int depth) {
  bool same = bit_equal(a.XQW, b.XQW) && bit_equal(a.loss_before, b.loss_before) && bit_equal(a.loss_after, b.loss_after);
  for (int k = 0; k < depth; ++k) same = same && bit_equal(a.W[k], b.W[k]) && bit_equal(a.bias[k], b.bias[k]);
  return same;
}
bool bwd_bit_equal(const BwdOut& a, const BwdOut& b) {
  return bit_equal(a.dXQ, b.dXQ) && bit_equal(a.dXK, b.dXK) && bit_equal(a.dXV, b.dXV) && bit_equal(a.deta, b.deta) &&
         bit_equal(a.dlnw, b.dlnw) && bit_equal(a.dlnb, b.dlnb) && bit_equal(a.dW, b.dW) && bit_equal(a.db, b.db);
}

// Kernels against the CPU copy. `sanitize`: small shapes, each also with every buffer in the
// global workspace (shared-memory budget 0), fewer repeats.
void gpu_checks(Verdicts& V, const std::vector<Shape>& shapes, bool sanitize, int threads, cudaStream_t st) {
  CpuRefOptions par;
  par.threads = threads;
  for (const Shape& s : shapes)
    for (int depth : {1, 2})
      for (IoType io : {IoType::f32, IoType::bf16}) {
        const std::string name = case_name("fwd", s, depth, io);
        try {
          const Inputs in = make_inputs(s, depth, io, 4000 + 10 * depth + s.d + (io == IoType::bf16));
          DeviceCase dc(in);
          const int group = 2;
          const FwdOut gpu = dc.forward(group, true, -1, st);
          const FwdOut plain = run_cpu_forward(in, par, group, true);
          if (io == IoType::f32) {
            const FwdErr e = fwd_err(in, gpu, plain);
            V.check(within(e, kFp32), name + " vs cpu", detail(e, kFp32));
          } else {
            CpuRefOptions tc = par;
            tc.emulate_tensor_cores = true;
            const FwdErr e = fwd_err(in, gpu, run_cpu_forward(in, tc, group, true));
            V.check(within(e, kTc), name + " vs cpu tc-image", detail(e, kTc));
            const FwdErr ep = fwd_err(in, gpu, plain);
            V.check(within(ep, kTcVsFp32), name + " vs cpu fp32", detail(ep, kTcVsFp32));
          }
          const FwdOut glob = dc.forward(group, true, 0, st);
          V.check(fwd_bit_equal(glob, gpu, depth) && bit_equal(glob.checkpoints, gpu.checkpoints),
                  name + " all-global plan", "shared-memory budget 0 vs the device's: bitwise");
          if (!sanitize) {
            const FwdOut again = dc.forward(group, true, -1, st);
            V.check(fwd_bit_equal(again, gpu, depth), name + " repeat", "second run bitwise equal");
          }
        } catch (const std::exception& e) {
          V.line("FAIL", name, e.what());
        }
      }
  for (const Shape& s : shapes)
    for (IoType io : {IoType::f32, IoType::bf16}) {
      const std::string name = case_name("bwd", s, 1, io);
      try {
        const Inputs in = make_inputs(s, 1, io, 5000 + s.d + (io == IoType::bf16));
        const Cotangents c = make_cotangents(in, 5100 + s.d);
        DeviceCase dc(in);
        const int group = 2;
        dc.forward(group, true, -1, st);  // device checkpoints for the backward
        const BwdOut gpu = dc.backward(c, group, true, -1, st);
        CpuRefOptions o = par;
        o.emulate_tensor_cores = io == IoType::bf16;
        const FwdOut f = run_cpu_forward(in, o, group, true);
        const BwdOut ref = run_cpu_backward(in, c, group, &f, o);
        const BwdErr e = bwd_err(gpu, ref);
        const double t = io == IoType::f32 ? tol::kFp32Grad : tol::kTcGrad;
        V.check(e.max() <= t, name + (io == IoType::f32 ? " vs cpu" : " vs cpu tc-image"), e.str() + fmt("  (tol %.0e)", t));
        if (io == IoType::bf16) {
          const BwdErr ep = bwd_err(gpu, run_cpu_backward(in, c, group, nullptr, par));
          V.check(ep.max() <= tol::kTcVsFp32Grad, name + " vs cpu fp32", ep.str() + fmt("  (tol %.0e)", tol::kTcVsFp32Grad));
        }
        // Checkpoints recomputed by the kernel instead of read: the same states by the same code,
        // so the same gradients up to rounding of the recompute order (exact here in practice).
        const BwdOut rc = dc.backward(c, group, false, -1, st);
        const BwdErr er = bwd_err(rc, gpu);
        V.check(er.max() <= 1e-5, name + " recomputed ckpts", er.str() + "  (tol 1e-05)");
        const BwdOut glob = dc.backward(c, group, true, 0, st);
        V.check(bwd_bit_equal(glob, gpu), name + " all-global plan", "shared-memory budget 0 vs the device's: bitwise");
        if (!sanitize) {
          const BwdOut again = dc.backward(c, group, true, -1, st);
          V.check(bwd_bit_equal(again, gpu), name + " repeat", "second run bitwise equal");
        }
      } catch (const std::exception& e) {
        V.line("FAIL", name, e.what());
      }
    }
}

// cuBLAS GEMM peak on this device (n^3 products, TFLOP/s); 0 when built without cuBLAS.
double gemm_peak_tflops(bool bf16, cudaStream_t st) {
#ifdef MTT_GPU_CHECK_NO_CUBLAS
  (void)bf16;
  (void)st;
  return 0;
#else
  const int n = 8192;
  const size_t es = bf16 ? 2 : 4;
  DevBuf A(size_t(n) * n * es), B(size_t(n) * n * es), C(size_t(n) * n * 4);
  // Random-ish operands (zeros run faster on some parts): a byte pattern that gives finite values.
  ck(cudaMemset(A.p, 0x3c, A.bytes), "memset");
  ck(cudaMemset(B.p, 0x3b, B.bytes), "memset");
  ck(cudaDeviceSynchronize(), "memset");
  cublasHandle_t h;
  if (cublasCreate(&h) != CUBLAS_STATUS_SUCCESS) throw std::runtime_error("cublasCreate failed");
  cublasSetStream(h, st);
  const float alpha = 1.f, beta = 0.f;
  auto gemm = [&] {
    const cudaDataType t = bf16 ? CUDA_R_16BF : CUDA_R_32F;
    // fp32: CUBLAS_COMPUTE_32F without TF32 (the fp32 kernels use plain fp32 FMA).
    return cublasGemmEx(h, CUBLAS_OP_N, CUBLAS_OP_N, n, n, n, &alpha, A.p, t, n, B.p, t, n, &beta, C.p, CUDA_R_32F, n,
                        CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
  };
  for (int i = 0; i < 3; ++i)
    if (gemm() != CUBLAS_STATUS_SUCCESS) throw std::runtime_error("cublasGemmEx failed");
  cudaEvent_t e0, e1;
  cudaEventCreate(&e0);
  cudaEventCreate(&e1);
  const int reps = bf16 ? 20 : 5;
  cudaEventRecord(e0, st);
  for (int i = 0; i < reps; ++i) gemm();
  cudaEventRecord(e1, st);
  ck(cudaEventSynchronize(e1), "gemm");
  float ms = 0;
  cudaEventElapsedTime(&ms, e0, e1);
  cudaEventDestroy(e0);
  cudaEventDestroy(e1);
  cublasDestroy(h);
  return 2.0 * n * double(n) * n * reps / (ms * 1e-3) / 1e12;
#endif
}

// Median time of `reps` launches after one warm-up (ms).
template <class Launch>
double time_ms(Launch&& launch, cudaStream_t st, int reps) {
  cudaEvent_t e0, e1;
  cudaEventCreate(&e0);
  cudaEventCreate(&e1);
  ck(launch(), "warm-up launch");
  ck(cudaStreamSynchronize(st), "warm-up");
  std::vector<float> t;
  for (int i = 0; i < reps; ++i) {
    cudaEventRecord(e0, st);
    ck(launch(), "launch");
    cudaEventRecord(e1, st);
    ck(cudaEventSynchronize(e1), "timed run");
    float ms = 0;
    cudaEventElapsedTime(&ms, e0, e1);
    t.push_back(ms);
  }
  cudaEventDestroy(e0);
  cudaEventDestroy(e1);
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

// GEMM FLOPs of the algorithm for one (batch, head) over the whole sequence, counted by the CPU copy
// (count only: no arithmetic), times B x H.
uint64_t algorithm_flops(const Inputs& in, bool backward, int group) {
  Inputs one = in;
  one.s.B = 1;
  one.s.H = 1;
  const size_t n = size_t(one.s.NC) * one.s.b * one.s.d;
  one.XQ.resize(n);
  one.XK.resize(n);
  one.XV.resize(n);
  one.XQ16.resize(one.io == IoType::bf16 ? n : 0);
  one.XK16.resize(one.XQ16.size());
  one.XV16.resize(one.XQ16.size());
  one.eta.resize(size_t(one.s.NC) * one.s.b * one.s.b);
  one.lnw.resize(one.s.d);
  one.lnb.resize(one.s.d);
  for (int k = 0; k < one.depth; ++k) {
    one.W[k].resize(one.state_w(k));
    one.bias[k].resize(one.state_b(k));
  }
  uint64_t flops = 0;
  CpuRefOptions o;
  o.count_only = true;
  o.gemm_flops = &flops;
  if (!backward) {
    // No losses in the timed forward: count without them.
    FwdOut r;
    Ptrs q;
    q.XQ = one.io == IoType::bf16 ? static_cast<const void*>(one.XQ16.data()) : one.XQ.data();
    q.XK = one.io == IoType::bf16 ? static_cast<const void*>(one.XK16.data()) : one.XK.data();
    q.XV = one.io == IoType::bf16 ? static_cast<const void*>(one.XV16.data()) : one.XV.data();
    q.eta = one.eta.data();
    q.lnw = one.lnw.data();
    q.lnb = one.lnb.data();
    std::vector<float> out(n), wo[2], bo[2];
    for (int k = 0; k < one.depth; ++k) {
      wo[k].resize(one.W[k].size());
      bo[k].resize(one.bias[k].size());
      q.W[k] = one.W[k].data();
      q.b[k] = one.bias[k].data();
      q.Wo[k] = wo[k].data();
      q.bo[k] = bo[k].data();
    }
    q.XQW = out.data();
    ttt_scan_forward_cpu(make_params(one, q, 0), o);
  } else {
    const FwdOut f = run_cpu_forward(one, CpuRefOptions{1, false, false, 0, nullptr, true}, group, true);
    run_cpu_backward(one, make_cotangents(one, 1), group, &f, o);
  }
  return flops * uint64_t(in.s.B) * in.s.H;
}

void gpu_timing(Verdicts& V, cudaStream_t st, bool quick) {
  double peak16 = 0, peak32 = 0;
  try {
    peak16 = gemm_peak_tflops(true, st);
    peak32 = gemm_peak_tflops(false, st);
    if (peak16 > 0)
      std::printf("PEAK  cuBLAS 8192^3 GEMM: bf16 %.0f TFLOP/s, fp32 %.1f TFLOP/s (measured now, this device)\n", peak16,
                  peak32);
    else
      std::printf("PEAK  not measured (built without cuBLAS)\n");
  } catch (const std::exception& e) {
    V.line("FAIL", "gemm peak", e.what());
  }
  for (const Shape& s : timing_shapes(quick))
    for (int depth : {1, 2})
      for (IoType io : {IoType::f32, IoType::bf16})
        for (bool bwd : {false, true}) {
          if (bwd && depth == 2) continue;  // no TTT-MLP backward kernel yet
          const std::string name = fmt("%s %s %s %s", bwd ? "bwd" : "fwd", s.name.c_str(), depth_name(depth), io_name(io));
          try {
            const Inputs in = make_inputs(s, depth, io, 6000 + s.d);
            DeviceCase dc(in);
            const int group = 8;  // backward: the forward's checkpoints every 8 mini-batches
            double ms = 0;
            if (!bwd) {
              const TTTScanParams p = dc.forward_params(0, false, false, -1);
              ms = time_ms([&] { return dc.launch_forward(p, st); }, st, 5);
            } else {
              dc.forward(group, true, -1, st);
              auto g = dc.grads(make_cotangents(in, 7));
              const TTTScanParams p = dc.backward_params(group, true, -1);
              ms = time_ms([&] { return ttt_linear_scan_backward(p, g.g, st); }, st, 5);
            }
            const double flops = double(algorithm_flops(in, bwd, group));
            const double tf = flops / (ms * 1e-3) / 1e12, peak = io == IoType::bf16 ? peak16 : peak32;
            const size_t tokens = size_t(s.B) * s.NC * s.b;
            std::printf("TIME  %-32s B %d H %d L %d: %9.3f ms  %10.0f tokens/s  %7.2f TFLOP/s", name.c_str(), s.B, s.H,
                        s.NC * s.b, ms, tokens / (ms * 1e-3), tf);
            if (peak > 0) std::printf("  %5.1f %% of the %s GEMM peak", 100 * tf / peak, io == IoType::bf16 ? "bf16" : "fp32");
            std::printf("%s\n", bwd ? "  (group 8, forward checkpoints)" : "");
            std::fflush(stdout);
          } catch (const std::exception& e) {
            V.line("FAIL", "time " + name, e.what());
          }
        }
}

// Device present and usable? Returns false (after the verdict) when no GPU can run the kernels.
bool gpu_ready(Verdicts& V, bool expect_gpu) {
  int n = 0;
  const cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess || n == 0) {
    const std::string why = e != cudaSuccess ? std::string(cudaGetErrorName(e)) + " " + cudaGetErrorString(e) : "0 devices";
    if (expect_gpu)
      V.line("FAIL", "cuda runtime sees the GPU", "nvidia-smi lists a GPU but the CUDA runtime reports: " + why);
    else
      V.line("SKIP", "cuda runtime sees a GPU", "no GPU (" + why + ")");
    return false;
  }
  cudaDeviceProp prop{};
  ck(cudaGetDeviceProperties(&prop, 0), "cudaGetDeviceProperties");
  int drv = 0, rt = 0, optin = 0;
  cudaDriverGetVersion(&drv);
  cudaRuntimeGetVersion(&rt);
  cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, 0);
  V.line("PASS", "cuda runtime sees the GPU",
         fmt("%s, sm_%d%d, %d SMs, %d KiB shared/block opt-in, driver %d, runtime %d", prop.name, prop.major, prop.minor,
             prop.multiProcessorCount, optin / 1024, drv, rt));
#ifdef MTT_CUDA_ARCH
  if (prop.major * 10 + prop.minor < MTT_CUDA_ARCH) {
    V.line("FAIL", "device matches the build", fmt("built for sm_%d, device is sm_%d%d", MTT_CUDA_ARCH, prop.major, prop.minor));
    return false;
  }
#endif
  return true;
}

#endif  // MTT_HAVE_CUDA

int usage() {
  std::fprintf(stderr,
               "usage: ttt_scan_gpu_check [--cpu-only | --sanitize | --timing] [--expect-gpu] [--threads N] [--quick]\n");
  return 64;
}

}  // namespace
}  // namespace mtt::kernels::check

int main(int argc, char** argv) {
  using namespace mtt::kernels::check;
  bool cpu_only = false, sanitize = false, timing = false, expect_gpu = false, quick = false;
  int threads = default_threads();
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--cpu-only") cpu_only = true;
    else if (a == "--sanitize") sanitize = true;
    else if (a == "--timing") timing = true;
    else if (a == "--expect-gpu") expect_gpu = true;
    else if (a == "--quick") quick = true;
    else if (a == "--threads" && i + 1 < argc) threads = std::max(1, std::atoi(argv[++i]));
    else return usage();
  }
  if (cpu_only + sanitize + timing > 1) return usage();
  Verdicts V;
  const auto t0 = std::chrono::steady_clock::now();
  if (cpu_only) {
    cpu_self_checks(V, quick, threads);
  } else {
#ifdef MTT_HAVE_CUDA
    try {
      if (!gpu_ready(V, expect_gpu)) return V.fail ? 1 : 77;
      cudaStream_t st;
      // A stream of our own (non-blocking): the launchers must honour the stream they are given.
      ck(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking), "cudaStreamCreate");
      if (timing)
        gpu_timing(V, st, quick);
      else
        gpu_checks(V, sanitize ? sanitize_shapes() : check_shapes(quick), sanitize, threads, st);
      cudaStreamDestroy(st);
    } catch (const std::exception& e) {
      V.line("FAIL", "gpu check", e.what());
    }
#else
    (void)expect_gpu;
    V.line(expect_gpu ? "FAIL" : "SKIP", "cuda runtime sees a GPU", "built without CUDA (host-only build: use --cpu-only)");
    if (!expect_gpu) return 77;
#endif
  }
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("SUMMARY  %d passed, %d failed, %d skipped (%.1f s)\n", V.pass, V.fail, V.skip, s);
  return V.fail ? 1 : 0;
}
