#include "nn/kv_ring.h"

#include <algorithm>
#include <string>

#include "core/error.h"

namespace mtt::nn {

namespace {

// Writes T steps of rows [b0, b0 + n) that share the ring write offset `e` (transformer.py:238-288:
// step j goes to slot (e + j) % capacity; only the last `capacity` steps survive a long call).
void ring_write(at::Tensor& keys, at::Tensor& values, int64_t b0, int64_t n, int64_t e, int64_t cap,
                const at::Tensor& k, const at::Tensor& v) {
  const int64_t T = k.size(2);
  at::Tensor kd = keys.narrow(0, b0, n), vd = values.narrow(0, b0, n);
  at::Tensor ks = k.narrow(0, b0, n), vs = v.narrow(0, b0, n);
  if (T >= cap) {
    for (int64_t j = T - cap; j < T; ++j) {
      const int64_t slot = (e + j) % cap;
      kd.select(2, slot).copy_(ks.select(2, j));
      vd.select(2, slot).copy_(vs.select(2, j));
    }
    return;
  }
  const int64_t start = e % cap;
  const int64_t first = std::min(T, cap - start);
  kd.narrow(2, start, first).copy_(ks.narrow(2, 0, first));
  vd.narrow(2, start, first).copy_(vs.narrow(2, 0, first));
  if (first < T) {
    kd.narrow(2, 0, T - first).copy_(ks.narrow(2, first, T - first));
    vd.narrow(2, 0, T - first).copy_(vs.narrow(2, first, T - first));
  }
}

// Absolute position held by each slot after a write of T steps at offset e: slot i holds L + d
// (d = i - L % capacity <= 0) or L + d - capacity, L = e + T - 1; slots at or past the row's new
// end offset `end` (e + T, or e for a row that does not execute) get -1 (RingKVCache.complete).
void ring_positions(int64_t e, int64_t T, int64_t cap, int64_t end, int64_t* pos) {
  const int64_t last = e + T - 1, end_index = last % cap;
  for (int64_t i = 0; i < cap; ++i) {
    const int64_t d = i - end_index;
    pos[i] = i >= end ? -1 : (d <= 0 ? last + d : last + d - cap);
  }
}

}  // namespace

RingKVCache RingKVCache::make(int64_t batch, int64_t heads, int64_t capacity, int64_t head_dim,
                              const at::TensorOptions& opts) {
  RingKVCache c;
  c.capacity = capacity;
  c.keys = at::zeros({batch, heads, capacity, head_dim}, opts);
  c.values = at::zeros({batch, heads, capacity, head_dim}, opts);
  c.end_offsets.assign(static_cast<size_t>(batch), 0);
  return c;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> RingKVCache::complete(const at::Tensor& k, const at::Tensor& v,
                                                                     const std::vector<bool>& exec) {
  const int64_t B = k.size(0), T = k.size(2), cap = capacity;
  if (static_cast<int64_t>(end_offsets.size()) != B)
    throw Error("", "kv_cache", "batch " + std::to_string(B) + " != cache rows " + std::to_string(end_offsets.size()),
                ErrorKind::Internal);
  auto runs = [&](int64_t b) { return exec.empty() || exec[static_cast<size_t>(b)]; };
  const bool all_run = std::all_of(exec.begin(), exec.end(), [](bool e) { return e; });
  const bool same_end =
      std::all_of(end_offsets.begin(), end_offsets.end(), [&](int64_t x) { return x == end_offsets.front(); });
  const bool uniform = same_end && all_run;
  std::vector<int64_t> pos(static_cast<size_t>((uniform ? 1 : B) * cap));
  if (uniform) {
    ring_write(keys, values, 0, B, end_offsets[0], cap, k, v);
    ring_positions(end_offsets[0], T, cap, end_offsets[0] + T, pos.data());
  } else {
    for (int64_t b = 0; b < B; ++b) {
      const int64_t e = end_offsets[static_cast<size_t>(b)];
      ring_write(keys, values, b, 1, e, cap, k, v);
      ring_positions(e, T, cap, runs(b) ? e + T : e, pos.data() + b * cap);
    }
  }
  for (int64_t b = 0; b < B; ++b)
    if (runs(b)) end_offsets[static_cast<size_t>(b)] += T;
  at::Tensor positions =
      at::tensor(pos, at::TensorOptions().dtype(at::kLong)).view({uniform ? 1 : B, cap}).to(k.device());
  return {keys, values, positions};
}

void RingKVCache::reset(const std::vector<bool>& mask) {
  for (size_t b = 0; b < end_offsets.size() && b < mask.size(); ++b)
    if (mask[b]) end_offsets[b] = 0;
}

}  // namespace mtt::nn
