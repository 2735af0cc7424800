#pragma once
// Kernel-vs-LibTorch dispatch for the TTT scan (docs/ttt.md §2, §5; docs/architecture.md
// "Kernels stay framework-free"). The kernels in kernels/ take raw pointers; this file is the only
// place that turns at::Tensor into those pointers.
//
// How lib/ttt uses it: ttt_scan() (ttt_scan.h) asks every registered ScanBackend first.
// cuda_dispatch.cpp registers `cuda_scan_backend` under the name "cuda" at static-initialisation
// time (and register_cuda_scan_backend() does it explicitly, idempotently). The backend returns
// std::nullopt - and the LibTorch reference path runs - whenever kernel_unsupported_reason() is
// non-empty: no CUDA build or device, tensors not on CUDA, dtype not fp32/bf16, depth not 1 or 2,
// head dim > 128, mini-batch > 64, hidden width not a multiple of 4 or above 512, or autograd
// needing the graph of a TTT-MLP scan (the TTT-Linear scan runs as one autograd node whose backward
// is the backward kernel; the TTT-MLP backward kernel does not exist yet).
#include <ATen/ATen.h>

#include <optional>
#include <string>
#include <vector>

#include "kernels/ttt_scan/params.h"
#include "ttt/ttt_scan.h"

namespace mtt::ttt {

// Which implementation of the launcher API runs the scan.
enum class KernelImpl {
  cuda,           // the CUDA kernels (tensors on a CUDA device, LibTorch's current stream)
  cpu_reference,  // the kernels' CPU copy (kernels/ttt_scan/cpu_ref): the same algorithm and layouts
};

// The CPU copy of the kernel algorithm is test code, not part of this library: KernelImpl::
// cpu_reference runs the host launchers that tests and benchmarks hand over here once (before their
// first scan); until then kernel_unsupported_reason(..., cpu_reference) says so.
struct HostScanLaunchers {
  kernels::KernelStatus (*forward)(const kernels::TTTScanParams&) = nullptr;
  kernels::KernelStatus (*linear_backward)(const kernels::TTTScanParams&, const kernels::TTTScanGradParams&) = nullptr;
};
void set_cpu_reference_launchers(const HostScanLaunchers& launchers);

// One line: "built with CUDA kernels; 1 device(s)" / "built without CUDA ..." (for logs and skips).
std::string cuda_kernels_status();
// True when the CUDA kernels were compiled, a device is visible and MTT_DISABLE_CUDA_KERNELS is unset.
bool cuda_kernels_available();

// "" when `impl` would run these scan inputs, else the reason it would not (one line).
std::string kernel_unsupported_reason(const ScanInputs& in, const std::vector<at::Tensor>& weights,
                                      const std::vector<at::Tensor>& biases,
                                      KernelImpl impl = KernelImpl::cuda);

// Runs the scan with `impl` after checking support; std::nullopt when unsupported. Outputs are in
// the inputs' dtype (XQW) and fp32 (states, losses), on the inputs' device. When grad mode is on and
// an input requires grad (TTT-Linear only), XQW and the final state carry an autograd node whose
// backward runs kernel_scan_backward.
std::optional<ScanOutputs> kernel_scan(const ScanInputs& in, const std::vector<at::Tensor>& weights,
                                       const std::vector<at::Tensor>& biases,
                                       KernelImpl impl = KernelImpl::cuda);

// The ScanBackend registered as "cuda": kernel_scan(..., KernelImpl::cuda).
std::optional<ScanOutputs> cuda_scan_backend(const ScanInputs& in, const std::vector<at::Tensor>& weights,
                                             const std::vector<at::Tensor>& biases);
// Registers cuda_scan_backend once; returns cuda_kernels_available().
bool register_cuda_scan_backend();

// Gradients of sum(XQW * dXQW) + sum(W_final * dW_final) ... w.r.t. the scan inputs, computed by the
// backward kernels (recompute per checkpoint group). Undefined d_final_* count as zero.
struct ScanGrads {
  at::Tensor dXQ, dXK, dXV, deta;       // like the inputs (fp32)
  at::Tensor dln_weight, dln_bias;      // [H, d] fp32 (summed over the batch)
  std::vector<at::Tensor> dweights, dbiases;  // of the initial states [B, H, ...] fp32
};
std::optional<ScanGrads> kernel_scan_backward(const ScanInputs& in, const std::vector<at::Tensor>& weights,
                                              const std::vector<at::Tensor>& biases, const at::Tensor& dXQW,
                                              const std::vector<at::Tensor>& d_final_weights,
                                              const std::vector<at::Tensor>& d_final_biases,
                                              KernelImpl impl = KernelImpl::cuda);

}  // namespace mtt::ttt
