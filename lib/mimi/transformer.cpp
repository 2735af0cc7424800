#include "mimi/transformer.h"

#include <algorithm>
#include <utility>

#include "mimi/weights.h"
#include "nn/attention_mask.h"
#include "nn/rope.h"

namespace mtt::mimi {

MimiTransformer MimiTransformer::load(WeightStore& w, const TransformerConfig& c, const std::string& prefix) {
  MimiTransformer t;
  t.cfg_ = c;
  const int64_t C = c.d_model, F = c.dim_feedforward;
  for (int l = 0; l < c.num_layers; ++l) {
    const std::string p = prefix + ".transformer.layers." + std::to_string(l) + ".";
    MimiTransformerLayer L;
    L.in_proj.weight = w.take(
        {p + "self_attn.in_proj_weight", p + "self_attn.in_projs.0.weight", p + "self_attn.in_proj.weight"}, {3 * C, C});
    L.out_proj.weight = w.take({p + "self_attn.out_proj.weight", p + "self_attn.out_projs.0.weight"}, {C, C});
    for (auto [norm, name] : {std::pair{&L.norm1, "norm1."}, std::pair{&L.norm2, "norm2."}}) {
      norm->eps = c.norm_eps;
      norm->dim = C;
      norm->weight = w.take(p + name + "weight", {C});
      norm->bias = w.take(p + name + "bias", {C});
    }
    L.linear1.weight = w.take(p + "linear1.weight", {F, C});
    L.linear2.weight = w.take(p + "linear2.weight", {C, F});
    L.scale1 = w.take(p + "layer_scale_1.scale", {C});
    L.scale2 = w.take(p + "layer_scale_2.scale", {C});
    t.layers_.push_back(std::move(L));
  }
  return t;
}

TransformerState MimiTransformer::new_state() const {
  TransformerState st;
  st.layers.resize(layers_.size());
  return st;
}

at::Tensor MimiTransformer::forward(const at::Tensor& x) const { return run(x, nullptr, KvMode::Exact); }
at::Tensor MimiTransformer::step(const at::Tensor& x, TransformerState& st, KvMode mode) const {
  return run(x, &st, mode);
}

namespace {

// Attention of q [B,H,T,D] (positions offset..offset+T-1) over keys k/v [B,H,S,D] at absolute
// positions pos_k [1, S] (-1 = empty slot), windowed to `context` steps (docs/moshi.md §2.3).
at::Tensor attend(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& pos_k,
                  int64_t offset, int64_t context) {
  const at::Tensor offsets = at::full({1}, offset, pos_k.options());
  return at::scaled_dot_product_attention(q, k, v, nn::causal_window_mask(offsets, q.size(2), pos_k, context));
}

}  // namespace

at::Tensor MimiTransformer::run(const at::Tensor& x_conv, TransformerState* st, KvMode mode) const {
  const int64_t C = cfg_.d_model, H = cfg_.num_heads, D = C / H, context = cfg_.context;
  at::Tensor x = x_conv.transpose(1, 2);  // conv_layout: [B, C, T] -> [B, T, C]
  const int64_t B = x.size(0), T = x.size(1);
  const int64_t offset = st ? st->offset : 0;
  auto long_opts = x.options().dtype(at::kLong);
  for (size_t li = 0; li < layers_.size(); ++li) {
    const auto& L = layers_[li];
    // Self-attention block: x + scale1 * attn(norm1(x)).
    at::Tensor h = L.norm1(x);
    at::Tensor qkv = L.in_proj(h).view({B, T, 3, H, D}).permute({2, 0, 3, 1, 4});  // [3,B,H,T,D]
    at::Tensor q = nn::apply_rope(qkv[0], offset, cfg_.max_period);
    at::Tensor k = nn::apply_rope(qkv[1], offset, cfg_.max_period);
    at::Tensor v = qkv[2];
    at::Tensor att;
    if (!st) {
      att = attend(q, k, v, at::arange(T, long_opts).view({1, T}), 0, context);
    } else if (mode == KvMode::Exact) {
      // Past keys (at most context-1, all a query of this chunk can still see) + the new chunk.
      KvCache& kv = st->layers[li];
      at::Tensor K = kv.k.defined() ? at::cat({kv.k, k}, 2) : k;
      at::Tensor V = kv.v.defined() ? at::cat({kv.v, v}, 2) : v;
      const int64_t S = K.size(2);
      at::Tensor pos = at::arange(offset + T - S, offset + T, long_opts).view({1, S});
      att = attend(q, K, V, pos, offset, context);
      const int64_t keep = std::min<int64_t>(S, context - 1);
      kv.k = K.narrow(2, S - keep, keep).contiguous();
      kv.v = V.narrow(2, S - keep, keep).contiguous();
    } else {
      // Upstream RingKVCache (transformer.py:196-288): capacity == context, the chunk is written
      // before attending, slot positions recomputed from the end offset.
      KvCache& kv = st->layers[li];
      if (!kv.ring.defined()) kv.ring = nn::RingKVCache::make(B, H, context, D, k.options());
      auto [K, V, pos] = kv.ring.complete(k, v);
      att = attend(q, K, V, pos, offset, context);
    }
    att = L.out_proj(att.transpose(1, 2).reshape({B, T, C}));
    x = x + L.scale1 * att;
    // MLP block: x + scale2 * linear2(gelu(linear1(norm2(x)))) (gating "none", exact GELU).
    h = L.linear2(at::gelu(L.linear1(L.norm2(x))));
    x = x + L.scale2 * h;
  }
  if (st) st->offset += T;
  return x.transpose(1, 2);
}

void MimiTransformer::to(const at::TensorOptions& o) {
  for (auto& L : layers_) {
    for (at::Tensor* t : {&L.in_proj.weight, &L.out_proj.weight, &L.norm1.weight, &L.norm1.bias, &L.norm2.weight,
                          &L.norm2.bias, &L.linear1.weight, &L.linear2.weight, &L.scale1, &L.scale2})
      *t = t->to(o);
  }
}

}  // namespace mtt::mimi
