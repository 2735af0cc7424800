#include "moshi/transformer.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "moshi/hybrid.h"
#include "moshi/inplace.h"
#include "nn/attention_mask.h"
#include "nn/rope.h"
#include "nn/sin_embedding.h"

namespace mtt::moshi {

Norm make_norm(NormKind kind, int64_t dim) {
  return Norm::make(norm_is_rms(kind), norm_is_f32(kind), norm_eps(kind), dim,
                    at::TensorOptions().dtype(at::kFloat).device(at::kMeta));
}

namespace {

bool all_equal(const std::vector<int64_t>& v) {
  return std::all_of(v.begin(), v.end(), [&](int64_t x) { return x == v.front(); });
}

}  // namespace

bool TransformerState::uniform() const { return offsets.empty() || all_equal(offsets); }

void TransformerState::reset(const at::Tensor& mask_in) {
  at::Tensor mask = mask_in.to(at::kCPU).to(at::kBool).contiguous();
  if (mask.dim() != 1 || mask.size(0) != batch)
    throw Error("", "reset_mask", "expected a bool mask of " + std::to_string(batch) + " rows", ErrorKind::Usage);
  std::vector<bool> m(static_cast<size_t>(batch));
  for (int64_t b = 0; b < batch; ++b) m[static_cast<size_t>(b)] = mask[b].item<bool>();
  for (int64_t b = 0; b < batch; ++b)
    if (m[static_cast<size_t>(b)]) offsets[static_cast<size_t>(b)] = 0;
  offset_cpu = 0;  // _MHAState / _LayerState.reset set offset_cpu = 0 whatever the mask
  for (auto& c : kv) c.reset(m);
  for (auto& t : ttt)
    if (t) t->reset(mask);
  for (size_t b = 0; b < exec.size(); ++b)
    if (m[b]) exec[b] = true;  // State.reset: reset rows execute again
}

void TransformerState::set_exec_mask(const at::Tensor& mask_in) {
  at::Tensor mask = mask_in.to(at::kCPU).to(at::kBool).contiguous();
  if (mask.dim() != 1 || mask.size(0) != batch)
    throw Error("", "exec_mask", "expected a bool mask of " + std::to_string(batch) + " rows", ErrorKind::Usage);
  exec.assign(static_cast<size_t>(batch), true);
  for (int64_t b = 0; b < batch; ++b) exec[static_cast<size_t>(b)] = mask[b].item<bool>();
}

bool StepPositions::all_exec() const {
  return std::all_of(exec.begin(), exec.end(), [](bool e) { return e; });
}

at::Tensor StepPositions::tensor(const at::Device& device) const {
  return at::tensor(offsets, at::TensorOptions().dtype(at::kLong)).to(device);
}

at::Tensor TransformerLayer::attention(const at::Tensor& x, const StepPositions& pos, RingKVCache* kv) const {
  const int64_t B = x.size(0), T = x.size(1), D = cfg->d_model, H = cfg->num_heads, hd = D / H;
  const int64_t sets = static_cast<int64_t>(in_projs.size());
  // apply_weights_per_step (transformer.py:291-318): host step offset_cpu + t picks the weight set.
  auto per_step = [&](const std::vector<Linear>& mods, const at::Tensor& in) {
    if (sets == 1) return mods[0](in);
    std::vector<at::Tensor> ys;
    ys.reserve(static_cast<size_t>(T));
    for (int64_t t = 0; t < T; ++t) ys.push_back(mods[cfg->weight_index(pos.offset_cpu + t)](in.narrow(1, t, 1)));
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
  const at::Tensor offsets = pos.tensor(x.device());  // [B or 1]
  const PosEmb pe = cfg->positional_embedding;
  if (pe == PosEmb::rope || pe == PosEmb::sin_rope || pe == PosEmb::rope_concat)
    std::tie(q, k) = nn::apply_rope(q, k, offsets, cfg->max_period, pe != PosEmb::rope_concat);

  at::Tensor pos_k;  // [B or 1, S]
  const at::Tensor steps = at::arange(T, at::TensorOptions().dtype(at::kLong).device(x.device()));
  if (kv != nullptr) {
    std::tie(k, v, pos_k) = kv->complete(k, v, pos.exec);
  } else {
    k = k.contiguous();
    v = v.contiguous();
    pos_k = steps.view({1, -1}) + offsets.view({-1, 1});
  }
  if (cfg->kv_repeat > 1) {
    k = k.repeat_interleave(cfg->kv_repeat, 1);
    v = v.repeat_interleave(cfg->kv_repeat, 1);
  }
  std::optional<at::Tensor> mask;
  if (cfg->causal) mask = nn::causal_window_mask(offsets, T, pos_k, cfg->context);  // per row
  at::Tensor y;
  if (q.scalar_type() == at::kFloat || q.scalar_type() == at::kDouble) {
    y = at::scaled_dot_product_attention(q, k, v, mask, 0.0, false);
  } else {
    // bf16/f16 compute: scores and softmax in f32 (docs/conventions.md, statistics in fp32), the
    // result cast back to the compute dtype.
    y = at::scaled_dot_product_attention(q.to(at::kFloat), k.to(at::kFloat), v.to(at::kFloat), mask, 0.0, false)
            .to(q.scalar_type());
  }
  y = y.transpose(1, 2).reshape({B, T, D});
  return per_step(out_projs, y);
}

at::Tensor TransformerLayer::ffn(const at::Tensor& x, int64_t offset_cpu) const {
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
    ys.push_back(gated(static_cast<size_t>(cfg->weight_index(offset_cpu + t)), x.narrow(1, t, 1)));
  return at::cat(ys, 1);
}

at::Tensor TransformerLayer::forward(const at::Tensor& x, const StepPositions& pos, RingKVCache* kv, LayerTTTState* ttt,
                                     const at::Tensor& target_source) {
  // Pre-norm residual blocks (transformer.py:752-802); residual add in the update's dtype.
  at::Tensor upd = attention(norm1(x), pos, kv);
  if (layer_scale_1.defined()) upd = layer_scale_1 * upd;
  at::Tensor h = x.to(upd.scalar_type()) + upd;
  // Rows that do not execute keep their TTT state: snapshot them, restore after the step.
  std::unique_ptr<LayerTTTState> kept;
  if (ttt && !pos.all_exec()) kept = ttt->snapshot(pos.exec);
  if (hybrid) h = hybrid->forward(h, ttt);  // fork: attention -> gated TTT -> FFN
  at::Tensor n2 = norm2(h);
  // In-Place TTT replaces the gated FFN's down projection by the fast weight (docs/ttt.md §8).
  at::Tensor f = inplace ? inplace->forward(*this, n2, target_source, ttt) : ffn(n2, pos.offset_cpu);
  if (kept) ttt->restore(*kept, pos.exec);
  if (layer_scale_2.defined()) f = layer_scale_2 * f;
  return h.to(f.scalar_type()) + f;
}

void TransformerLayer::collect(const std::string& prefix, ParamList& out) {
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
    out.push_back({prefix + "layer_scale_1.scale", &layer_scale_1, {nn::ParamInit::layer_scale}});
    out.push_back({prefix + "layer_scale_2.scale", &layer_scale_2, {nn::ParamInit::layer_scale}});
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
    l.norm1 = make_norm(cfg_.norm, D);
    l.norm2 = make_norm(cfg_.norm, D);
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
  st.offsets.assign(static_cast<size_t>(batch), 0);
  const int64_t cap = cfg_.kv_capacity();
  if (cap <= 0)
    throw Error("", "context", "streaming needs a finite context (ring KV capacity)", ErrorKind::Usage);
  const int64_t kvh = cfg_.num_heads / cfg_.kv_repeat, hd = cfg_.head_dim();
  for (size_t i = 0; i < layers_.size(); ++i) {
    st.kv.push_back(RingKVCache::make(batch, kvh, cap, hd, opts));
    st.ttt.push_back(nullptr);
  }
  return st;
}

at::Tensor StreamingTransformer::forward(const at::Tensor& x_in, TransformerState* state,
                                         const at::Tensor& target_source) {
  const int64_t T = x_in.size(1), C = x_in.size(2);
  StepPositions pos;
  if (state) {
    if (static_cast<int64_t>(state->offsets.size()) != x_in.size(0))
      throw Error("", "state", "streaming state has " + std::to_string(state->offsets.size()) + " rows, input " +
                                   std::to_string(x_in.size(0)), ErrorKind::Usage);
    if (state->uniform()) pos.offsets = {state->offsets.empty() ? 0 : state->offsets[0]};
    else pos.offsets = state->offsets;
    pos.offset_cpu = state->offset_cpu;
    if (!std::all_of(state->exec.begin(), state->exec.end(), [](bool e) { return e; })) pos.exec = state->exec;
  }
  at::Tensor x = x_in;
  if (cfg_.positional_embedding == PosEmb::sin || cfg_.positional_embedding == PosEmb::sin_rope)
    x = x + cfg_.positional_scale * nn::sin_embedding(pos.tensor(x.device()), T, C, cfg_.max_period, x.scalar_type());
  for (size_t i = 0; i < layers_.size(); ++i) {
    RingKVCache* kv = state ? &state->kv[i] : nullptr;
    LayerTTTState* tst = state ? state->ttt[i].get() : nullptr;
    x = layers_[i].forward(x, pos, kv, tst, target_source);
  }
  if (state) {
    // offsets move only where the row executes; offset_cpu always (transformer.py).
    for (size_t b = 0; b < state->offsets.size(); ++b)
      if (pos.exec.empty() || pos.exec[b]) state->offsets[b] += T;
    state->offset_cpu += T;
  }
  return x.to(x_in.scalar_type());
}

void StreamingTransformer::collect(const std::string& prefix, ParamList& out) {
  for (size_t i = 0; i < layers_.size(); ++i) layers_[i].collect(prefix + "layers." + std::to_string(i) + ".", out);
}

}  // namespace mtt::moshi
