#pragma once
// The streaming transformer of the Moshi LM (spec moshi.md §2.2-2.6, §3): norms (LayerNorm,
// RMSNorm and their f32 variants), fused in_proj/out_proj attention with interleaved RoPE and a
// causal `context` window, weights per step with a schedule (depformer), gated and plain FFNs,
// LayerScale, sinusoidal embeddings; and its streaming state with ring KV caches.
//
// Parameters are plain at::Tensor members registered under their upstream module names
// (in_projs.{k}.weight, gating.linear_in.weight, norm1.alpha, ...), see named_parameters().
#include <ATen/ATen.h>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "moshi/config.h"

namespace mtt::moshi {

// (name, tensor handle) in registration order; handles alias the module's tensors.
using NamedTensors = std::vector<std::pair<std::string, at::Tensor*>>;

struct Linear {
  at::Tensor weight;  // [out, in]
  at::Tensor bias;    // undefined when the layer has none
  at::Tensor operator()(const at::Tensor& x) const;
  void collect(const std::string& prefix, NamedTensors& out);
};

struct Norm {
  NormKind kind = NormKind::layer_norm;
  int64_t dim = 0;
  at::Tensor alpha;         // RMSNorm gain [1, 1, D]
  at::Tensor weight, bias;  // LayerNorm [D]
  at::Tensor operator()(const at::Tensor& x) const;
  void collect(const std::string& prefix, NamedTensors& out);
};

// The ring KV cache of one attention module (transformer.py:196-288). One write offset for the
// whole batch (all rows step together).
struct KVCache {
  at::Tensor keys, values;  // [B, H, capacity, head_dim]
  int64_t capacity = 0;
  int64_t end_offset = 0;   // number of steps written so far
  // Writes T new steps, returns (keys, values, positions [capacity]) with -1 for empty slots.
  std::tuple<at::Tensor, at::Tensor, at::Tensor> complete(const at::Tensor& k, const at::Tensor& v);
};

class HybridBlock;   // moshi/hybrid.h: gated TTT between attention and FFN (fork layout)
struct LayerTTTState;  // moshi/hybrid.h

// Streaming state of one StreamingTransformer (offsets as upstream: `offset` of the attention
// (RoPE/mask position) and `offset_cpu` (per-step weight index) move together here).
struct TransformerState {
  int64_t batch = 0;
  int64_t offset = 0;
  std::vector<KVCache> kv;                            // one per layer
  std::vector<std::shared_ptr<LayerTTTState>> ttt;    // one per layer (null when not hybrid)
  bool defined() const { return batch > 0; }
};

struct TransformerLayer {
  const TransformerConfig* cfg = nullptr;
  Norm norm1, norm2;
  std::vector<Linear> in_projs, out_projs;   // num_weight_sets each
  std::vector<Linear> gating_in, gating_out;  // gated FFN (one per weight set)
  Linear linear1, linear2;                    // plain FFN (gating == "none")
  at::Tensor layer_scale_1, layer_scale_2;    // [D] when layer_scale is set
  std::shared_ptr<HybridBlock> hybrid;        // TTT branch (fork hybrid), else null
  std::function<at::Tensor(const at::Tensor&, LayerTTTState*)> ffn_override;  // In-Place TTT FFN

  // x [B, T, D]; kv == nullptr: non-streaming (positions 0..T-1 from `offset`).
  at::Tensor forward(const at::Tensor& x, int64_t offset, KVCache* kv, LayerTTTState* ttt);
  at::Tensor attention(const at::Tensor& x, int64_t offset, KVCache* kv) const;
  at::Tensor ffn(const at::Tensor& x, int64_t offset) const;
  void collect(const std::string& prefix, NamedTensors& out);
};

class StreamingTransformer {
 public:
  StreamingTransformer() = default;
  explicit StreamingTransformer(TransformerConfig cfg);
  StreamingTransformer(const StreamingTransformer&) = delete;
  StreamingTransformer& operator=(const StreamingTransformer&) = delete;
  StreamingTransformer(StreamingTransformer&&) = delete;

  const TransformerConfig& config() const { return cfg_; }
  // x [B, T, D]. state == nullptr: a full-sequence (training) pass from position 0. Otherwise the
  // state (created on first use) is advanced by T.
  at::Tensor forward(const at::Tensor& x, TransformerState* state = nullptr);
  TransformerState new_state(int64_t batch, const at::TensorOptions& opts) const;

  std::vector<TransformerLayer>& layers() { return layers_; }
  void collect(const std::string& prefix, NamedTensors& out);

 private:
  TransformerConfig cfg_;
  std::vector<TransformerLayer> layers_;
};

// Interleaved (or half-split) RoPE of q, k [B, H, T, D] at positions offset + t (rope.py).
std::pair<at::Tensor, at::Tensor> apply_rope(const at::Tensor& q, const at::Tensor& k, int64_t offset,
                                             double max_period, bool interleave);
// create_sin_embedding: [1, T, C] for positions offset..offset+T-1 in `dtype`.
at::Tensor sin_embedding(int64_t offset, int64_t T, int64_t C, double max_period, at::ScalarType dtype);

}  // namespace mtt::moshi
