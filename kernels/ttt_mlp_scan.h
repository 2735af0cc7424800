#pragma once
// Fused TTT-MLP forward scan on CUDA (spec ttt.md §2.1-2.2, §5.1): one CTA per (batch, head), GEMMs on
// bf16 tensor cores with fp32 accumulation (sm_80+), GELU/LayerNorm/state in fp32. The state
// (W1 [d,4d], b1, W2 [4d,d], b2) stays in shared memory while it fits (d <= 64 with b <= 32 on
// H100); larger states live in the CTA's global workspace (L2). Same parameters as TTT-Linear.
#include "kernels/ttt_scan_params.h"

namespace mtt::kernels {
KernelStatus ttt_mlp_scan_forward(const TTTScanParams& p, void* stream);
}
