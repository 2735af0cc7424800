#pragma once
// The CUDA launchers' API run on the CPU (host pointers, float32 loops): the same algorithm
// (../algo.h), buffer plan and layouts as the kernels. Test code, not part of the product library:
// the kernel tests (../test/) tie it to the golden files and the LibTorch path, and the standalone
// GPU check (../gpu_check/) compares the kernels with it. Framework-free.
#include <cstdint>

#include "kernels/ttt_scan/params.h"

namespace mtt::kernels {

struct CpuRefOptions {
  int threads = 1;  // (batch, head) pairs are shared out over this many threads (results do not change)
  // Round the GEMM operands to bf16 exactly where the CUDA executor runs WMMA (p.tensor_cores and
  // M, N, K multiples of 16), products summed in fp32: the CPU image of the tensor-core path.
  bool emulate_tensor_cores = false;
  // Sum every GEMM's products from k = K-1 down to 0: a different summation order, to measure how
  // much a result depends on it (the kernels' order differs from ours).
  bool reverse_k = false;
  // Shared-memory budget of the buffer plan in floats (0: every buffer in the workspace). The CPU
  // has no shared memory; the budget only moves buffers between two host arrays, so results must
  // not depend on it (a check of the plan's offsets).
  long long smem_budget_floats = 0;
  // Count 2 M N K per GEMM into *gemm_flops (may be null). With count_only the GEMMs are skipped
  // (the outputs are then meaningless): FLOP counts of large shapes at no cost.
  uint64_t* gemm_flops = nullptr;
  bool count_only = false;
};

// Forward scan, depth 1 or 2 (what ttt_linear_scan_forward / ttt_mlp_scan_forward compute).
KernelStatus ttt_scan_forward_cpu(const TTTScanParams& p, const CpuRefOptions& o = {});
// Backward of the TTT-Linear scan (what ttt_linear_scan_backward computes).
KernelStatus ttt_linear_scan_backward_cpu(const TTTScanParams& p, const TTTScanGradParams& g,
                                          const CpuRefOptions& o = {});

}  // namespace mtt::kernels
