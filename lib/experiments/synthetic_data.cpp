#include "experiments/synthetic_data.h"

#include <algorithm>
#include <random>

#include "core/error.h"

namespace mtt::experiments {

at::Tensor make_permutation_chain_batch(int64_t B, int64_t L, int64_t vocab, double follow, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int64_t> tok(0, vocab - 1);
  std::uniform_real_distribution<double> coin(0.0, 1.0);
  at::Tensor out = at::empty({B, L}, at::kLong);
  auto acc = out.accessor<int64_t, 2>();
  std::vector<int64_t> pi(static_cast<std::size_t>(vocab));
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t i = 0; i < vocab; ++i) pi[i] = i;
    std::shuffle(pi.begin(), pi.end(), rng);
    int64_t x = tok(rng);
    for (int64_t t = 0; t < L; ++t) {
      acc[b][t] = x;
      x = coin(rng) < follow ? pi[x] : tok(rng);
    }
  }
  return out;
}

RecallBatch make_recall_batch(int64_t B, int64_t L, int64_t vocab, int64_t distance, uint64_t seed) {
  if (vocab < 8) throw Error("", "vocab", "recall task needs a vocabulary of at least 8 tokens");
  if (distance + 3 > L) throw Error("", "distance", "recall distance must be at most seq_len - 3");
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int64_t> sym(2, vocab - 1);
  RecallBatch r{at::empty({B, L}, at::kLong), at::empty({B}, at::kLong)};
  auto acc = r.tokens.accessor<int64_t, 2>();
  auto val = r.value.accessor<int64_t, 1>();
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t t = 0; t < L; ++t) acc[b][t] = sym(rng);
    int64_t key = sym(rng), value = sym(rng);
    // ... [1] key value ... filler ... [1] key -> predict value at the last position.
    int64_t k_pos = L - 2 - distance;
    acc[b][k_pos - 1 >= 0 ? k_pos - 1 : 0] = 1;
    acc[b][k_pos] = key;
    acc[b][k_pos + 1] = value;
    acc[b][L - 3] = 1;
    acc[b][L - 2] = key;
    acc[b][L - 1] = value;
    val[b] = value;
  }
  return r;
}

}  // namespace mtt::experiments
