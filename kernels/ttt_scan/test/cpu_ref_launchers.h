#pragma once
// Hands the kernels' CPU copy (test code, ../cpu_ref) to lib/ttt's dispatch, so that
// KernelImpl::cpu_reference runs it. Included by the kernel tests and kernels_bench: the hand-over
// happens at static initialisation of each binary that includes it.
#include "kernels/ttt_scan/cpu_ref/scan_cpu_ref.h"
#include "ttt/cuda_dispatch.h"

namespace mtt::kernels::test {

inline void hand_cpu_copy_to_dispatch() {
  mtt::ttt::HostScanLaunchers h;
  h.forward = [](const TTTScanParams& p) { return ttt_scan_forward_cpu(p); };
  h.linear_backward = [](const TTTScanParams& p, const TTTScanGradParams& g) { return ttt_linear_scan_backward_cpu(p, g); };
  mtt::ttt::set_cpu_reference_launchers(h);
}

inline const bool kCpuCopyHandedOver = (hand_cpu_copy_to_dispatch(), true);

}  // namespace mtt::kernels::test
