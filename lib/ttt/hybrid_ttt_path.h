#pragma once
// The TTT sub-path of the Moshi-TTT fork's HybridSeqModelingBlock (docs/ttt.md §4, §6;
// FORK moshi_ttt/hybrid_layer.py:L281-348): the input (the attention block's output, residual
// already added, not normalised) is zero-padded on the right to a multiple of the mini-batch b,
// run through the fork's TTTWrapper (L2-norm, target LN eps 1e-5, VDIT non-causal eta, inner LN
// eps 1e-8, NO post_norm/wo), trimmed, and added back through the forward gate:
//     y = x + tanh(clamp(α_f, −3, 3)) ⊙ TTT(x)
// `backward_ssm_gating` is created and saved like the fork's but never read in this direction
// (its gradient is exactly zero, as are those of the dead wo/post_norm; docs/checkpoint-keys.md §1.4).
//
// Direction::bidirectional is VDIT's DiT pass (dit.py:L224-266): after the forward residual e,
// the same TTT module (shared parameters) runs on the time-reversed e, is un-reversed and added
// through the backward gate: y = e + tanh(α_b) ⊙ rev(TTT(rev(e))).
//
// Parameter names are HybridSeqModelingBlock.state_dict() names: `ttt_layer.ttt.<TTT name>`,
// `forward_ssm_gating.gating_alpha`, `backward_ssm_gating.gating_alpha`.
//
// This is the one implementation of the fork's TTT branch: the Moshi LM's hybrid layers
// (lib/moshi/hybrid.h) own one per converted layer. The TTT runs in its parameters' dtype (f32, or
// f64 for gradient checks) whatever the residual's dtype; the gated branch is cast back to the
// residual's dtype before the addition, as the fork does (hybrid_layer.py:L281-318).
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <ATen/ATen.h>

#include "ttt/ssm_gating.h"
#include "ttt/ttt_layer.h"

namespace mtt::ttt {

enum class HybridDirection { forward_only, bidirectional };

struct HybridTTTPathOptions {
  TTTConfig ttt;
  SSMGatingOptions gating;
  HybridDirection direction = HybridDirection::forward_only;
  // Fork: pad tokens take part in the inner updates (the pad mask is built but never used).
  PadUpdates pad_updates = PadUpdates::legacy;
  // What a call with a state keeps (variants.h): persistent (the state carries over), the fork's
  // 2-layer streaming (every call restarts from W0, the state is left untouched) or its multi-layer
  // eval streaming (fork_batch0: every element continues from element 0's end state).
  StreamingState streaming_state = StreamingState::persistent;

  // The fork as released: TTT-MLP, base_lr from TTTConfig (training args default 1.0), gating 0.1
  // with the clamp, forward direction only, skip post_norm/wo, no RoPE (use_rope False).
  static HybridTTTPathOptions fork(int64_t D, int64_t H, int64_t b, double base_lr = 1.0,
                                   double gating_alpha_init = 0.1);
};

class HybridTTTPath {
 public:
  explicit HybridTTTPath(const HybridTTTPathOptions& options, uint64_t seed = 0);

  struct Output {
    at::Tensor y;             // [B, L, D] residual + gated TTT (both directions when bidirectional)
    at::Tensor ttt_out;       // [B, L, D] forward-direction TTT output before gating
    at::Tensor ttt_out_back;  // [B, L, D] backward-direction TTT output (bidirectional only)
  };

  // x [B, L, D] in any dtype, any L ≥ 1. `state` as TTTLayer::forward (nullptr: every call starts
  // from W0, as the fork with persistent_states = False; StreamingState::fork_restart treats every
  // state as nullptr); the backward direction never uses a persistent state.
  Output forward(const at::Tensor& x, TTTState* state = nullptr);

  std::vector<std::pair<std::string, at::Tensor>> named_parameters() const;
  // Names the forward pass reads in this configuration (the audit's "consumed" set).
  std::vector<std::string> consumed_names() const;
  void load(const std::map<std::string, at::Tensor>& tensors, const std::string& prefix = "",
            const std::string& file = "");
  void to(at::ScalarType dtype);
  void set_requires_grad(bool on);

  TTTLayer& ttt_layer() { return *ttt_; }
  SSMGating& forward_ssm_gating() { return *forward_gate_; }
  SSMGating& backward_ssm_gating() { return *backward_gate_; }
  const HybridTTTPathOptions& options() const { return options_; }

 private:
  at::Tensor run_ttt(const at::Tensor& x, TTTState* state);  // pad to a multiple of b, TTT, trim
  HybridTTTPathOptions options_;
  std::unique_ptr<TTTLayer> ttt_;
  std::shared_ptr<SSMGating> forward_gate_, backward_gate_;
};

}  // namespace mtt::ttt
