#include "nn/sin_embedding.h"

namespace mtt::nn {

at::Tensor sin_embedding(const at::Tensor& offsets, int64_t T, int64_t C, double max_period, at::ScalarType dtype) {
  // create_sin_embedding (transformer.py:139-164), computed in the activation dtype as upstream.
  auto o = at::TensorOptions().dtype(dtype).device(offsets.device());
  const int64_t half = C / 2;
  at::Tensor positions =
      (at::arange(T, offsets.options().dtype(at::kLong)).view({1, -1, 1}) + offsets.view({-1, 1, 1})).to(dtype);
  at::Tensor adim = at::arange(half, o).view({1, 1, -1});
  at::Tensor mp = at::full({}, max_period, o);
  at::Tensor phase = positions / at::pow(mp, adim / static_cast<double>(half - 1));
  return at::cat({at::cos(phase), at::sin(phase)}, -1);
}

}  // namespace mtt::nn
