#pragma once
// The causal, windowed attention mask of the transformers (moshi transformer.py:574-585,
// docs/moshi.md §2.3): a query at absolute position p_q attends a key at p_k iff p_k >= 0 (-1
// marks an empty ring slot) and 0 <= p_q - p_k < context.
#include <ATen/ATen.h>

#include <optional>

namespace mtt::nn {

// bool [B or 1, 1, T, S] for queries at offsets[b] + t (offsets int64 [B] or [1]) and keys at
// pos_k (int64 [B or 1, S]); no context: no window, only causality.
at::Tensor causal_window_mask(const at::Tensor& offsets, int64_t T, const at::Tensor& pos_k,
                              std::optional<int64_t> context);

}  // namespace mtt::nn
