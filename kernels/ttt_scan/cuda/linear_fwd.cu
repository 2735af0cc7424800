// TTT-Linear forward scan kernel (depth 1). The algorithm is ../algo.h.
#include "kernels/ttt_scan/cuda/exec.cuh"

namespace mtt::kernels {
KernelStatus ttt_linear_scan_forward(const TTTScanParams& p, void* stream) {
  return cuda_impl::launch_forward<1>(p, stream);
}
}  // namespace mtt::kernels
