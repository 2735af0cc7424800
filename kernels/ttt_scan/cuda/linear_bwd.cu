// TTT-Linear backward scan kernel. The algorithm is ../algo.h (linear_backward_scan).
#include "kernels/ttt_scan/cuda/exec.cuh"

namespace mtt::kernels {
namespace cuda_impl {
__global__ void __launch_bounds__(kThreads) ttt_linear_scan_bwd_kernel(TTTScanParams p, TTTScanGradParams g,
                                                                      algo::Plan pl) {
  extern __shared__ __align__(128) unsigned char smem_raw[];
  GpuExec x{static_cast<int>(threadIdx.x), static_cast<int>(blockDim.x), p.tensor_cores, smem_raw};
  algo::Ctx c{&p, pl, reinterpret_cast<float*>(smem_raw + kStageBytes),
              static_cast<float*>(p.workspace) + size_t(blockIdx.x) * pl.global_floats,
              static_cast<int>(blockIdx.x) / p.H, static_cast<int>(blockIdx.x) % p.H};
  algo::linear_backward_scan(x, c, g);
}
}  // namespace cuda_impl

KernelStatus ttt_linear_scan_backward(const TTTScanParams& p, const TTTScanGradParams& g, void* stream) {
  if (const char* why = ttt_scan_unsupported(p)) return {1, why};
  if (p.depth != 1) return {1, "ttt_linear_scan_backward needs depth 1"};
  if (!g.dXQW || !g.dXQ || !g.dXK || !g.dXV || !g.deta || !g.dln_weight || !g.dln_bias || !g.dW_in[0] || !g.db_in[0])
    return {1, "backward: missing gradient pointer"};
  if (!p.workspace || p.workspace_bytes < ttt_scan_bwd_workspace_bytes(p)) return {1, "workspace missing or too small"};
  size_t budget = 0, smem = 0;
  if (KernelStatus s = cuda_impl::smem_budget(p, budget); !s.ok()) return s;
  const algo::Plan pl = algo::bwd_plan(p, budget);
  if (KernelStatus s = cuda_impl::prepare(cuda_impl::ttt_linear_scan_bwd_kernel, pl, smem); !s.ok()) return s;
  cuda_impl::ttt_linear_scan_bwd_kernel<<<p.B * p.H, cuda_impl::kThreads, smem, static_cast<cudaStream_t>(stream)>>>(
      p, g, pl);
  if (cudaError_t e = cudaGetLastError(); e != cudaSuccess) return {2, cudaGetErrorString(e)};  // static strings
  return {};
}
}  // namespace mtt::kernels
