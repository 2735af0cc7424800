#pragma once
// In-Place Test-Time Training (docs/ttt.md §8; Feng et al., ICLR 2026): a gated FFN whose down
// projection is a fast weight updated chunk by chunk from a learned target.
//
//   Z   = act(x·W_gateᵀ) ⊙ (x·W_upᵀ)                         [B, T, h]   (slow weights)
//   V̂   = TargetProj(Conv(t))  per chunk of C tokens          [B, T, D]   (t = target source)
//   Δ_i = V̂_iᵀ Z_i  (optionally Frobenius-clipped)            [D, h]
//   W^(i) = W0 + lr · Σ_{j<i} Δ_j                             (exclusive prefix sum)
//   y_i = Z_i · W^(i)ᵀ                                        "apply, then update"
//
// Two variants (docs/ttt.md §8), one implementation:
//  - moshi_port  (IPMOSHI moshi/modules/ttt_module.py, the checkpoints of docs/checkpoint-keys.md §2):
//    dense Conv1d(D, D, k=2, no bias) with k−1 zero tokens on the right (current + next token),
//    then W_target as nn.Linear (V̂ = c·W_targetᵀ); Moshi's fused `linear_in` [2h, D];
//    fast weight `w_down` [D, h] (+ buffer `w_down_pretrained`); optional clip of each Δ to
//    `delta_clip_fro_norm` (default 1e-5) with scale = min(1, c / (‖Δ‖_F + 1e-12)).
//    `linear_out` exists in the checkpoint but the TTT path never reads it.
//  - official    (IPTTT hf_qwen3/modeling_qwen3.py:L72-138): depthwise Conv1d(D, k=5, padding 2,
//    no bias) per chunk, then `ttt_proj` contracted over its *first* index (V̂ = c·ttt_proj.weight,
//    the einsum "b t c d, d e"), optional; `gate_proj`/`up_proj`/`down_proj`; no clip.
// Both apply the conv inside each chunk only (zero padding at chunk edges), pad T to a multiple
// of C with zero tokens and never let a chunk see its own delta.
//
// Parameters are W0 and never written in the functional mode (docs/architecture.md "Parameters are W0;
// state is separate"): forward() computes the whole sequence from W0; step() streams, keeping the
// adapted fast weight and the tokens of the incomplete chunk in an InPlaceTTTState. The port's
// streaming behaviour (V̂ computed per call, so the last token's conv sees a zero "next token";
// the update written into w_down.data, batch 1 only; ttt_module.py:L203-269, L455-480) is the
// named legacy option FastWeightMode::legacy_in_place.
#include <map>
#include <optional>
#include <string>

#include <ATen/ATen.h>
#include <torch/nn/module.h>

namespace mtt::ttt {

enum class InPlaceVariant { moshi_port, official };
enum class FastWeightMode { functional, legacy_in_place };
// The port passes the layer's default F.gelu (exact erf) although Moshi's gating is silu
// (golden README, inplace_ttt_*); Qwen3/Llama use silu.
enum class GatedActivation { gelu_erf, gelu_tanh, silu };

struct InPlaceTTTOptions {
  InPlaceVariant variant = InPlaceVariant::moshi_port;
  int64_t dim = 0;
  int64_t hidden = 0;              // gated-FFN hidden size h
  int64_t chunk_size = 256;        // C (port default 256; official code 8192, configs 4096)
  double lr = 1e-3;                // port default 1e-3; official code 0.3, configs 3
  int64_t conv_kernel_size = 2;    // port 2 (right padding); official 5 (symmetric padding)
  std::optional<double> delta_clip_fro_norm = 1e-5;  // nullopt or <= 0: no clip
  double delta_clip_epsilon = 1e-12;
  bool use_target_proj = true;     // official `ttt_proj` is optional; the port always has W_target
  GatedActivation activation = GatedActivation::gelu_erf;
  FastWeightMode fast_weight_mode = FastWeightMode::functional;
  double lora_scaling = 2.0;       // moshi-finetune LoraArgs.scaling default, for W_target.frozen_W + lora_*

