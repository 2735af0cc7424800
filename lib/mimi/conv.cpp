#include "mimi/conv.h"

#include "core/error.h"
#include "mimi/weights.h"

namespace mtt::mimi {

at::Tensor Conv1d::forward(const at::Tensor& x) const {
  State st;
  return step(x, st);
}

at::Tensor Conv1d::step(const at::Tensor& x, State& st) const {
  const int64_t T = x.size(-1);
  if (T <= 0 || T % stride != 0) {
    throw Error("", "conv", "input length " + std::to_string(T) + " is not a positive multiple of stride " +
                                std::to_string(stride), ErrorKind::Internal);
  }
  const int64_t P = padding_total();
  at::Tensor xin = x;
  if (P > 0) {
    if (!st.previous.defined()) st.previous = at::zeros({x.size(0), x.size(1), P}, x.options());
    // conv.py:253-259: replicate padding fills the history with the first sample, once.
    if (replicate && st.first) st.previous = x.narrow(-1, 0, 1).expand({x.size(0), x.size(1), P}).contiguous();
    xin = at::cat({st.previous, x}, -1);
    st.previous = xin.narrow(-1, xin.size(-1) - P, P).contiguous();
  }
  st.first = false;
  const int64_t s[1] = {stride}, pad[1] = {0}, d[1] = {dilation};
  return at::conv1d(xin, weight, bias, at::IntArrayRef(s), at::IntArrayRef(pad), at::IntArrayRef(d), groups);
}

Conv1d Conv1d::load(WeightStore& w, const std::string& prefix, int in, int out, int k, int stride, int dilation,
                    int groups, bool has_bias, bool replicate) {
  Conv1d c;
  c.weight = w.take(prefix + ".weight", {out, in / groups, k});
  if (has_bias) c.bias = w.take(prefix + ".bias", {out});
  c.stride = stride;
  c.dilation = dilation;
  c.groups = groups;
  c.replicate = replicate;
  return c;
}

void Conv1d::to(const at::TensorOptions& o) {
  weight = weight.to(o);
  if (bias.defined()) bias = bias.to(o);
}

namespace {
at::Tensor convtr(const at::Tensor& x, const ConvTranspose1d& c) {
  const int64_t s[1] = {c.stride}, zero[1] = {0}, one[1] = {1};
  return at::conv_transpose1d(x, c.weight, c.bias, at::IntArrayRef(s), at::IntArrayRef(zero), at::IntArrayRef(zero),
                              c.groups, at::IntArrayRef(one));
}
}  // namespace

at::Tensor ConvTranspose1d::forward(const at::Tensor& x) const {
  at::Tensor y = convtr(x, *this);
  const int64_t PT = weight.size(2) - stride;
  return PT > 0 ? y.narrow(-1, 0, y.size(-1) - PT) : y;
}

at::Tensor ConvTranspose1d::step(const at::Tensor& x, State& st) const {
  at::Tensor y = convtr(x, *this);
  const int64_t PT = weight.size(2) - stride;
  if (PT <= 0) return y;
  if (!st.partial.defined()) st.partial = at::zeros({y.size(0), y.size(1), PT}, y.options());
  // conv.py:347-360: the overlap of the previous call is added to our head; our tail (minus
  // the bias, which the next call's head already carries) becomes the new overlap.
  y.narrow(-1, 0, PT).add_(st.partial);
  at::Tensor tail = y.narrow(-1, y.size(-1) - PT, PT);
  st.partial = bias.defined() ? (tail - bias.view({1, -1, 1})).contiguous() : tail.clone();
  return y.narrow(-1, 0, y.size(-1) - PT);
}

ConvTranspose1d ConvTranspose1d::load(WeightStore& w, const std::string& prefix, int in, int out, int k, int stride,
                                      int groups, bool has_bias) {
  ConvTranspose1d c;
  c.weight = w.take(prefix + ".weight", {in, out / groups, k});
  if (has_bias) c.bias = w.take(prefix + ".bias", {out});
  c.stride = stride;
  c.groups = groups;
  return c;
}

void ConvTranspose1d::to(const at::TensorOptions& o) {
  weight = weight.to(o);
  if (bias.defined()) bias = bias.to(o);
}

}  // namespace mtt::mimi
