#pragma once
// Fused CPU path of the TTT scan (docs/ttt.md §2-3): the same math as ttt_scan_reference, run per
// (batch, head) over all mini-batches with the inner state kept in a per-thread buffer (it stays in
// cache from one mini-batch to the next), GEMMs on raw BLAS calls into preallocated buffers, the
// elementwise parts of §2 fused into single passes (lib/ttt/scan_cpu_kernels.h), and a hand-written
// vector-Jacobian product of one mini-batch step for autograd.
//
// ttt_scan() runs it for CPU float32/float64 inputs of any depth n >= 1 and batch B >= 1, with or
// without autograd, record_losses and checkpoint groups (g <= 0: every step's start state and
// activations are kept for the backward; g > 0: only the states at group boundaries, the group is
// recomputed in the backward, §3). MTT_TTT_SCAN=reference in the environment makes ttt_scan() skip
// it (the LibTorch op path then runs, as ttt_scan_reference() always does).
#include <ATen/ATen.h>

#include <optional>
#include <string>
#include <vector>

#include "ttt/ttt_scan.h"

namespace mtt::ttt {

// "" when cpu_fused_scan would run these inputs, else why not (one line).
std::string cpu_fused_unsupported_reason(const ScanInputs& in, const std::vector<at::Tensor>& weights,
                                         const std::vector<at::Tensor>& biases);

// The fused scan; std::nullopt when unsupported. Outputs like ttt_scan_reference: XQW in the inputs'
// dtype, final states [B, H, ...], losses [B, H, NC, b] when record_losses; with grad mode on and an
// input requiring grad, XQW and the final states carry one autograd node for the whole scan.
std::optional<ScanOutputs> cpu_fused_scan(const ScanInputs& in, const std::vector<at::Tensor>& weights,
                                          const std::vector<at::Tensor>& biases);

// The backward's saved-activation buffer is kept for the next call (fresh pages cost the kernel's
// zeroing); this frees it.
void cpu_fused_scan_release_cache();

// True unless MTT_TTT_SCAN=reference (read on every call, so tests can switch it).
bool cpu_fused_scan_enabled();

}  // namespace mtt::ttt
