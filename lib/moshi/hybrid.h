#pragma once
// The Moshi-TTT fork's hybrid layer (docs/checkpoint-keys.md §1; docs/ttt.md §4, §6): Moshi's attention
// block, then the gated TTT branch, then Moshi's FFN block:
//     h = x + SA(norm1(x));   h' = h + tanh(clamp(alpha_f, -3, 3)) * TTT(h);   y = h' + FFN(norm2(h'))
// (FORK moshi_ttt/hybrid_layer.py:L281-348). The branch is lib/ttt's HybridTTTPath (the one
// implementation of it): TTTLayer configured as the fork's TTTWrapper (VDIT layer, target LN eps
// 1e-5, inner LN eps 1e-8, dit eta, no RoPE, output skips post_norm/wo) and SSMGating gates (fork
// clamp). Every call pads the input with zero tokens to a multiple of the mini-batch b and trims
// (fork hybrid_layer.py:L330-348); streaming calls carry the per-element TTT state in the LM's
// streaming state (ttt.streaming_state persistent) or restart from W0 every call as the fork's
// 2-layer TTTMLP does (fork_restart). ttt.multilayer_query picks the query pass of a >= 3-layer
// inner MLP (dual, or the fork's fork_updated).
#include <ATen/ATen.h>
#include <memory>
#include <string>
#include <vector>

#include "moshi/config.h"
#include "moshi/transformer.h"
#include "ttt/hybrid_ttt_path.h"
#include "ttt/ssm_gating.h"
#include "ttt/ttt_layer.h"

namespace mtt::moshi {

struct InPlaceRows;  // moshi/inplace.h (opaque here: keeps <torch/nn/module.h> out of this header)

// The TTT part of one layer's streaming state, per batch row.
struct LayerTTTState {
  ttt::TTTState ttt;                    // adapted inner weights (fork hybrid), per batch element
  std::shared_ptr<InPlaceRows> inplace;  // In-Place fast weights and chunk buffers (inplace variant)
  // Rows with mask[b] (bool [B]) restart from W0; the others are untouched.
  void reset(const at::Tensor& mask);
  // Cuts the autograd graph carried by both kinds of state (truncated BPTT between chunks).
  void detach_();
  // Exec mask support: a copy of the rows with exec[b] false, and their restoration after a step
  // in which they took part (their state must not move, streaming.py set_exec_mask).
  std::unique_ptr<LayerTTTState> snapshot(const std::vector<bool>& exec) const;
  void restore(const LayerTTTState& kept, const std::vector<bool>& exec);
};

// The HybridTTTPath options of layer `layer` of the LM (the fork's TTTWrapper with the LM's TTT
// settings: heads = the LM's num_heads, inner depth/widths, base_lr, gate init, RoPE, output path,
// scan groups, fork-exact variants).
ttt::HybridTTTPathOptions hybrid_path_options(const LMConfig& cfg, int layer);

class HybridBlock {
 public:
  HybridBlock(const LMConfig& cfg, int layer);
  // h [B, T, D] (attention output with residual) -> h + gate * TTT(h). state == nullptr:
  // full-sequence pass from W0 (padded to a multiple of b); otherwise the streaming state.
  at::Tensor forward(const at::Tensor& h, LayerTTTState* state);
  // Parameters under their fork names relative to the layer prefix:
  // seq_modeling_block.ttt_layer.ttt.*, seq_modeling_block.{forward,backward}_ssm_gating.gating_alpha.
  void collect(const std::string& layer_prefix, ParamList& out);
  void to(at::ScalarType dtype);
  void set_requires_grad(bool on);
  std::shared_ptr<LayerTTTState> new_state(int64_t batch) const;

  ttt::HybridTTTPath& path() { return *path_; }
  ttt::TTTLayer& ttt_layer() { return path_->ttt_layer(); }
  ttt::SSMGating& forward_gate() { return path_->forward_ssm_gating(); }
  ttt::SSMGating& backward_gate() { return path_->backward_ssm_gating(); }

 private:
  std::unique_ptr<ttt::HybridTTTPath> path_;
};

}  // namespace mtt::moshi
