// The launchers of cuda/launch.h on the fake device of fake_cuda.h (a dry run of the standalone
// check without a GPU): the kernels' CPU copy on the "device" (host) pointers, with the launchers'
// own argument checks, the plan's shared-memory budget of an H100 (or p.smem_cap_floats), the
// tensor-core image for bf16 and every GEMM summed in reverse order. Test code only.
//
// MTT_FAKE_GPU_FAULT=eta plants a fault the size of a small kernel bug: the learning rates scaled
// by 1 - 1/b, as if one token of each mini-batch were left out of the update. The check must then
// fail (the dry run shows that its tolerances catch it).
#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <vector>

#include "kernels/ttt_scan/cpu_ref/scan_cpu_ref.h"
#include "kernels/ttt_scan/cuda/launch.h"

namespace mtt::kernels {

namespace {
CpuRefOptions device_like(const TTTScanParams& p) {
  CpuRefOptions o;
  o.threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  o.emulate_tensor_cores = true;  // only where p.tensor_cores and the shape allow, as on the GPU
  o.reverse_k = true;
  const long long budget = (232448 - 16384) / 4;  // H100 opt-in shared memory minus the WMMA staging
  o.smem_budget_floats = p.smem_cap_floats >= 0 ? std::min(p.smem_cap_floats, budget) : budget;
  return o;
}

// The fault of MTT_FAKE_GPU_FAULT=eta, on a copy of eta that lives as long as the launch.
struct Fault {
  std::vector<float> eta;
  TTTScanParams apply(TTTScanParams p) {
    const char* f = std::getenv("MTT_FAKE_GPU_FAULT");
    if (!f || std::strcmp(f, "eta") != 0) return p;
    eta.assign(p.eta, p.eta + size_t(p.B) * p.H * p.NC * p.b * p.b);
    for (auto& e : eta) e *= 1.f - 1.f / p.b;
    p.eta = eta.data();
    return p;
  }
};
}  // namespace

KernelStatus ttt_linear_scan_forward(const TTTScanParams& p, void*) {
  if (const char* why = ttt_scan_unsupported(p)) return {1, why};
  if (p.depth != 1) return {1, "ttt_linear_scan_forward needs depth 1"};
  if (!p.workspace || p.workspace_bytes < ttt_scan_workspace_bytes(p)) return {1, "workspace missing or too small"};
  Fault f;
  return ttt_scan_forward_cpu(f.apply(p), device_like(p));
}

KernelStatus ttt_mlp_scan_forward(const TTTScanParams& p, void*) {
  if (const char* why = ttt_scan_unsupported(p)) return {1, why};
  if (p.depth != 2) return {1, "ttt_mlp_scan_forward needs depth 2"};
  if (!p.workspace || p.workspace_bytes < ttt_scan_workspace_bytes(p)) return {1, "workspace missing or too small"};
  Fault f;
  return ttt_scan_forward_cpu(f.apply(p), device_like(p));
}

KernelStatus ttt_linear_scan_backward(const TTTScanParams& p, const TTTScanGradParams& g, void*) {
  if (const char* why = ttt_scan_unsupported(p)) return {1, why};
  if (!p.workspace || p.workspace_bytes < ttt_scan_bwd_workspace_bytes(p)) return {1, "workspace missing or too small"};
  Fault f;
  return ttt_linear_scan_backward_cpu(f.apply(p), g, device_like(p));
}

}  // namespace mtt::kernels
