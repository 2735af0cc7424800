#pragma once
// Mimi's encoder/decoder transformer (docs/moshi.md §5.3, upstream ProjectedTransformer with
// d_model == dimension, so no projections): pre-norm LayerNorm layers with LayerScale, causal
// self-attention with interleaved RoPE (§2.4) and a local window of `context` steps (§2.3),
// GELU MLP without biases. Input/output in conv layout [B, C, T]. Norms, linears, RoPE, the ring
// and the mask are the LM's own (lib/nn), as moshi's transformer.rs serves lm.rs and mimi.rs.
#include <ATen/ATen.h>

#include <string>
#include <vector>

#include "mimi/config.h"
#include "nn/kv_ring.h"
#include "nn/linear.h"
#include "nn/norms.h"

namespace mtt::mimi {

class WeightStore;

struct MimiTransformerLayer {
  nn::Linear in_proj;   // [3*C, C]: [Q heads | K heads | V heads] (§2.3), no bias
  nn::Linear out_proj;  // [C, C]
  nn::Norm norm1, norm2;        // LayerNorm, eps from the config
  nn::Linear linear1, linear2;  // [F, C], [C, F]
  at::Tensor scale1, scale2;    // LayerScale [C]
};

struct KvCache {
  at::Tensor k, v;       // Exact: [B, H, L, D] past keys, L <= context-1
  nn::RingKVCache ring;  // UpstreamRing: capacity == context, made at the first step
};

struct TransformerState {
  int64_t offset = 0;  // position of the next step (RoPE and mask)
  std::vector<KvCache> layers;
};

class MimiTransformer {
 public:
  // prefix "encoder_transformer" / "decoder_transformer"; accepts the released file's fused
  // legacy names (`in_proj_weight`, `out_proj.weight`) and the module names (§5.6).
  static MimiTransformer load(WeightStore& w, const TransformerConfig& c, const std::string& prefix);

  at::Tensor forward(const at::Tensor& x) const;  // offline, positions 0..T-1
  at::Tensor step(const at::Tensor& x, TransformerState& st, KvMode mode) const;
  TransformerState new_state() const;
  void to(const at::TensorOptions& o);
  const TransformerConfig& config() const { return cfg_; }

 private:
  at::Tensor run(const at::Tensor& x, TransformerState* st, KvMode mode) const;
  TransformerConfig cfg_;
  std::vector<MimiTransformerLayer> layers_;
};

}  // namespace mtt::mimi