  // Port defaults (IPMOSHI moshi-finetune/finetune/args.py:L31-41); h from Moshi's rule:
  // 21·D/8 when dim_feedforward = 4D, else 2·dim_feedforward/3 (gating.py:L55-61).
  static InPlaceTTTOptions moshi_port(int64_t dim, int64_t dim_feedforward);
  // Official code defaults (chunk 8192, lr 0.3, k 5, ttt_proj on, silu, no clip).
  static InPlaceTTTOptions official(int64_t dim, int64_t hidden);
};

int64_t moshi_gating_hidden(int64_t dim, int64_t dim_feedforward);

// Per-sequence streaming state (functional mode): the adapted fast weight and the incomplete chunk.
struct InPlaceTTTState {
  at::Tensor w_down;  // [B, D, h], compute dtype (fp32 or wider): W0 + lr·Σ(deltas of complete chunks)
  at::Tensor z_buf;   // [B, n, h] gated hidden of the n < C tokens of the incomplete chunk
  at::Tensor t_buf;   // [B, n, D] functional: target-source tokens (the conv runs when the chunk completes)
                      //           legacy_in_place: V̂ of those tokens, computed per call as the port does
  int64_t tokens_seen = 0;
  int64_t chunks_done = 0;
  int64_t buffered() const { return z_buf.defined() ? z_buf.size(1) : 0; }
  // Cuts the autograd graph carried by the state (truncated BPTT between chunks of one file).
  void detach_() {
    for (at::Tensor* t : {&w_down, &z_buf, &t_buf}) {
      if (t->defined()) *t = t->detach();
    }
  }
};

class InPlaceTTT : public torch::nn::Module {
 public:
  explicit InPlaceTTT(const InPlaceTTTOptions& options);

  struct Output {
    at::Tensor y;        // [B, T, D], dtype of x
    at::Tensor v_hat;    // [B, T, D] target-generator output (per-chunk conv)
    at::Tensor w_final;  // [B, D, h] W0 + lr·Σ Δ over every complete chunk (what a stream would carry on)
  };

  // Parallel (training) path over whole sequences, starting from W0. x [B, T, D]; target_source
  // [B, T, D] (the port: summed token embeddings; official default: the MLP input x itself).
  Output forward(const at::Tensor& x, const at::Tensor& target_source) const;
  // The FFN without TTT: Z·W0ᵀ (what the model computes when V̂ ≡ 0).
  at::Tensor forward_no_ttt(const at::Tensor& x) const;

  // Building blocks (exposed for tests and the gradient-flow probe).
  at::Tensor gated_hidden(const at::Tensor& x) const;              // Z [B, T, h], dtype of x
  at::Tensor target(const at::Tensor& target_source) const;        // V̂ [B, T, D], conv within chunks
  at::Tensor target_chunk(const at::Tensor& source_chunk) const;   // V̂ of one chunk [B, n ≤ C, D]
  at::Tensor chunk_delta(const at::Tensor& v_hat, const at::Tensor& z) const;  // clipped Δ [B, D, h]

  // Streaming. init_state: W0 tiled over the batch, empty buffers.
  InPlaceTTTState init_state(int64_t batch) const;
  // Consumes T ≥ 1 new tokens. Functional: token p of chunk k is computed with W0 + lr·Σ_{j<k} Δ_j,
  // exactly as forward() over the concatenated stream. legacy_in_place: the port's eval path.
  at::Tensor step(const at::Tensor& x, const at::Tensor& target_source, InPlaceTTTState& state);
  // Legacy only: applies the buffered incomplete chunk (the port's flush_ttt_buffers).
  void flush(InPlaceTTTState& state);
  // Resets the stream to W0 (functional) / writes w_down_pretrained back into w_down (legacy).
  void reset(InPlaceTTTState& state);

  // Loads this module's tensors from `prefix` + checkpoint names. Accepts the LoRA form of the
  // port's W_target (`W_target.frozen_W.weight` + `lora_A/lora_B.weight`, merged as
  // frozen + scaling·B·A) and fills `w_down_pretrained` from `w_down` when a file lacks it.
  void load(const std::map<std::string, at::Tensor>& tensors, const std::string& prefix, const std::string& file);

  const InPlaceTTTOptions& options() const { return options_; }
  // Checkpoint names of the tensors the TTT forward reads (the audit's "consumed" list).
  std::vector<std::string> consumed_names() const;

  // Parameters (names depend on the variant; see the constructor).
  at::Tensor w_gate_up;        // port `linear_in.weight` [2h, D] (gate rows first)
  at::Tensor w_gate, w_up;     // official `gate_proj.weight`, `up_proj.weight` [h, D]
  at::Tensor linear_out;       // port `linear_out.weight` [D, h] (not read by the TTT path)
  at::Tensor w_down;           // port `w_down`, official `down_proj.weight` [D, h]: W0
  at::Tensor w_down_pretrained;  // port buffer [D, h]
  at::Tensor conv_weight;      // port [D, D, k] `target_generator.conv1d.conv.weight`; official [D, 1, k] `ttt_conv.weight`
  at::Tensor target_proj;      // port [D, D] `target_generator.W_target.weight`; official `ttt_proj.weight`

 private:
  at::Tensor conv_chunks(const at::Tensor& chunks) const;  // [N, n, D] -> [N, n, D]
  at::ScalarType compute_dtype(const at::Tensor& like) const;
  InPlaceTTTOptions options_;
};

}  // namespace mtt::ttt
