#include "mimi/quantizer.h"

#include "core/error.h"
#include "mimi/weights.h"

namespace mtt::mimi {

at::Tensor ResidualVQ::encode(const at::Tensor& x, int n) const {
  // vq.py:126-139 + core_vq.py:507-519, working in [B, T, dim].
  at::Tensor r = at::conv1d(x, input_proj).transpose(1, 2);
  std::vector<at::Tensor> codes;
  for (int l = 0; l < n; ++l) {
    const at::Tensor& e = codebooks[l];
    // core_vq.py:270-276: argmin over torch.cdist(x[None], e[None]) with x = [B*T, dim]; the
    // same call keeps the same algorithm choice (matmul path) so near-ties resolve alike.
    const int64_t B = r.size(0), T = r.size(1);
    at::Tensor d = at::cdist(r.reshape({1, B * T, r.size(2)}), e.unsqueeze(0), 2.0);
    at::Tensor c = d[0].argmin(-1).view({B, T});
    codes.push_back(c);
    r = r - at::embedding(e, c);
  }
  return at::stack(codes, 1);  // [B, n, T]
}

at::Tensor ResidualVQ::decode(const at::Tensor& codes) const {
  at::Tensor q;
  for (int64_t l = 0; l < codes.size(1); ++l) {
    at::Tensor e = at::embedding(codebooks[l], codes.select(1, l));  // [B, T, dim]
    q = q.defined() ? q + e : e;
  }
  return at::conv1d(q.transpose(1, 2), output_proj);
}

namespace {

ResidualVQ load_rvq(WeightStore& w, const QuantizerConfig& c, const std::string& p, int n) {
  ResidualVQ r;
  r.input_proj = w.take(p + ".input_proj.weight", {c.dimension, c.input_dimension, 1});
  r.output_proj = w.take(p + ".output_proj.weight", {c.output_dimension, c.dimension, 1});
  for (int l = 0; l < n; ++l) {
    const std::string cb = p + ".vq.layers." + std::to_string(l) + "._codebook.";
    at::Tensor sum = w.take({cb + "embedding_sum", cb + "embed_sum", cb + "embed_avg"}, {c.bins, c.dimension});
    at::Tensor usage = w.take({cb + "cluster_usage", cb + "cluster_size"}, {c.bins});
    w.ignore({cb + "_initialized", cb + "inited"});
    // core_vq.py:178-186 (epsilon 1e-5).
    r.codebooks.push_back((sum / usage.clamp_min(1e-5).unsqueeze(1)).contiguous());
  }
  return r;
}

}  // namespace

SplitRVQ SplitRVQ::load(WeightStore& w, const QuantizerConfig& c, const std::string& prefix) {
  SplitRVQ q;
  q.cfg_ = c;
  q.first_ = load_rvq(w, c, prefix + ".rvq_first", c.n_q_semantic);
  q.rest_ = load_rvq(w, c, prefix + ".rvq_rest", c.n_q - c.n_q_semantic);
  return q;
}

int SplitRVQ::total_codebooks() const { return cfg_.n_q; }

at::Tensor SplitRVQ::encode(const at::Tensor& x, int k) const {
  if (k < cfg_.n_q_semantic || k > cfg_.n_q) {
    throw Error("", "num_codebooks", "must be in [" + std::to_string(cfg_.n_q_semantic) + ", " +
                                         std::to_string(cfg_.n_q) + "], got " + std::to_string(k), ErrorKind::Usage);
  }
  at::Tensor codes = first_.encode(x, cfg_.n_q_semantic);
  if (k > cfg_.n_q_semantic) codes = at::cat({codes, rest_.encode(x, k - cfg_.n_q_semantic)}, 1);
  return codes;
}

at::Tensor SplitRVQ::decode(const at::Tensor& codes) const {
  const int64_t K = codes.size(1);
  if (K < cfg_.n_q_semantic || K > cfg_.n_q) {
    throw Error("", "codes", "codebook count " + std::to_string(K) + " not in [" +
                                 std::to_string(cfg_.n_q_semantic) + ", " + std::to_string(cfg_.n_q) + "]",
                ErrorKind::Usage);
  }
  if (codes.numel() > 0) {
    int64_t lo = codes.min().item<int64_t>(), hi = codes.max().item<int64_t>();
    if (lo < 0 || hi >= cfg_.bins) {
      throw Error("", "codes", "code out of range [0, " + std::to_string(cfg_.bins) + "): " +
                                   std::to_string(lo < 0 ? lo : hi), ErrorKind::Usage);
    }
  }
  at::Tensor q = first_.decode(codes.narrow(1, 0, cfg_.n_q_semantic));
  if (K > cfg_.n_q_semantic) q = q + rest_.decode(codes.narrow(1, cfg_.n_q_semantic, K - cfg_.n_q_semantic));
  return q;
}

void SplitRVQ::to(const at::TensorOptions& o) {
  for (ResidualVQ* r : {&first_, &rest_}) {
    r->input_proj = r->input_proj.to(o);
    r->output_proj = r->output_proj.to(o);
    for (auto& c : r->codebooks) c = c.to(o);
  }
}

}  // namespace mtt::mimi
