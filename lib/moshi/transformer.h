#pragma once
// The streaming transformer of the Moshi LM (docs/moshi.md §2.2-2.6, §3): fused in_proj/out_proj
// attention with weights per step and a schedule (depformer), gated and plain FFNs, LayerScale;
// and its streaming state. The pieces it shares with Mimi's transformer (norms, LoRA linears,
// RoPE, sinusoidal embedding, ring KV cache, attention mask) are lib/nn.
//
// Parameters are plain at::Tensor members registered under their upstream module names
// (in_projs.{k}.weight, gating.linear_in.weight, norm1.alpha, ...) with their declarations
// (nn/params.h), see LMModel::declared_parameters().
#include <ATen/ATen.h>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <tuple>
#include <vector>

#include "moshi/config.h"
#include "nn/kv_ring.h"
#include "nn/linear.h"
#include "nn/params.h"
#include "nn/norms.h"

namespace mtt::moshi {

using nn::Linear;        // nn/linear.h: Linear with a separate LoRA adapter
using nn::NamedTensors;  // nn/params.h
using nn::ParamList;     // nn/params.h: each parameter with its declaration
using nn::Norm;          // nn/norms.h
using nn::RingKVCache;   // nn/kv_ring.h

// The norm `kind` names (create_norm_fn) over `dim` channels, its tensors on the meta device.
Norm make_norm(NormKind kind, int64_t dim);

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
  std::vector<RingKVCache> kv;                        // one per layer
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
  at::Tensor forward(const at::Tensor& x, const StepPositions& pos, RingKVCache* kv, LayerTTTState* ttt,
                     const at::Tensor& target_source = {});
  at::Tensor attention(const at::Tensor& x, const StepPositions& pos, RingKVCache* kv) const;
  at::Tensor ffn(const at::Tensor& x, int64_t offset_cpu) const;
  void collect(const std::string& prefix, ParamList& out);
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
  void collect(const std::string& prefix, ParamList& out);

 private:
  TransformerConfig cfg_;
  std::vector<TransformerLayer> layers_;
};

}  // namespace mtt::moshi
