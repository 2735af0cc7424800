// TTT-MLP forward scan kernel (depth 2). The algorithm is ../algo.h.
#include "kernels/ttt_scan/cuda/exec.cuh"

namespace mtt::kernels {
KernelStatus ttt_mlp_scan_forward(const TTTScanParams& p, void* stream) {
  return cuda_impl::launch_forward<2>(p, stream);
}
}  // namespace mtt::kernels
