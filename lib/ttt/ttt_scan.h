#pragma once
// The TTT inner loop in the dual form (docs/ttt.md §2) and the scan over mini-batches with
// checkpoint groups (§3). This is the seam the CUDA kernels plug into: ttt_scan() checks whether a
// registered backend (lib/ttt/cuda_dispatch.*) accepts the inputs and otherwise runs the LibTorch
// reference path below, which autograd differentiates (outer-loop gradients through the inner loop).
//
// Inner model with n layers (n = 1: TTT-Linear; n = 2: TTT-MLP W1,b1,W2,b2; n >= 3: deeper MLP):
//   X_0 = XK, Z_k = X_k W_k + b_k, X_k+1 = gelu_tanh(Z_k); f(XK) = LN(Z_n-1) (inner LN, ttt_norm)
//   G_n-1 = ln_fused_l2_bwd(Z_n-1, XV - XK); G_k = (G_k+1 W_k+1^T) * gelu'(Z_k)
//   Zbar_k = Xbar_k W_k - (eta * Xbar_k X_k^T) G_k + b_k - eta G_k,  Xbar_0 = XQ
//   W_k' = W_k - (e * X_k)^T G_k, b_k' = b_k - e^T G_k with e = eta[b-1, :] (the last row)
//   output = XQ + LN(Zbar_n-1)
// For the causal form the caller passes eta already lower-triangular (tril(eta) * A = eta * tril(A)).
//
// MultiLayerQuery::fork_updated (depth n >= 3 only; the fork's compute_multi_layer_mini_batch) runs
// the query pass through the mini-batch's end weights W_k', b_k' and still subtracts the eta terms:
//   Zbar_k = Xbar_k W_k' + b_k' - (eta * (Xbar_k X_k^T + 1)) G_k
// Since W_k' = W_k - X_k^T diag(e) G_k and b_k' = b_k - e^T G_k, this is the dual form with the query
// eta replaced by eta_q[i, j] = eta[i, j] + e[j] (the last row added to every row; 2 eta for the
// fork's identical-row dit eta); the carry is unchanged. The op path (ttt_step) computes it as the
// fork writes it, the fused CPU scan through eta_q. Depths 1 and 2 always use the dual form (the
// fork's TTTLinear / 2-layer TTTMLP run compute_mini_batch); the CUDA kernels (depth <= 2) never see it.
#include <ATen/ATen.h>

#include <functional>
#include <optional>
#include <vector>

#include "ttt/variants.h"

