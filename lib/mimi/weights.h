#pragma once
// Named weights of a Mimi checkpoint with the checks the loader needs: expected shapes, the
// accepted alternative names (docs/moshi.md §5.6: legacy fused attention names, legacy codebook
// names, weight-norm pairs folded as w = g * v / ||v||), and strictness (every key used once,
// unknown keys rejected, like upstream's strict load_state_dict). Errors name file and key.
#include <ATen/ATen.h>

#include <map>
#include <set>
#include <string>
#include <vector>

namespace mtt::mimi {

class WeightStore {
 public:
  WeightStore(std::map<std::string, at::Tensor> tensors, std::string source);
  static WeightStore from_file(const std::string& path);
  // A store that invents every tensor asked for (seeded, deterministic): random-weight models
  // for tests and benchmarks, under the real checkpoint names. Conv/linear weights are uniform
  // in +-1.5/sqrt(fan_in), biases likewise, LayerNorm weights 1 + 0.2 N(0,1), biases 0.1 N(0,1),
  // LayerScale U(0.05, 0.3), codebook sums N(0,1), usages U(0.5, 2).
  static WeightStore random(uint64_t seed, std::string source = "<random>");

  // The tensor stored under the first of `names` that exists (float32, contiguous), checked
  // against `shape`. For a name ending in ".weight" a weight-norm pair "<stem>.weight_g" /
  // "<stem>.weight_v" is also accepted and folded.
  at::Tensor take(const std::vector<std::string>& names, const std::vector<int64_t>& shape);
  at::Tensor take(const std::string& name, const std::vector<int64_t>& shape) {
    return take(std::vector<std::string>{name}, shape);
  }
  // Marks a key (or its aliases) as known-but-unused (e.g. `_initialized`), when present.
  void ignore(const std::vector<std::string>& names);
  // Throws mtt::Error naming the first key nothing consumed.
  void check_all_used() const;

  const std::string& source() const { return source_; }
  bool has(const std::string& name) const { return tensors_.count(name) != 0; }
  const std::map<std::string, at::Tensor>& tensors() const { return tensors_; }

 private:
  std::map<std::string, at::Tensor> tensors_;
  std::set<std::string> used_;
  std::string source_;
  bool random_ = false;
  at::Generator gen_;
  at::Tensor invent(const std::string& name, const std::vector<int64_t>& shape);
};

std::string shape_str(at::IntArrayRef s);

}  // namespace mtt::mimi
