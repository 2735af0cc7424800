#pragma once
// Split residual vector quantizer (docs/moshi.md §5.5, upstream `quantization/vq.py:170-322`,
// `core_vq.py`): a 1-codebook semantic RVQ and an acoustic RVQ, each with its own 1x1 input and
// output projections, BOTH encoding the same latent; decode sums the two reconstructions.
#include <ATen/ATen.h>

#include <string>
#include <vector>

#include "mimi/config.h"

namespace mtt::mimi {

class WeightStore;

struct ResidualVQ {
  at::Tensor input_proj;   // [dim, in, 1]
  at::Tensor output_proj;  // [out, dim, 1]
  std::vector<at::Tensor> codebooks;  // [bins, dim] = embedding_sum / clamp(cluster_usage, 1e-5)

  // x [B, in, T] -> codes [B, n, T] (int64): nearest centroid (L2), residual subtracted per level.
  at::Tensor encode(const at::Tensor& x, int n) const;
  // codes [B, n, T] -> [B, out, T]
  at::Tensor decode(const at::Tensor& codes) const;
};

class SplitRVQ {
 public:
  static SplitRVQ load(WeightStore& w, const QuantizerConfig& c, const std::string& prefix = "quantizer");
  at::Tensor encode(const at::Tensor& x, int num_codebooks) const;
  at::Tensor decode(const at::Tensor& codes) const;  // codes [B, K, T], K <= total codebooks
  void to(const at::TensorOptions& o);
  int total_codebooks() const;
  int bins() const { return cfg_.bins; }

 private:
  QuantizerConfig cfg_;
  ResidualVQ first_, rest_;
};

}  // namespace mtt::mimi
