#include "nn/norms.h"

namespace mtt::nn {

Norm Norm::make(bool rms, bool f32, double eps, int64_t dim, const at::TensorOptions& opts) {
  Norm n;
  n.rms = rms;
  n.f32 = f32;
  n.eps = eps;
  n.dim = dim;
  if (rms) {
    n.alpha = at::empty({1, 1, dim}, opts);
  } else {
    n.weight = at::empty({dim}, opts);
    n.bias = at::empty({dim}, opts);
  }
  return n;
}

at::Tensor Norm::operator()(const at::Tensor& x) const {
  if (rms) {
    // _rms_norm (transformer.py): var = eps + mean(x^2) over the last dim, y = x * (alpha * rsqrt(var)),
    // in f32 for rms_norm_f32, in x's dtype for rms_norm; cast back to x's dtype.
    at::Tensor xx = f32 ? x.to(at::kFloat) : x;
    at::Tensor var = at::mean(xx * xx, {-1}, /*keepdim=*/true) + eps;
    return (xx * (alpha.to(var.scalar_type()) * at::rsqrt(var))).to(x.scalar_type());
  }
  if (f32) {  // LayerNormF32: computed in f32, cast back
    return at::layer_norm(x.to(at::kFloat), {dim}, weight.to(at::kFloat), bias.to(at::kFloat), eps)
        .to(x.scalar_type());
  }
  return at::layer_norm(x, {dim}, weight, bias, eps);
}

void Norm::collect(const std::string& prefix, ParamList& out) {
  if (rms) {
    out.push_back({prefix + "alpha", &alpha, {ParamInit::norm_gain}});
  } else {
    out.push_back({prefix + "weight", &weight, {ParamInit::norm_gain}});
    out.push_back({prefix + "bias", &bias, {ParamInit::bias}});
  }
}

}  // namespace mtt::nn
