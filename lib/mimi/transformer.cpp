#include "mimi/transformer.h"

#include <cmath>

#include "mimi/weights.h"

namespace mtt::mimi {

at::Tensor apply_rope(const at::Tensor& x, int64_t offset, double max_period) {
  const int64_t B = x.size(0), H = x.size(1), T = x.size(2), D = x.size(3);
  auto f32 = x.options().dtype(at::kFloat);
  // rope.py: freqs_i = exp(i * (-ln(max_period) * 2 / D)), ts = offset + t, both float32.
  at::Tensor ds = at::arange(D / 2, f32);
  at::Tensor freqs = at::exp(ds * (-std::log(max_period) * 2.0 / static_cast<double>(D)));
  at::Tensor ts = at::arange(T, f32) + static_cast<double>(offset);
  at::Tensor ang = ts.view({T, 1}) * freqs.view({1, D / 2});  // [T, D/2]
  at::Tensor c = at::cos(ang), s = at::sin(ang);
  at::Tensor xf = x.to(at::kFloat).view({B, H, T, D / 2, 2});
  at::Tensor xr = xf.select(-1, 0), xi = xf.select(-1, 1);
  at::Tensor outr = xr * c - xi * s;
  at::Tensor outi = xr * s + xi * c;
  return at::stack({outr, outi}, -1).view({B, H, T, D}).to(x.scalar_type());
}

MimiTransformer MimiTransformer::load(WeightStore& w, const TransformerConfig& c, const std::string& prefix) {
  MimiTransformer t;
  t.cfg_ = c;
  const int64_t C = c.d_model, F = c.dim_feedforward;
  for (int l = 0; l < c.num_layers; ++l) {
    const std::string p = prefix + ".transformer.layers." + std::to_string(l) + ".";
    MimiTransformerLayer L;
    L.in_proj = w.take({p + "self_attn.in_proj_weight", p + "self_attn.in_projs.0.weight", p + "self_attn.in_proj.weight"},
                       {3 * C, C});
    L.out_proj = w.take({p + "self_attn.out_proj.weight", p + "self_attn.out_projs.0.weight"}, {C, C});
    L.norm1_w = w.take(p + "norm1.weight", {C});
    L.norm1_b = w.take(p + "norm1.bias", {C});
    L.norm2_w = w.take(p + "norm2.weight", {C});
    L.norm2_b = w.take(p + "norm2.bias", {C});
    L.linear1 = w.take(p + "linear1.weight", {F, C});
    L.linear2 = w.take(p + "linear2.weight", {C, F});
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
// positions pos_k [S] (-1 = empty slot): attend iff pos_k >= 0, 0 <= pos_q - pos_k < context
// (transformer.py:574-585).
at::Tensor attend(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& pos_k,
                  int64_t offset, int64_t context) {
  const int64_t T = q.size(2);
  at::Tensor pos_q = at::arange(offset, offset + T, pos_k.options()).view({T, 1});
  at::Tensor delta = pos_q - pos_k.view({1, -1});
  at::Tensor mask = (pos_k.view({1, -1}) >= 0) & (delta >= 0) & (delta < context);
  return at::scaled_dot_product_attention(q, k, v, mask.view({1, 1, T, -1}));
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
    at::Tensor h = at::layer_norm(x, {C}, L.norm1_w, L.norm1_b, cfg_.norm_eps);
    at::Tensor qkv = at::linear(h, L.in_proj).view({B, T, 3, H, D}).permute({2, 0, 3, 1, 4});  // [3,B,H,T,D]
    at::Tensor q = apply_rope(qkv[0], offset, cfg_.max_period);
    at::Tensor k = apply_rope(qkv[1], offset, cfg_.max_period);
    at::Tensor v = qkv[2];
    at::Tensor att;
    if (!st) {
      att = attend(q, k, v, at::arange(T, long_opts), 0, context);
    } else if (mode == KvMode::Exact) {
      // Past keys (at most context-1, all a query of this chunk can still see) + the new chunk.
      KvCache& kv = st->layers[li];
      at::Tensor K = kv.k.defined() ? at::cat({kv.k, k}, 2) : k;
      at::Tensor V = kv.v.defined() ? at::cat({kv.v, v}, 2) : v;
      const int64_t S = K.size(2);
      at::Tensor pos = at::arange(offset + T - S, offset + T, long_opts);
      att = attend(q, K, V, pos, offset, context);
      const int64_t keep = std::min<int64_t>(S, context - 1);
      kv.k = K.narrow(2, S - keep, keep).contiguous();
      kv.v = V.narrow(2, S - keep, keep).contiguous();
    } else {
      // Upstream RingKVCache (transformer.py:196-288): capacity == context, the chunk is written
      // before attending, slot positions recomputed from the end offset.
      KvCache& kv = st->layers[li];
      const int64_t cap = context;
      if (!kv.k.defined()) {
        kv.k = at::zeros({B, H, cap, D}, k.options());
        kv.v = at::zeros({B, H, cap, D}, v.options());
      }
      for (int64_t j = 0; j < T; ++j) {
        const int64_t slot = (kv.end + j) % cap;
        kv.k.select(2, slot).copy_(k.select(2, j));
        kv.v.select(2, slot).copy_(v.select(2, j));
      }
      at::Tensor idx = at::arange(cap, long_opts);
      const int64_t last = kv.end + T - 1;
      at::Tensor delta = idx - (last % cap);
      at::Tensor pos = at::where(delta <= 0, last + delta, last + delta - cap);
      kv.end += T;
      pos = at::where(idx >= kv.end, at::full_like(pos, -1), pos);
      att = attend(q, kv.k, kv.v, pos, offset, context);
    }
    att = at::linear(att.transpose(1, 2).reshape({B, T, C}), L.out_proj);
    x = x + L.scale1 * att;
    // MLP block: x + scale2 * linear2(gelu(linear1(norm2(x)))) (gating "none", exact GELU).
    h = at::layer_norm(x, {C}, L.norm2_w, L.norm2_b, cfg_.norm_eps);
    h = at::linear(at::gelu(at::linear(h, L.linear1)), L.linear2);
    x = x + L.scale2 * h;
  }
  if (st) st->offset += T;
  return x.transpose(1, 2);
}

void MimiTransformer::to(const at::TensorOptions& o) {
  for (auto& L : layers_) {
    for (at::Tensor* t : {&L.in_proj, &L.out_proj, &L.norm1_w, &L.norm1_b, &L.norm2_w, &L.norm2_b, &L.linear1,
                          &L.linear2, &L.scale1, &L.scale2})
      *t = t->to(o);
  }
}

}  // namespace mtt::mimi