namespace mtt::ttt {

// Inputs of a scan over NC full mini-batches, in the op's layout.
struct ScanInputs {
  at::Tensor XQ, XK, XV;          // [B, H, NC, b, d]; XV in target form (the op trains on XV - XK)
  at::Tensor eta;                 // [B, H, NC, b, b], masked (tril) already for the causal form
  at::Tensor ln_weight, ln_bias;  // [H, d] ttt_norm gamma/beta
  double ln_eps = 1e-6;
  int64_t checkpoint_group = 0;   // mini-batches per remat group; <= 0: keep every activation
  bool record_losses = false;     // fill ScanOutputs::loss_before/after (Figure 5), no grad
  MultiLayerQuery query = MultiLayerQuery::dual;  // see the header comment (depth >= 3 only)
};

struct ScanOutputs {
  at::Tensor XQW;                                // [B, H, NC, b, d]
  std::vector<at::Tensor> weights, biases;       // final inner states [B, H, ...]
  at::Tensor loss_before, loss_after;            // [B, H, NC, b] when record_losses
};

// Runs the scan from per-element initial states weights[k] [B,H,m_k,m_k+1], biases[k] [B,H,1,m_k+1].
// Order: registered backends (CUDA), then the fused CPU path for CPU float32/float64
// (scan_cpu_fused.h; skipped with MTT_TTT_SCAN=reference), then the reference path.
ScanOutputs ttt_scan(const ScanInputs& in, const std::vector<at::Tensor>& weights,
                     const std::vector<at::Tensor>& biases);

// The LibTorch reference path (what ttt_scan runs when no backend takes the call).
ScanOutputs ttt_scan_reference(const ScanInputs& in, const std::vector<at::Tensor>& weights,
                               const std::vector<at::Tensor>& biases);

// A backend returns std::nullopt when it does not handle these inputs (device, dtype, shapes,
// depth, grad requirements); the first backend that returns a value wins.
using ScanBackend = std::function<std::optional<ScanOutputs>(
    const ScanInputs&, const std::vector<at::Tensor>&, const std::vector<at::Tensor>&)>;
void register_scan_backend(const char* name, ScanBackend backend);
void clear_scan_backends();

// One (possibly partial) mini-batch of m <= b tokens with the primal-form accumulators of §2.4.
// Gradients are taken at the mini-batch start weights W; acc_* (may be empty = zero) hold
// sum_j lr_j grad_j of the tokens of this mini-batch seen before; row_factor [.., m, 1] is the
// token factor of each row (the causal eta is row_factor_i * lr_j, eta passed tril'ed).
// commit = true: returns W - last_row_factor * (acc + new) as the new start weights, zero acc.
struct StepInputs {
  at::Tensor XQ, XK, XV;          // [B, H, m, d]
  at::Tensor eta;                 // [B, H, m, m] (masked)
  at::Tensor lr;                  // [B, H, m]   column factors (needed when accumulating)
  at::Tensor row_factor;          // [B or 1, H or 1, m, 1] (needed with acc or !commit)
  at::Tensor ln_weight, ln_bias;  // [H, d]
  double ln_eps = 1e-6;
  bool commit = true;
  bool record_losses = false;
  // fork_updated needs a whole committed mini-batch without accumulators (the fork pads every call).
  MultiLayerQuery query = MultiLayerQuery::dual;
};
struct StepOutputs {
  at::Tensor XQW;                                // [B, H, m, d]
  std::vector<at::Tensor> weights, biases;       // start weights for the next step
  std::vector<at::Tensor> acc_weights, acc_biases;  // empty after a commit
  at::Tensor loss_before, loss_after;            // [B, H, m] when record_losses
};
StepOutputs ttt_step(const StepInputs& in, const std::vector<at::Tensor>& weights,
                     const std::vector<at::Tensor>& biases, const std::vector<at::Tensor>& acc_weights,
                     const std::vector<at::Tensor>& acc_biases);

// Helpers of §2 (exposed for tests).
at::Tensor gelu_tanh(const at::Tensor& z);
at::Tensor gelu_tanh_bwd(const at::Tensor& z);  // d gelu / dz
at::Tensor ln_fwd(const at::Tensor& z, const at::Tensor& gamma, const at::Tensor& beta, double eps);
// d/dz of 1/2 ||gamma * zhat + beta - target||^2 per token (sum over features).
at::Tensor ln_fused_l2_bwd(const at::Tensor& z, const at::Tensor& target, const at::Tensor& gamma,
                           const at::Tensor& beta, double eps);
// Per-token reconstruction loss mean_f (LN(z) - target)^2 (Figure 5 curves).
at::Tensor ln_l2_loss(const at::Tensor& z, const at::Tensor& target, const at::Tensor& gamma,
                      const at::Tensor& beta, double eps);
// True when `query` changes the query pass of an inner model with `depth` layers (fork_updated, n >= 3).
inline bool query_uses_updated(MultiLayerQuery query, size_t depth) {
  return query == MultiLayerQuery::fork_updated && depth >= 3;
}

// Inner model forward on keys: returns Z of the last layer given X [B,H,m,d] and weights [B|1,H,..].
at::Tensor inner_forward(const at::Tensor& X, const std::vector<at::Tensor>& weights,
                         const std::vector<at::Tensor>& biases);

}  // namespace mtt::ttt
