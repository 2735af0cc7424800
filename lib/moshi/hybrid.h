#pragma once
// The Moshi-TTT fork's hybrid layer (checkpoint-keys.md §1; ttt.md §4, §6): Moshi's attention
// block, then the gated TTT branch, then Moshi's FFN block:
//     h = x + SA(norm1(x));   h' = h + tanh(clamp(alpha_f, -3, 3)) * TTT(h);   y = h' + FFN(norm2(h'))
// (FORK moshi_ttt/hybrid_layer.py:L281-348). The TTT module is lib/ttt's TTTLayer configured as the
// fork's TTTWrapper (VDIT layer, target LN eps 1e-5, inner LN eps 1e-8, dit eta, no RoPE, output
// skips post_norm/wo); the gates are lib/ttt's SSMGating (fork clamp). Full-sequence calls pad the
// input with zero tokens to a multiple of the mini-batch b and trim (fork hybrid_layer.py:L330-348);
// streaming calls carry the per-element TTT state (persistent_states) in the LM's streaming state.
#include <ATen/ATen.h>
#include <memory>
#include <string>
#include <vector>

#include "moshi/config.h"
#include "moshi/transformer.h"
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

class HybridBlock {
 public:
  HybridBlock(const LMConfig& cfg, int layer);
  // h [B, T, D] (attention output with residual) -> h + gate * TTT(h). state == nullptr:
  // full-sequence pass from W0 (padded to a multiple of b); otherwise the persistent state.
  at::Tensor forward(const at::Tensor& h, LayerTTTState* state);
  // Parameters under their fork names relative to the layer prefix:
  // seq_modeling_block.ttt_layer.ttt.*, seq_modeling_block.{forward,backward}_ssm_gating.gating_alpha.
  void collect(const std::string& layer_prefix, NamedTensors& out);
  void to(at::ScalarType dtype);
  void set_requires_grad(bool on);
  std::shared_ptr<LayerTTTState> new_state(int64_t batch) const;

  ttt::TTTLayer& ttt_layer() { return *ttt_; }
  ttt::SSMGating& forward_gate() { return *forward_gate_; }
  ttt::SSMGating& backward_gate() { return *backward_gate_; }

 private:
  ttt::TTTConfig tcfg_;
  std::unique_ptr<ttt::TTTLayer> ttt_;
  std::shared_ptr<ttt::SSMGating> forward_gate_, backward_gate_;
};

}  // namespace mtt::moshi
