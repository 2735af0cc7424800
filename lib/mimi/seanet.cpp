#include "mimi/seanet.h"

#include <cmath>

#include "mimi/weights.h"

namespace mtt::mimi {
namespace {

std::string key(const std::string& prefix, size_t idx, const std::string& rest) {
  return prefix + ".model." + std::to_string(idx) + rest;
}

SeanetLayer elu() { return SeanetLayer{}; }

SeanetLayer conv(WeightStore& w, const std::string& prefix, size_t idx, int in, int out, int k, int stride = 1) {
  SeanetLayer l;
  l.kind = SeanetLayer::Conv;
  l.conv = Conv1d::load(w, key(prefix, idx, ".conv.conv"), in, out, k, stride, 1, 1, true, false);
  return l;
}

// SEANetResnetBlock (seanet.py:20-93): block.0 ELU, block.1 conv k=residual_kernel_size with
// dilation, block.2 ELU, block.3 conv k=1; hidden = dim / compress.
SeanetLayer residual(WeightStore& w, const std::string& prefix, size_t idx, int dim, const SeanetConfig& c, int dilation) {
  SeanetLayer l;
  l.kind = SeanetLayer::Residual;
  const int hidden = dim / c.compress;
  l.conv = Conv1d::load(w, key(prefix, idx, ".block.1.conv.conv"), dim, hidden, c.residual_kernel_size, 1, dilation,
                        1, true, false);
  l.conv2 = Conv1d::load(w, key(prefix, idx, ".block.3.conv.conv"), hidden, dim, 1, 1, 1, 1, true, false);
  return l;
}

}  // namespace

Seanet Seanet::encoder(WeightStore& w, const SeanetConfig& c, const std::string& prefix) {
  // seanet.py:169-236; the encoder walks the ratios in reverse (4,5,6,8).
  Seanet s;
  auto& L = s.layers_;
  int mult = 1;
  L.push_back(conv(w, prefix, L.size(), c.channels, mult * c.n_filters, c.kernel_size));
  for (auto it = c.ratios.rbegin(); it != c.ratios.rend(); ++it) {
    const int r = *it;
    for (int j = 0; j < c.n_residual_layers; ++j)
      L.push_back(residual(w, prefix, L.size(), mult * c.n_filters, c, static_cast<int>(std::pow(c.dilation_base, j))));
    L.push_back(elu());
    L.push_back(conv(w, prefix, L.size(), mult * c.n_filters, mult * c.n_filters * 2, 2 * r, r));
    mult *= 2;
  }
  L.push_back(elu());
  L.push_back(conv(w, prefix, L.size(), mult * c.n_filters, c.dimension, c.last_kernel_size));
  return s;
}

Seanet Seanet::decoder(WeightStore& w, const SeanetConfig& c, const std::string& prefix) {
  // seanet.py:314-388: conv, then per ratio (8,6,5,4): ELU, ConvTr(k=2r, s=r), residual blocks.
  Seanet s;
  auto& L = s.layers_;
  int mult = 1 << c.ratios.size();
  L.push_back(conv(w, prefix, L.size(), c.dimension, mult * c.n_filters, c.kernel_size));
  for (int r : c.ratios) {
    L.push_back(elu());
    SeanetLayer t;
    t.kind = SeanetLayer::ConvTr;
    t.convtr = ConvTranspose1d::load(w, key(prefix, L.size(), ".convtr.convtr"), mult * c.n_filters,
                                     mult * c.n_filters / 2, 2 * r, r, 1, true);
    L.push_back(t);
    for (int j = 0; j < c.n_residual_layers; ++j)
      L.push_back(residual(w, prefix, L.size(), mult * c.n_filters / 2, c, static_cast<int>(std::pow(c.dilation_base, j))));
    mult /= 2;
  }
  L.push_back(elu());
  L.push_back(conv(w, prefix, L.size(), c.n_filters, c.channels, c.last_kernel_size));
  return s;
}

SeanetState Seanet::new_state() const {
  SeanetState st;
  st.a.resize(layers_.size());
  st.b.resize(layers_.size());
  st.t.resize(layers_.size());
  return st;
}

at::Tensor Seanet::forward(const at::Tensor& x) const { return run(x, nullptr); }
at::Tensor Seanet::step(const at::Tensor& x, SeanetState& st) const { return run(x, &st); }

at::Tensor Seanet::run(const at::Tensor& x, SeanetState* st) const {
  at::Tensor h = x;
  for (size_t i = 0; i < layers_.size(); ++i) {
    const auto& l = layers_[i];
    switch (l.kind) {
      case SeanetLayer::Elu: h = at::elu(h); break;
      case SeanetLayer::Conv: h = st ? l.conv.step(h, st->a[i]) : l.conv.forward(h); break;
      case SeanetLayer::ConvTr: h = st ? l.convtr.step(h, st->t[i]) : l.convtr.forward(h); break;
      case SeanetLayer::Residual: {
        at::Tensor u = at::elu(h);
        u = st ? l.conv.step(u, st->a[i]) : l.conv.forward(u);
        u = at::elu(u);
        u = st ? l.conv2.step(u, st->b[i]) : l.conv2.forward(u);
        h = h + u;
        break;
      }
    }
  }
  return h;
}

void Seanet::to(const at::TensorOptions& o) {
  for (auto& l : layers_) {
    if (l.conv.weight.defined()) l.conv.to(o);
    if (l.conv2.weight.defined()) l.conv2.to(o);
    if (l.convtr.weight.defined()) l.convtr.to(o);
  }
}

}  // namespace mtt::mimi
