#pragma once
// In-Place TTT on the gated FFN of a Moshi layer (docs/ttt.md §8; keys docs/checkpoint-keys.md §2.2):
// Z = act(x·W_gateᵀ) ⊙ (x·W_upᵀ) from the layer's own `gating.linear_in`, and the down projection
// is the fast weight `gating.w_down` (W0, f32), updated chunk by chunk from the target
// V̂ = W_target(conv1d(e)) of the summed token embeddings e ("apply, then update"). The algorithm is
// lib/ttt's InPlaceTTT (moshi_port variant, functional fast weight); this block owns the LM's
// parameters under the fork's names and plugs them into it.
//
// Streaming: the fast weight and the tokens of the incomplete chunk are per batch row in the LM's
// streaming state (LayerTTTState::inplace), never in the parameters. Rows reset at different
// times sit at different positions inside their chunk; they are stepped in groups of rows that
// share that position, so each row's chunk boundaries are those of a fresh run of that row alone.
#include <ATen/ATen.h>
#include <memory>
#include <string>
#include <vector>

#include "moshi/config.h"
#include "moshi/transformer.h"

namespace mtt::ttt {
class InPlaceTTT;
struct InPlaceTTTOptions;
}

namespace mtt::moshi {

struct InPlaceRows;  // per-row streaming state (inplace.cpp)

class InPlaceBlock {
 public:
  // Throws mtt::Error (Usage) when the layer has no gated FFN or the activation is unsupported.
  InPlaceBlock(const LMConfig& cfg, int layer);
  ~InPlaceBlock();
  InPlaceBlock(const InPlaceBlock&) = delete;
  InPlaceBlock& operator=(const InPlaceBlock&) = delete;

  // x: the norm2 output [B, T, D]; target_source: the summed token embeddings [B, T, D].
  // state == nullptr: full sequence from W0 (training); otherwise the per-row stream advances by T.
  at::Tensor forward(const TransformerLayer& layer, const at::Tensor& x, const at::Tensor& target_source,
                     LayerTTTState* state);
  // w_down, w_down_pretrained, target_generator.conv1d.conv.weight, target_generator.W_target.weight
  // under `gating_prefix` ("transformer.layers.5.gating."); linear_in/linear_out are the layer's.
  void collect(const std::string& gating_prefix, ParamList& out);
  std::shared_ptr<InPlaceRows> new_state(int64_t batch) const;
  // The port's loaders: w_down and w_down_pretrained = f32 copies of linear_out (IPMOSHI
  // loaders.py:L458-473, docs/checkpoint-keys.md §2.2).
  void init_fast_weight_from(const TransformerLayer& layer);

  // Created on first use, so that a skeleton on the meta device (audit, schema checks, a 7B
  // config) allocates nothing: InPlaceTTT's constructor initialises tensors of its own.
  ttt::InPlaceTTT& module() const;
  // Plugs this block's tensors (and the layer's linear_in/linear_out when given) into module().
  void bind(const TransformerLayer* layer) const;

  at::Tensor w_down;             // [D, h] W0 of the fast weight (kept f32 as the port does)
  at::Tensor w_down_pretrained;  // [D, h] buffer (reset copy; not read: resets come from w_down)
  at::Tensor conv_weight;        // [D, D, k]
  at::Tensor target_proj;        // [D, D] W_target

 private:
  std::unique_ptr<ttt::InPlaceTTTOptions> options_;
  mutable std::shared_ptr<ttt::InPlaceTTT> ttt_;
};

// Rows with mask[b] (bool [B]) restart from W0 with an empty chunk buffer; the others keep
// their fast weight and buffered tokens.
void reset_rows(InPlaceRows& rows, const at::Tensor& mask);
// Detaches every row's fast weight and buffered tokens from the autograd graph.
void detach_rows(InPlaceRows& rows);
// A copy of the rows' states (cheap: steps replace the state tensors, never write into them).
std::shared_ptr<InPlaceRows> copy_rows(const InPlaceRows& rows);
// Rows with exec[b] true keep `now`, the others take their state from `before`.
void restore_rows(InPlaceRows& now, const InPlaceRows& before, const std::vector<bool>& exec);

}  // namespace mtt::moshi
