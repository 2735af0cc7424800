#pragma once
// The streaming transformer of the Moshi LM (docs/moshi.md §2.2-2.6, §3): norms (LayerNorm,
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
#include <tuple>
#include <vector>

#include "moshi/config.h"

namespace mtt::moshi {

// (name, tensor handle) in registration order; handles alias the module's tensors.
using NamedTensors = std::vector<std::pair<std::string, at::Tensor*>>;

struct Linear {
  at::Tensor weight;  // [out, in] (with LoRA: moshi's frozen_W.weight)
  at::Tensor bias;    // undefined when the layer has none
  // LoRA kept separate (moshi/modules/lora.py LoRALinear, moshi/lora.h): lora_A [r, in],
  // lora_B [out, r]; y = x W^T (+ bias) + scaling * (x A^T) B^T. Undefined: no low-rank term.
  at::Tensor lora_A, lora_B;
  double lora_scaling = 0.0;

  bool has_lora() const { return lora_A.defined(); }
  at::Tensor operator()(const at::Tensor& x) const;
  // W + scaling * B @ A in the weight's dtype (W without LoRA), differentiable; for code that
  // needs the matrix itself (In-Place TTT's gate/up projection).
  at::Tensor effective_weight() const;
  // moshi's replace_lora_with_linear: weight = W + scaling * B @ A (computed as moshi does, in the
  // weight's dtype), the low-rank tensors dropped.
  void merge_lora();
  // Names: `weight` (+ `bias`), or with LoRA `frozen_W.weight` (+ `frozen_W.bias`), `lora_A.weight`,
  // `lora_B.weight` (the in-memory state_dict names of a LoRALinear).
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

// The ring KV cache of one attention module (transformer.py RingKVCache, respect_exec_mask form):
// one write offset per batch row, so rows can restart or pause independently (docs/moshi.md §2.6).
struct KVCache {
  at::Tensor keys, values;            // [B, H, capacity, head_dim]
  int64_t capacity = 0;
  std::vector<int64_t> end_offsets;   // per row: number of steps written since the row's last reset
  // Writes T new steps of every row, returns (keys, values, positions [B or 1, capacity]) with -1
  // for slots a row has not written since its last reset.
  // exec (empty: every row): rows with exec[b] false are written (slot reused by their next real
  // step) but do not advance, as upstream's respect_exec_mask cache.
  std::tuple<at::Tensor, at::Tensor, at::Tensor> complete(const at::Tensor& k, const at::Tensor& v,
                                                          const std::vector<bool>& exec = {});
  // RingKVCache.reset: rows with mask[b] restart at slot 0; their old keys/values stay in memory
  // but are masked out (positions -1) until overwritten, as upstream does.
  void reset(const std::vector<bool>& mask);
};

class HybridBlock;     // moshi/hybrid.h: gated TTT between attention and FFN (fork layout)
class InPlaceBlock;    // moshi/inplace.h: In-Place TTT on the gated FFN (docs/checkpoint-keys.md §2)
struct LayerTTTState;  // moshi/hybrid.h

// Streaming state of one StreamingTransformer. Upstream keeps `offsets` [B] (positions: RoPE, sin
// embedding, causal mask) and `offset_cpu` (weights-per-step index, reset to 0 by any reset);
// both are kept here on the host.
struct TransformerState {
  int64_t batch = 0;
  std::vector<int64_t> offsets;                       // per row
  int64_t offset_cpu = 0;
  std::vector<KVCache> kv;                            // one per layer
  std::vector<std::shared_ptr<LayerTTTState>> ttt;    // one per layer (null when not TTT)
  std::vector<bool> exec;                             // per row; empty = every row executes
  bool defined() const { return batch > 0; }
  bool uniform() const;                               // all rows at the same offset
  // reset_streaming(reset_mask) (streaming.py): rows with mask[b] (bool [B]) restart from
  // position 0 with empty KV rows and TTT state rows back to W0, and execute again; the other
  // rows are untouched.
  void reset(const at::Tensor& mask);
  // set_exec_mask (streaming.py): rows with mask[b] false still take part in the calls but their
  // state does not move (offsets, KV rows, TTT rows), "as if the step had never happened".
  void set_exec_mask(const at::Tensor& mask);
};

// Positions of one call: offsets per row (size 1 when every row shares it) and the host step
// counter that picks per-step weights.
struct StepPositions {
  std::vector<int64_t> offsets{0};
  int64_t offset_cpu = 0;
  std::vector<bool> exec;  // empty: every row executes
  bool all_exec() const;
  bool uniform() const { return offsets.size() == 1; }
  at::Tensor tensor(const at::Device& device) const;  // int64 [offsets.size()]
};

struct TransformerLayer {
  const TransformerConfig* cfg = nullptr;
  Norm norm1, norm2;
  std::vector<Linear> in_projs, out_projs;   // num_weight_sets each
  std::vector<Linear> gating_in, gating_out;  // gated FFN (one per weight set)
  Linear linear1, linear2;                    // plain FFN (gating == "none")
  at::Tensor layer_scale_1, layer_scale_2;    // [D] when layer_scale is set
  std::shared_ptr<HybridBlock> hybrid;        // TTT branch (fork hybrid), else null
  std::shared_ptr<InPlaceBlock> inplace;      // In-Place TTT FFN, else null

  // x [B, T, D]; kv == nullptr: non-streaming (positions offset..offset+T-1). target_source: the
  // In-Place target generator's input (summed token embeddings, docs/ttt.md §8), [B, T, D].
  at::Tensor forward(const at::Tensor& x, const StepPositions& pos, KVCache* kv, LayerTTTState* ttt,
                     const at::Tensor& target_source = {});
  at::Tensor attention(const at::Tensor& x, const StepPositions& pos, KVCache* kv) const;
  at::Tensor ffn(const at::Tensor& x, int64_t offset_cpu) const;
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
  // x [B, T, D]. state == nullptr: a full-sequence (training) pass from position 0. Otherwise every
  // row of the state is advanced by T. target_source: see TransformerLayer::forward.
  at::Tensor forward(const at::Tensor& x, TransformerState* state = nullptr, const at::Tensor& target_source = {});
  TransformerState new_state(int64_t batch, const at::TensorOptions& opts) const;

  std::vector<TransformerLayer>& layers() { return layers_; }
  void collect(const std::string& prefix, NamedTensors& out);

 private:
  TransformerConfig cfg_;
  std::vector<TransformerLayer> layers_;
};

// Interleaved (or half-split) RoPE of q, k [B, H, T, D] at positions offsets[b] + t (rope.py);
// offsets int64 [B] or [1].
std::pair<at::Tensor, at::Tensor> apply_rope(const at::Tensor& q, const at::Tensor& k, const at::Tensor& offsets,
                                             double max_period, bool interleave);
// create_sin_embedding: [B or 1, T, C] for positions offsets[b]..offsets[b]+T-1 in `dtype`.
at::Tensor sin_embedding(const at::Tensor& offsets, int64_t T, int64_t C, double max_period, at::ScalarType dtype);

}  // namespace mtt::moshi
