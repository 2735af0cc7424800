#pragma once
// The transformers' norms (moshi transformer.py create_norm_fn, docs/moshi.md §2.2): LayerNorm
// (weight, bias [D]) and RMSNorm (gain `alpha` [1, 1, D]), each computed in the input's dtype or
// in f32 and cast back. The caller picks the eps: moshi derives it from the norm's name
// (moshi/config.h norm_eps), Mimi reads it from its config.
#include <ATen/ATen.h>

#include <string>

#include "nn/params.h"

namespace mtt::nn {

struct Norm {
  bool rms = false;  // RMSNorm, else LayerNorm
  bool f32 = false;  // statistics and output in f32 (LayerNormF32, rms_norm_f32), cast back
  double eps = 1e-5;
  int64_t dim = 0;
  at::Tensor alpha;         // RMSNorm gain [1, 1, D]
  at::Tensor weight, bias;  // LayerNorm [D]

  // The tensors of this kind on `opts` (the meta device: shapes only, assigned later).
  static Norm make(bool rms, bool f32, double eps, int64_t dim, const at::TensorOptions& opts);
  at::Tensor operator()(const at::Tensor& x) const;
  // `alpha` (RMSNorm) or `weight`, `bias` (LayerNorm), declared as gains and biases.
  void collect(const std::string& prefix, ParamList& out);
};

}  // namespace mtt::nn
