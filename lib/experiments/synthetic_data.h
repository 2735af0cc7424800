#pragma once
// Synthetic token tasks for the tiny models (seeded, so a sweep point is reproducible).
#include <ATen/ATen.h>

#include <cstdint>

namespace mtt::experiments {

// In-context associative task: every sequence draws its own random permutation pi of the vocabulary;
// x_{t+1} = pi(x_t) with probability `follow`, a uniform token otherwise. The transitions must be
// learnt inside the sequence, which is what the TTT inner loop does (a key -> value memory).
// Returns tokens [B, L] int64.
at::Tensor make_permutation_chain_batch(int64_t B, int64_t L, int64_t vocab, double follow, uint64_t seed);

// Recall task: a key token k is shown at distance `distance` before the end, followed by its value;
// filler tokens elsewhere; the sequence ends with the key again and the model must predict the value.
// tokens [B, L]; value positions: the last target is tokens[:, L-1]. Tokens 0 and 1 are reserved
// markers (0 = filler start, 1 = key marker); keys/values are drawn from [2, vocab).
struct RecallBatch {
  at::Tensor tokens;  // [B, L]
  at::Tensor value;   // [B] the token to predict at the last position
};
RecallBatch make_recall_batch(int64_t B, int64_t L, int64_t vocab, int64_t distance, uint64_t seed);

}  // namespace mtt::experiments
