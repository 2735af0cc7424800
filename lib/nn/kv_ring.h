#pragma once
// The ring KV cache of one attention module (moshi transformer.py RingKVCache in its
// respect_exec_mask form, docs/moshi.md §2.6): a fixed capacity, one write offset per batch row
// so rows can restart or pause independently. Used by the Moshi LM's streaming state and by
// Mimi's KvMode::UpstreamRing.
#include <ATen/ATen.h>

#include <tuple>
#include <vector>

namespace mtt::nn {

struct RingKVCache {
  at::Tensor keys, values;            // [B, H, capacity, head_dim]
  int64_t capacity = 0;
  std::vector<int64_t> end_offsets;   // per row: number of steps written since the row's last reset

  // Zero keys/values on `opts`, every row empty.
  static RingKVCache make(int64_t batch, int64_t heads, int64_t capacity, int64_t head_dim,
                          const at::TensorOptions& opts);
  bool defined() const { return keys.defined(); }
  // Writes T new steps of every row (k, v [B, H, T, head_dim]), returns (keys, values, positions
  // [B or 1, capacity]) with -1 for slots a row has not written since its last reset.
  // exec (empty: every row): rows with exec[b] false are written (slot reused by their next real
  // step) but do not advance, as upstream's respect_exec_mask cache.
  std::tuple<at::Tensor, at::Tensor, at::Tensor> complete(const at::Tensor& k, const at::Tensor& v,
                                                          const std::vector<bool>& exec = {});
  // RingKVCache.reset: rows with mask[b] restart at slot 0; their old keys/values stay in memory
  // but are masked out (positions -1) until overwritten, as upstream does.
  void reset(const std::vector<bool>& mask);
};

}  // namespace mtt::nn
