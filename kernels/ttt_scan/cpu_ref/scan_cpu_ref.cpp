// CPU copy of the TTT scan launchers (float32 loops; one (batch, head) at a time per thread).
#include "kernels/ttt_scan/cpu_ref/scan_cpu_ref.h"

#include <algorithm>
#include <atomic>
#include <thread>
#include <vector>

#include "kernels/ttt_scan/algo.h"

namespace mtt::kernels {

namespace {

// Serial stand-in for a CUDA block: one "thread", no barriers, GEMMs in float loops.
struct CpuExec {
  int tid = 0, nt = 1;
  bool tc = false, rev = false, count_only = false;
  uint64_t flops = 0;
  std::vector<float> bt, arow, acc;  // scratch: op(B) as K x N, one row of op(A), one row of sums

  void sync() {}

  // C[M,N] = (acc ? C : 0) + alpha * op(A)[M,K] op(B)[K,N];
  // op(A)(i,k) = tA ? A[k*lda+i] : A[i*lda+k], op(B)(k,j) = tB ? B[j*ldb+k] : B[k*ldb+j].
  // Each C(i,j) is one float sum over k in order (k = 0..K-1, or down with rev), whatever the loop
  // nest: the sums of a row run side by side so the compiler can vectorise over j.
  void mm(float* C, int ldc, const float* A, int lda, bool tA, const float* B, int ldb, bool tB, int M, int N, int K,
          float alpha, bool accumulate) {
    flops += 2ull * uint64_t(M) * uint64_t(N) * uint64_t(K);
    if (count_only) return;
    // The CUDA executor's rule (cuda/exec.cuh GpuExec::mm): WMMA on bf16-rounded operands only
    // when the tile sizes divide.
    const bool round = tc && M % 16 == 0 && N % 16 == 0 && K % 16 == 0;
    bt.resize(size_t(K) * N);
    arow.resize(K);
    acc.resize(N);
    for (int k = 0; k < K; ++k)
      for (int j = 0; j < N; ++j) {
        const float v = tB ? B[size_t(j) * ldb + k] : B[size_t(k) * ldb + j];
        bt[size_t(k) * N + j] = round ? algo::bf16_to_f32(algo::f32_to_bf16(v)) : v;
      }
    for (int i = 0; i < M; ++i) {
      for (int k = 0; k < K; ++k) {
        const float v = tA ? A[size_t(k) * lda + i] : A[size_t(i) * lda + k];
        arow[k] = round ? algo::bf16_to_f32(algo::f32_to_bf16(v)) : v;
      }
      float* __restrict s = acc.data();
      std::fill(s, s + N, 0.f);
      for (int kk = 0; kk < K; ++kk) {
        const int k = rev ? K - 1 - kk : kk;
        const float a = arow[k];
        const float* __restrict b = bt.data() + size_t(k) * N;
        for (int j = 0; j < N; ++j) s[j] += a * b[j];
      }
      float* c = C + size_t(i) * ldc;
      for (int j = 0; j < N; ++j) c[j] = accumulate ? c[j] + alpha * s[j] : alpha * s[j];
    }
  }
};

// Runs body(exec, bb, hh) for every (batch, head) on o.threads threads, each with its own exec
// and buffers; heads are handed out one at a time.
template <class Body>
void for_each_head(const TTTScanParams& p, const CpuRefOptions& o, const algo::Plan& pl, Body&& body) {
  const int BH = p.B * p.H;
  std::atomic<int> next{0};
  std::atomic<uint64_t> flops{0};
  auto worker = [&] {
    CpuExec x;
    x.tc = o.emulate_tensor_cores && p.tensor_cores;
    x.rev = o.reverse_k;
    x.count_only = o.count_only;
    std::vector<float> smem(pl.smem_floats), gmem(pl.global_floats);
    algo::Ctx c{&p, pl, smem.data(), gmem.data(), 0, 0};
    for (int i = next++; i < BH; i = next++) {
      c.bb = i / p.H;
      c.hh = i % p.H;
      body(x, c);
    }
    flops += x.flops;
  };
  const int n = std::max(1, std::min(o.threads, BH));
  std::vector<std::thread> pool;
  for (int t = 1; t < n; ++t) pool.emplace_back(worker);
  worker();
  for (auto& t : pool) t.join();
  if (o.gemm_flops) *o.gemm_flops += flops.load();
}

size_t budget(const CpuRefOptions& o) { return o.smem_budget_floats > 0 ? size_t(o.smem_budget_floats) : 0; }

}  // namespace

KernelStatus ttt_scan_forward_cpu(const TTTScanParams& p, const CpuRefOptions& o) {
  if (const char* why = ttt_scan_unsupported(p)) return {1, why};
  if (p.io != IoType::f32 && p.io != IoType::bf16) return {1, "unknown io type"};
  for_each_head(p, o, algo::fwd_plan(p, budget(o)), [](CpuExec& x, const algo::Ctx& c) { algo::forward_scan(x, c); });
  return {};
}

KernelStatus ttt_linear_scan_backward_cpu(const TTTScanParams& p, const TTTScanGradParams& g, const CpuRefOptions& o) {
  if (const char* why = ttt_scan_unsupported(p)) return {1, why};
  if (p.depth != 1) return {1, "backward: only TTT-Linear (depth 1) is implemented"};
  if (!g.dXQW || !g.dXQ || !g.dXK || !g.dXV || !g.deta || !g.dln_weight || !g.dln_bias || !g.dW_in[0] || !g.db_in[0])
    return {1, "backward: missing gradient pointer"};
  for_each_head(p, o, algo::bwd_plan(p, budget(o)),
                [&g](CpuExec& x, const algo::Ctx& c) { algo::linear_backward_scan(x, c, g); });
  return {};
}

}  // namespace mtt::kernels
