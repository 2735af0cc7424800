#include "nn/rope.h"

#include <cmath>

namespace mtt::nn {

namespace {

// cos and sin of the angles (offsets[b] + t) * freq_i, f32 [B or 1, 1, T, D/2] (rope.py:12-82:
// freqs = exp(-ln(max_period) * 2i / D), the positions added in f32).
std::pair<at::Tensor, at::Tensor> rotation(const at::Tensor& offsets, int64_t T, int64_t D, double max_period,
                                           const at::Device& device) {
  auto f32 = at::TensorOptions().dtype(at::kFloat).device(device);
  at::Tensor ds = at::arange(D / 2, f32);
  at::Tensor freqs = at::exp(ds * (-std::log(max_period) * 2.0 / static_cast<double>(D)));
  at::Tensor ts = at::arange(T, f32).view({1, 1, T, 1}) + offsets.to(device).to(at::kFloat).view({-1, 1, 1, 1});
  return {at::cos(freqs * ts), at::sin(freqs * ts)};
}

at::Tensor rotate(const at::Tensor& x, const at::Tensor& rotr, const at::Tensor& roti, bool interleave) {
  const int64_t T = x.size(2), D = x.size(3);
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
}

}  // namespace

at::Tensor apply_rope(const at::Tensor& x, const at::Tensor& offsets, double max_period, bool interleave) {
  auto [rotr, roti] = rotation(offsets, x.size(2), x.size(3), max_period, x.device());
  return rotate(x, rotr, roti, interleave);
}

at::Tensor apply_rope(const at::Tensor& x, int64_t offset, double max_period, bool interleave) {
  return apply_rope(x, at::full({1}, offset, at::TensorOptions().dtype(at::kLong)), max_period, interleave);
}

std::pair<at::Tensor, at::Tensor> apply_rope(const at::Tensor& q, const at::Tensor& k, const at::Tensor& offsets,
                                             double max_period, bool interleave) {
  auto [rotr, roti] = rotation(offsets, q.size(2), q.size(3), max_period, q.device());
  return {rotate(q, rotr, roti, interleave), rotate(k, rotr, roti, interleave)};
}

}  // namespace mtt::nn
