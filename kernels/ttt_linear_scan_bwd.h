#pragma once
// Backward of the TTT-Linear scan on CUDA (recompute per checkpoint group, spec §3): one CTA per
// (batch, head) walks the groups in reverse, re-runs the group's forward from its checkpoint and then
// back-propagates mini-batch by mini-batch. Checkpoints come from the forward (p.checkpoints) or are
// recomputed here when p.checkpoints is null. Device pointers; workspace of
// ttt_scan_bwd_workspace_bytes(p) bytes.
#include "kernels/ttt_scan_params.h"

namespace mtt::kernels {
KernelStatus ttt_linear_scan_backward(const TTTScanParams& p, const TTTScanGradParams& g, void* stream);
}
