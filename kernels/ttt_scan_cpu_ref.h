#pragma once
// The TTT scan launchers' API run on the CPU in float32 loops (host pointers): the same algorithm
// (ttt_scan_algo.h), buffer plan and layouts as the CUDA kernels, so they are tested here, without a
// GPU, against the LibTorch reference path and the golden files (tests/kernels/).
#include "kernels/ttt_scan_params.h"

namespace mtt::kernels {

// Forward scan, depth 1 or 2 (what ttt_linear_scan_forward / ttt_mlp_scan_forward compute).
KernelStatus ttt_scan_forward_cpu(const TTTScanParams& p);
// Backward of the TTT-Linear scan (what ttt_linear_scan_backward computes).
KernelStatus ttt_linear_scan_backward_cpu(const TTTScanParams& p, const TTTScanGradParams& g);

}  // namespace mtt::kernels
