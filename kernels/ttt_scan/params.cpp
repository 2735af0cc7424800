// Host-side checks and sizing shared by the CUDA launchers and the CPU reference.
#include "kernels/ttt_scan/params.h"

#include "kernels/ttt_scan/algo.h"

namespace mtt::kernels {

size_t ttt_state_floats(const TTTScanParams& p) { return algo::state_floats(p); }

const char* ttt_scan_unsupported(const TTTScanParams& p) {
  if (p.B <= 0 || p.H <= 0 || p.NC <= 0 || p.b <= 0 || p.d <= 0) return "empty or negative shape";
  if (p.depth != 1 && p.depth != 2) return "inner model depth must be 1 (TTT-Linear) or 2 (TTT-MLP)";
  if (p.depth == 2 && (p.hidden <= 0 || p.hidden % 4 != 0 || p.hidden > 4 * kMaxHeadDim))
    return "TTT-MLP hidden width must be a positive multiple of 4, at most 512";
  if (p.d > kMaxHeadDim) return "head dim above 128";
  if (p.b > kMaxMiniBatch) return "mini-batch size above 64";
  if (p.d % 4 != 0) return "head dim must be a multiple of 4";
  if (!p.XQ || !p.XK || !p.XV || !p.eta || !p.ln_weight || !p.ln_bias || !p.XQW) return "missing input/output pointer";
  for (int k = 0; k < p.depth; ++k)
    if (!p.W_in[k] || !p.b_in[k] || !p.W_out[k] || !p.b_out[k]) return "missing state pointer";
  if (p.checkpoints && p.checkpoint_group < 0) return "negative checkpoint group";
  return nullptr;
}

size_t ttt_scan_workspace_bytes(const TTTScanParams& p) {
  if (ttt_scan_unsupported(p)) return 0;
  // Global part of the plan for a zero shared-memory budget (the CUDA launcher sizes for its real
  // budget, which never needs more): per (batch, head).
  return algo::fwd_plan(p, 0).global_floats * sizeof(float) * size_t(p.B) * p.H;
}

size_t ttt_scan_bwd_workspace_bytes(const TTTScanParams& p) {
  if (ttt_scan_unsupported(p)) return 0;
  return algo::bwd_plan(p, 0).global_floats * sizeof(float) * size_t(p.B) * p.H;
}

}  // namespace mtt::kernels
