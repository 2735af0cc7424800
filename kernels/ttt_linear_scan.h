#pragma once
// Fused TTT-Linear forward scan on CUDA (spec ttt.md §2.3, §5.2): one CTA per (batch, head), the
// d x d state on chip across all mini-batches, GEMMs on bf16 tensor cores with fp32 accumulation
// (p.tensor_cores, sm_80+) or fp32 FMA, state and LayerNorm math in fp32. Causal or DiT eta (full
// b x b matrix), target XV - XK, state in/out, optional per-token inner losses and checkpoints.
// Pointers are device pointers; `stream` is a cudaStream_t (nullptr = default stream).
#include "kernels/ttt_scan_params.h"

namespace mtt::kernels {
KernelStatus ttt_linear_scan_forward(const TTTScanParams& p, void* stream);
}
