#pragma once
// Launchers of the fused TTT scan kernels on CUDA (algorithm: ../algo.h; parameters: ../params.h).
// One CTA (256 threads) per (batch, head); GEMMs on bf16 tensor cores with fp32 accumulation
// (p.tensor_cores, sm_80+, where b, d and the hidden width are multiples of 16) or fp32 FMA; state
// and LayerNorm math in fp32. Causal or DiT eta (the full b x b matrix), target XV - XK, state in
// and out, optional per-token inner losses and group checkpoints.
//
// Pointers are device pointers of the current device. `stream` is the cudaStream_t to launch on,
// as void* so that callers need no CUDA headers; nullptr is the legacy default stream. Callers
// inside a framework pass the framework's current stream (lib/ttt/cuda_dispatch.cpp passes
// LibTorch's), so the kernel is ordered with the framework's work and its caching allocator.
// Workspaces of ttt_scan_workspace_bytes / ttt_scan_bwd_workspace_bytes bytes (params.h).
#include "kernels/ttt_scan/params.h"

namespace mtt::kernels {

// TTT-Linear forward (depth 1).
KernelStatus ttt_linear_scan_forward(const TTTScanParams& p, void* stream);

// TTT-MLP forward (depth 2, any hidden width <= 512, multiple of 4). The state (W1 [d,4d], b1,
// W2 [4d,d], b2) stays in shared memory while it fits (d <= 64 with b <= 32 on an H100); larger
// states live in the CTA's global workspace (L2), see kernels/README.md for the d = 128 plan.
KernelStatus ttt_mlp_scan_forward(const TTTScanParams& p, void* stream);

// Backward of the TTT-Linear scan (recompute per checkpoint group, spec §3): one CTA per
// (batch, head) walks the groups in reverse, re-runs the group's forward from its checkpoint and
// then back-propagates mini-batch by mini-batch. Checkpoints come from the forward (p.checkpoints)
// or are recomputed here when p.checkpoints is null.
KernelStatus ttt_linear_scan_backward(const TTTScanParams& p, const TTTScanGradParams& g, void* stream);

}  // namespace mtt::kernels
