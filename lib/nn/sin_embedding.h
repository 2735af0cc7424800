#pragma once
// Sinusoidal positional embedding (moshi transformer.py create_sin_embedding), added to the input
// of a transformer with positional_embedding "sin" or "sin_rope" (docs/moshi.md §2).
#include <ATen/ATen.h>

namespace mtt::nn {

// [B or 1, T, C] for positions offsets[b]..offsets[b]+T-1 (offsets int64 [B] or [1]): cos of the
// C/2 phases then their sin, computed in `dtype` as upstream does.
at::Tensor sin_embedding(const at::Tensor& offsets, int64_t T, int64_t C, double max_period, at::ScalarType dtype);

}  // namespace mtt::nn
