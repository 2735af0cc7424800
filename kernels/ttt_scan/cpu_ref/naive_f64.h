#pragma once
// An independent fp64 forward of the TTT scan, written per token from the equations (docs: spec
// docs/ttt.md §2.1-2.2) rather than from ../algo.h: the yardstick for the float32 copy of the kernel
// algorithm, and through central differences for its backward. Test code; plain loops, no GEMM
// executor, no buffer plan. Same row-major layouts as TTTScanParams.
#include <vector>

namespace mtt::kernels::naive {

struct Problem {
  int B = 0, H = 0, NC = 0, b = 0, d = 0, depth = 1, hidden = 0;
  double eps = 1e-6;
  std::vector<double> XQ, XK, XV;  // [B,H,NC,b,d]
  std::vector<double> eta;         // [B,H,NC,b,b], the full matrix (causal: lower triangular)
  std::vector<double> ln_w, ln_b;  // [H,d]
  std::vector<double> W[2], bias[2];  // [B,H,m_in,m_out], [B,H,m_out]
};

struct Result {
  std::vector<double> XQW;                // [B,H,NC,b,d]
  std::vector<double> W[2], bias[2];      // final state
  std::vector<double> loss_before, loss_after;  // [B,H,NC,b]
};

Result forward(const Problem& p);

}  // namespace mtt::kernels::naive
