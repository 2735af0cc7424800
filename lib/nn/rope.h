#pragma once
// Rotary position embedding of attention heads (moshi modules/rope.py, docs/moshi.md §2.4), one
// implementation for the Moshi LM and Mimi. (The TTT layer's RoPE variants, positions modulo the
// mini-batch, are lib/ttt/ttt_inputs.h.)
#include <ATen/ATen.h>

#include <utility>

namespace mtt::nn {

// x [B, H, T, D] rotated at positions offsets[b] + t; offsets int64 [B] or [1]. freq_i =
// max_period^(-2i/D); angles and the rotation in f32, the result cast back to x's dtype.
// interleave: channel pairs (2i, 2i+1) rotate (rope.py's interleave=True); otherwise channel i
// pairs with i + D/2 (the `rope_concat` layout).
at::Tensor apply_rope(const at::Tensor& x, const at::Tensor& offsets, double max_period, bool interleave = true);
// The same at positions offset + t for every row.
at::Tensor apply_rope(const at::Tensor& x, int64_t offset, double max_period, bool interleave = true);
// q and k [B, H, T, D] at the same positions (the angles computed once).
std::pair<at::Tensor, at::Tensor> apply_rope(const at::Tensor& q, const at::Tensor& k, const at::Tensor& offsets,
                                             double max_period, bool interleave = true);

}  // namespace mtt::nn
