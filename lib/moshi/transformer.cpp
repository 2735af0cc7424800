#include "moshi/transformer.h"

#include <cmath>

#include "core/error.h"
#include "moshi/hybrid.h"

namespace mtt::moshi {

at::Tensor Linear::operator()(const at::Tensor& x) const {
  return bias.defined() ? at::linear(x, weight, bias) : at::linear(x, weight);
}

void Linear::collect(const std::string& prefix, NamedTensors& out) {
  out.emplace_back(prefix + "weight", &weight);
  if (bias.defined()) out.emplace_back(prefix + "bias", &bias);
}

at::Tensor Norm::operator()(const at::Tensor& x) const {
  const double eps = norm_eps(kind);
  if (norm_is_rms(kind)) {
    // _rms_norm (transformer.py): var = eps + mean(x^2) over the last dim, y = x * (alpha * rsqrt(var)),
    // in f32 for rms_norm_f32, in x's dtype for rms_norm; cast back to x's dtype.
    at::Tensor xx = norm_is_f32(kind) ? x.to(at::kFloat) : x;
    at::Tensor var = at::mean(xx * xx, {-1}, /*keepdim=*/true) + eps;
    return (xx * (alpha.to(var.scalar_type()) * at::rsqrt(var))).to(x.scalar_type());
  }
  if (norm_is_f32(kind)) {  // LayerNormF32: computed in f32, cast back
    return at::layer_norm(x.to(at::kFloat), {dim}, weight.to(at::kFloat), bias.to(at::kFloat), eps)
        .to(x.scalar_type());
  }
  return at::layer_norm(x, {dim}, weight, bias, eps);
}

void Norm::collect(const std::string& prefix, NamedTensors& out) {
  if (norm_is_rms(kind)) {
    out.emplace_back(prefix + "alpha", &alpha);
  } else {
    out.emplace_back(prefix + "weight", &weight);
    out.emplace_back(prefix + "bias", &bias);
  }
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> KVCache::complete(const at::Tensor& k, const at::Tensor& v) {
  // transformer.py:238-288: step j goes to slot (E + j) % capacity; slot i then holds absolute
  // position L + d (d = i - L % capacity <= 0) or L + d - capacity, L = E + T - 1; unwritten
  // slots get -1.
  const int64_t T = k.size(2);
  const int64_t cap = capacity;
  if (T >= cap) {
    // Only the last `cap` steps survive; write them in order (same final slots as sequential writes).
    for (int64_t j = T - cap; j < T; ++j) {
      const int64_t slot = (end_offset + j) % cap;
      keys.select(2, slot).copy_(k.select(2, j));
      values.select(2, slot).copy_(v.select(2, j));
    }
  } else {
    const int64_t start = end_offset % cap;
    const int64_t first = std::min(T, cap - start);
    keys.narrow(2, start, first).copy_(k.narrow(2, 0, first));
    values.narrow(2, start, first).copy_(v.narrow(2, 0, first));
    if (first < T) {
      keys.narrow(2, 0, T - first).copy_(k.narrow(2, first, T - first));
      values.narrow(2, 0, T - first).copy_(v.narrow(2, first, T - first));
    }
  }
  const int64_t last = end_offset + T - 1;
  const int64_t end_index = last % cap;
  std::vector<int64_t> pos(static_cast<size_t>(cap));
  end_offset += T;
  for (int64_t i = 0; i < cap; ++i) {
    const int64_t d = i - end_index;
    pos[i] = d <= 0 ? last + d : last + d - cap;
    if (i >= end_offset) pos[i] = -1;
  }
  at::Tensor positions = at::tensor(pos, at::TensorOptions().dtype(at::kLong)).to(k.device());
  return {keys, values, positions};
}

std::pair<at::Tensor, at::Tensor> apply_rope(const at::Tensor& q, const at::Tensor& k, int64_t offset,
                                             double max_period, bool interleave) {
  // rope.py:12-82: freqs_i = exp(-ln(max_period) * 2i / D), angles in f32, rotation in f32,
  // cast back to the q/k dtype.
  const int64_t T = q.size(2), D = q.size(3);
  auto f32 = at::TensorOptions().dtype(at::kFloat).device(q.device());
  at::Tensor ds = at::arange(D / 2, f32);
  at::Tensor freqs = at::exp(ds * (-std::log(max_period) * 2.0 / static_cast<double>(D)));
  at::Tensor ts = (at::arange(T, f32) + static_cast<double>(offset)).view({1, 1, T, 1});
  at::Tensor rotr = at::cos(freqs * ts), roti = at::sin(freqs * ts);
  auto rot = [&](const at::Tensor& x) {
    at::Tensor xr, xi;
    if (interleave) {
      at::Tensor v = x.reshape({x.size(0), x.size(1), T, D / 2, 2});
      xr = v.select(-1, 0).to(at::kFloat);
      xi = v.select(-1, 1).to(at::kFloat);
    } else {
      xr = x.narrow(-1, 0, D / 2).to(at::kFloat);
      xi = x.narrow(-1, D / 2, D / 2).to(at::kFloat);
    }
    at::Tensor outr = (xr * rotr - xi * roti).to(x.scalar_type());
    at::Tensor outi = (xr * roti + xi * rotr).to(x.scalar_type());
    if (interleave) return at::stack({outr, outi}, -1).view({x.size(0), x.size(1), T, D});
    return at::cat({outr, outi}, -1);
  };
  return {rot(q), rot(k)};
}

at::Tensor sin_embedding(int64_t offset, int64_t T, int64_t C, double max_period, at::ScalarType dtype) {
  // create_sin_embedding (transformer.py:139-164), computed in the activation dtype as upstream.
  auto o = at::TensorOptions().dtype(dtype);
  const int64_t half = C / 2;
  at::Tensor positions = (at::arange(T, at::TensorOptions().dtype(at::kLong)) + offset).view({1, -1, 1}).to(dtype);
  at::Tensor adim = at::arange(half, o).view({1, 1, -1});
  at::Tensor mp = at::full({}, max_period, o);
  at::Tensor phase = positions / at::pow(mp, adim / static_cast<double>(half - 1));
  return at::cat({at::cos(phase), at::sin(phase)}, -1);
}

at::Tensor TransformerLayer::attention(const at::Tensor& x, int64_t offset, KVCache* kv) const {
  const int64_t B = x.size(0), T = x.size(1), D = cfg->d_model, H = cfg->num_heads, hd = D / H;
  const int64_t sets = static_cast<int64_t>(in_projs.size());
  // apply_weights_per_step (transformer.py:291-318): time index offset + t picks the weight set.
  auto per_step = [&](const std::vector<Linear>& mods, const at::Tensor& in) {
    if (sets == 1) return mods[0](in);
    std::vector<at::Tensor> ys;
    ys.reserve(static_cast<size_t>(T));
    for (int64_t t = 0; t < T; ++t) ys.push_back(mods[cfg->weight_index(offset + t)](in.narrow(1, t, 1)));
    return at::cat(ys, 1);
  };
  at::Tensor projected = per_step(in_projs, x);
  at::Tensor q, k, v;
  const int64_t kvh = H / cfg->kv_repeat;
  if (cfg->kv_repeat == 1) {
    // "b t (p h d) -> p b h t d": rows are [Q heads | K heads | V heads].
    at::Tensor qkv = projected.view({B, T, 3, H, hd}).permute({2, 0, 3, 1, 4});
    q = qkv[0];
    k = qkv[1];
    v = qkv[2];
  } else {
    q = projected.narrow(2, 0, D).view({B, T, H, hd}).transpose(1, 2);
    at::Tensor kvp = projected.narrow(2, D, 2 * kvh * hd).view({B, T, 2, kvh, hd}).permute({2, 0, 3, 1, 4});
    k = kvp[0];
    v = kvp[1];
  }
  const PosEmb pe = cfg->positional_embedding;
  if (pe == PosEmb::rope || pe == PosEmb::sin_rope || pe == PosEmb::rope_concat)
    std::tie(q, k) = apply_rope(q, k, offset, cfg->max_period, pe != PosEmb::rope_concat);

  at::Tensor pos_k;
  if (kv != nullptr) {
    std::tie(k, v, pos_k) = kv->complete(k, v);
  } else {
    k = k.contiguous();
    v = v.contiguous();
    pos_k = at::arange(T, at::TensorOptions().dtype(at::kLong).device(x.device())) + offset;
  }
  if (cfg->kv_repeat > 1) {
    k = k.repeat_interleave(cfg->kv_repeat, 1);
    v = v.repeat_interleave(cfg->kv_repeat, 1);
  }
  std::optional<at::Tensor> mask;
  if (cfg->causal) {
    // attend iff pos_k >= 0, pos_q - pos_k >= 0 and (< context) (transformer.py:574-585)
    at::Tensor pos_q = (at::arange(T, pos_k.options()) + offset).view({-1, 1});
    at::Tensor delta = pos_q - pos_k.view({1, -1});
    at::Tensor m = (pos_k.view({1, -1}) >= 0) & (delta >= 0);
    if (cfg->context) m = m & (delta < *cfg->context);
    mask = m;
  }
  at::Tensor y = at::scaled_dot_product_attention(q, k, v, mask, 0.0, false);
  y = y.transpose(1, 2).reshape({B, T, D});
  return per_step(out_projs, y);
}

at::Tensor TransformerLayer::ffn(const at::Tensor& x, int64_t offset) const {
  const int64_t T = x.size(1);
  if (gating_in.empty()) {
    // linear2(gelu(linear1(x))), exact GELU (transformer.py:695-707).
    return linear2(at::gelu(linear1(x)));
  }
  auto act = [&](const at::Tensor& u) {
    const std::string& g = cfg->gating;
    if (g == "silu") return at::silu(u);
    if (g == "gelu") return at::gelu(u);
    if (g == "relu") return at::relu(u);
    if (g == "sigmoid") return at::sigmoid(u);
    if (g == "tanh") return at::tanh(u);
    if (g == "identity") return u;
    throw Error("", "gating", "unknown activation '" + g + "'");
  };
  auto gated = [&](size_t i, const at::Tensor& in) {
    // gating.py:14-22: first half activated gate, second half linear value.
    at::Tensor u = gating_in[i](in);
    at::Tensor u2 = u.view({u.size(0), u.size(1), 2, -1});
    return gating_out[i](act(u2.select(2, 0)) * u2.select(2, 1));
  };
  if (gating_in.size() == 1) return gated(0, x);
  std::vector<at::Tensor> ys;
  for (int64_t t = 0; t < T; ++t)
    ys.push_back(gated(static_cast<size_t>(cfg->weight_index(offset + t)), x.narrow(1, t, 1)));
  return at::cat(ys, 1);
}

at::Tensor TransformerLayer::forward(const at::Tensor& x, int64_t offset, KVCache* kv, LayerTTTState* ttt) {
  // Pre-norm residual blocks (transformer.py:752-802); residual add in the update's dtype.
  at::Tensor upd = attention(norm1(x), offset, kv);
  if (layer_scale_1.defined()) upd = layer_scale_1 * upd;
  at::Tensor h = x.to(upd.scalar_type()) + upd;
  if (hybrid) h = hybrid->forward(h, ttt);  // fork: attention -> gated TTT -> FFN
  at::Tensor n2 = norm2(h);
  at::Tensor f = ffn_override ? ffn_override(n2, ttt) : ffn(n2, offset);
  if (layer_scale_2.defined()) f = layer_scale_2 * f;
  return h.to(f.scalar_type()) + f;
}

void TransformerLayer::collect(const std::string& prefix, NamedTensors& out) {
  norm1.collect(prefix + "norm1.", out);
  norm2.collect(prefix + "norm2.", out);
  for (size_t i = 0; i < in_projs.size(); ++i) in_projs[i].collect(prefix + "self_attn.in_projs." + std::to_string(i) + ".", out);
  for (size_t i = 0; i < out_projs.size(); ++i) out_projs[i].collect(prefix + "self_attn.out_projs." + std::to_string(i) + ".", out);
  if (gating_in.size() == 1) {
    gating_in[0].collect(prefix + "gating.linear_in.", out);
    gating_out[0].collect(prefix + "gating.linear_out.", out);
  } else {
    for (size_t i = 0; i < gating_in.size(); ++i) {
      gating_in[i].collect(prefix + "gating." + std::to_string(i) + ".linear_in.", out);
      gating_out[i].collect(prefix + "gating." + std::to_string(i) + ".linear_out.", out);
    }
  }
  if (linear1.weight.defined()) {
    linear1.collect(prefix + "linear1.", out);
    linear2.collect(prefix + "linear2.", out);
  }
  if (layer_scale_1.defined()) {
    out.emplace_back(prefix + "layer_scale_1.scale", &layer_scale_1);
    out.emplace_back(prefix + "layer_scale_2.scale", &layer_scale_2);
  }
}

StreamingTransformer::StreamingTransformer(TransformerConfig cfg) : cfg_(std::move(cfg)) {
  const int64_t D = cfg_.d_model, sets = cfg_.num_weight_sets();
  const int64_t kv_dim = (D / cfg_.num_heads) * (cfg_.num_heads / cfg_.kv_repeat);
  // Parameters start on the meta device (no memory): LMModel::init_random() or load() assign them.
  auto empty = [](std::vector<int64_t> shape) {
    return at::empty(shape, at::TensorOptions().dtype(at::kFloat).device(at::kMeta));
  };
  layers_.resize(static_cast<size_t>(cfg_.num_layers));
  for (auto& l : layers_) {
    l.cfg = &cfg_;
    for (Norm* n : {&l.norm1, &l.norm2}) {
      n->kind = cfg_.norm;
      n->dim = D;
      if (norm_is_rms(cfg_.norm)) {
        n->alpha = empty({1, 1, D});
      } else {
        n->weight = empty({D});
        n->bias = empty({D});
      }
    }
    for (int64_t s = 0; s < sets; ++s) {
      l.in_projs.push_back({empty({D + 2 * kv_dim, D}), {}});
      l.out_projs.push_back({empty({D, D}), {}});
    }
    if (cfg_.gating == "none") {
      l.linear1 = {empty({cfg_.dim_feedforward, D}), {}};
      l.linear2 = {empty({D, cfg_.dim_feedforward}), {}};
    } else {
      const int64_t hid = cfg_.gating_hidden();
      for (int64_t s = 0; s < sets; ++s) {
        l.gating_in.push_back({empty({2 * hid, D}), {}});
        l.gating_out.push_back({empty({D, hid}), {}});
      }
    }
    if (cfg_.layer_scale) {
      l.layer_scale_1 = empty({D});
      l.layer_scale_2 = empty({D});
    }
  }
}

TransformerState StreamingTransformer::new_state(int64_t batch, const at::TensorOptions& opts) const {
  TransformerState st;
  st.batch = batch;
  st.offset = 0;
  const int64_t cap = cfg_.kv_capacity();
  if (cap <= 0)
    throw Error("", "context", "streaming needs a finite context (ring KV capacity)", ErrorKind::Usage);
  const int64_t kvh = cfg_.num_heads / cfg_.kv_repeat, hd = cfg_.head_dim();
  for (size_t i = 0; i < layers_.size(); ++i) {
    KVCache c;
    c.capacity = cap;
    c.keys = at::zeros({batch, kvh, cap, hd}, opts);
    c.values = at::zeros({batch, kvh, cap, hd}, opts);
    st.kv.push_back(std::move(c));
    st.ttt.push_back(nullptr);
  }
  return st;
}

at::Tensor StreamingTransformer::forward(const at::Tensor& x_in, TransformerState* state) {
  const int64_t T = x_in.size(1), C = x_in.size(2);
  const int64_t offset = state ? state->offset : 0;
  at::Tensor x = x_in;
  if (cfg_.positional_embedding == PosEmb::sin || cfg_.positional_embedding == PosEmb::sin_rope)
    x = x + cfg_.positional_scale * sin_embedding(offset, T, C, cfg_.max_period, x.scalar_type()).to(x.device());
  for (size_t i = 0; i < layers_.size(); ++i) {
    KVCache* kv = state ? &state->kv[i] : nullptr;
    LayerTTTState* tst = state ? state->ttt[i].get() : nullptr;
    x = layers_[i].forward(x, offset, kv, tst);
  }
  if (state) state->offset += T;
  return x.to(x_in.scalar_type());
}

void StreamingTransformer::collect(const std::string& prefix, NamedTensors& out) {
  for (size_t i = 0; i < layers_.size(); ++i) layers_[i].collect(prefix + "layers." + std::to_string(i) + ".", out);
}

}  // namespace mtt::moshi
