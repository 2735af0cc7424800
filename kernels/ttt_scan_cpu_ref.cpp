// CPU implementation of the TTT scan launcher API (float32 loops, one (batch, head) at a time).
#include "kernels/ttt_scan_cpu_ref.h"

#include <vector>

#include "kernels/ttt_scan_algo.h"

namespace mtt::kernels {

namespace {

// Serial stand-in for a CUDA block: one "thread", no barriers, a plain triple-loop GEMM.
struct CpuExec {
  int tid = 0, nt = 1;
  void sync() {}
  // C[M,N] = (acc ? C : 0) + alpha * op(A)[M,K] op(B)[K,N];
  // op(A)(i,k) = tA ? A[k*lda+i] : A[i*lda+k], op(B)(k,j) = tB ? B[j*ldb+k] : B[k*ldb+j].
  void mm(float* C, int ldc, const float* A, int lda, bool tA, const float* B, int ldb, bool tB, int M, int N, int K,
          float alpha, bool acc) {
    for (int i = 0; i < M; ++i)
      for (int j = 0; j < N; ++j) {
        float s = 0.f;
        for (int k = 0; k < K; ++k)
          s += (tA ? A[size_t(k) * lda + i] : A[size_t(i) * lda + k]) * (tB ? B[size_t(j) * ldb + k] : B[size_t(k) * ldb + j]);
        float& c = C[size_t(i) * ldc + j];
        c = acc ? c + alpha * s : alpha * s;
      }
  }
};

}  // namespace

KernelStatus ttt_scan_forward_cpu(const TTTScanParams& p) {
  if (const char* why = ttt_scan_unsupported(p)) return {1, why};
  if (p.io != IoType::f32 && p.io != IoType::bf16) return {1, "unknown io type"};
  algo::Ctx c{&p, algo::fwd_plan(p, 0), nullptr, nullptr, 0, 0};
  std::vector<float> ws(c.pl.global_floats);
  c.gmem = ws.data();
  CpuExec x;
  for (int bb = 0; bb < p.B; ++bb)
    for (int hh = 0; hh < p.H; ++hh) {
      c.bb = bb;
      c.hh = hh;
      algo::forward_scan(x, c);
    }
  return {};
}

KernelStatus ttt_linear_scan_backward_cpu(const TTTScanParams& p, const TTTScanGradParams& g) {
  if (const char* why = ttt_scan_unsupported(p)) return {1, why};
  if (p.depth != 1) return {1, "backward: only TTT-Linear (depth 1) is implemented"};
  if (!g.dXQW || !g.dXQ || !g.dXK || !g.dXV || !g.deta || !g.dln_weight || !g.dln_bias || !g.dW_in[0] || !g.db_in[0])
    return {1, "backward: missing gradient pointer"};
  algo::Ctx c{&p, algo::bwd_plan(p, 0), nullptr, nullptr, 0, 0};
  std::vector<float> ws(c.pl.global_floats);
  c.gmem = ws.data();
  CpuExec x;
  for (int bb = 0; bb < p.B; ++bb)
    for (int hh = 0; hh < p.H; ++hh) {
      c.bb = bb;
      c.hh = hh;
      algo::linear_backward_scan(x, c, g);
    }
  return {};
}

}  // namespace mtt::kernels
