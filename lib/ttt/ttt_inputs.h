#pragma once
// Input preparation of the TTT layer (docs/ttt.md §1): L2 normalisation, RoPE, reconstruction
// target, learnable token-wise learning rate and the eta matrices. Used by TTTLayer and exposed
// for tests and the golden runner.
#include <ATen/ATen.h>

#include <cstdint>

#include "ttt/ttt_layer.h"

namespace mtt::ttt {

// F.normalize(x, dim=-1, eps=1e-12): x / max(||x||, eps) (§1.1 step 2).
at::Tensor l2_normalize(const at::Tensor& x, double eps = 1e-12);

// RoPE on x [B, L, H, d] for absolute token positions start .. start+L-1 (adjacent pairs (2i, 2i+1),
// cos/sin computed in fp32 whatever x's dtype, §1.1 step 3 / §1.2). mini_batch: modulus for
// Rope::minibatch_1d.
at::Tensor apply_rope(const at::Tensor& x, Rope rope, int64_t start, int64_t mini_batch, double theta);

// The "XV" the op receives (it trains on XV - XK), XV/XK [B, L, H, d], gamma/beta [H, d] (§1.1 step 4, §7a).
at::Tensor reconstruction_target(const at::Tensor& XV, const at::Tensor& XK, const at::Tensor& gamma,
                                 const at::Tensor& beta, ReconTarget variant, double eps);

// base_lr * sigmoid(x . w_h + c_h) / d as [B, H, L] (§1.1 step 6); w [H, 1, D], c [H, 1].
at::Tensor token_lr(const at::Tensor& x, const at::Tensor& w, const at::Tensor& c, double base_lr, int64_t head_dim);

// Causal token factors max(0, 1/(i+1) + tau_i), i = 0..b-1 (1/(i+1) rounded to fp32 as LMPT does) [b].
at::Tensor token_factor(const at::Tensor& learnable_token_idx, int64_t b, at::ScalarType dtype);

// eta for NC full mini-batches from lr [B, H, NC*b]: causal: tril(tok_i * lr_j); dit: lr_j / b on
// every row. Returns [B, H, NC, b, b].
at::Tensor make_eta(const at::Tensor& lr, const at::Tensor& tok, Eta mode, int64_t b);

}  // namespace mtt::ttt
