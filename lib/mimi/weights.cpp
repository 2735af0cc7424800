#include "mimi/weights.h"

#include <ATen/CPUGeneratorImpl.h>

#include <cmath>
#include <sstream>

#include "core/error.h"
#include "nn/tensor_io.h"

namespace mtt::mimi {

std::string shape_str(at::IntArrayRef s) {
  std::ostringstream o;
  o << "[";
  for (size_t i = 0; i < s.size(); ++i) o << (i ? "," : "") << s[i];
  o << "]";
  return o.str();
}

WeightStore::WeightStore(std::map<std::string, at::Tensor> tensors, std::string source)
    : tensors_(std::move(tensors)), source_(std::move(source)) {}

WeightStore WeightStore::random(uint64_t seed, std::string source) {
  WeightStore w({}, std::move(source));
  w.random_ = true;
  w.gen_ = at::make_generator<at::CPUGeneratorImpl>(seed);
  return w;
}

namespace {
bool ends_with(const std::string& s, const std::string& suf) {
  return s.size() >= suf.size() && s.compare(s.size() - suf.size(), suf.size(), suf) == 0;
}
}  // namespace

at::Tensor WeightStore::invent(const std::string& name, const std::vector<int64_t>& shape) {
  auto f = at::TensorOptions().dtype(at::kFloat);
  auto uni = [&](double lo, double hi) { return at::empty(shape, f).uniform_(lo, hi, gen_); };
  auto nrm = [&](double mean, double sd) { return at::empty(shape, f).normal_(mean, sd, gen_); };
  if (ends_with(name, "layer_scale_1.scale") || ends_with(name, "layer_scale_2.scale")) return uni(0.05, 0.3);
  if (name.find(".norm1.") != std::string::npos || name.find(".norm2.") != std::string::npos)
    return ends_with(name, "weight") ? nrm(1.0, 0.2) : nrm(0.0, 0.1);
  if (ends_with(name, "embedding_sum")) return nrm(0.0, 1.0);
  if (ends_with(name, "cluster_usage")) return uni(0.5, 2.0);
  int64_t fan_in = 1;
  if (shape.size() > 1) {
    for (size_t i = 1; i < shape.size(); ++i) fan_in *= shape[i];
  } else {
    // Biases: the weight's fan-in is not known here; scale by the channel count instead.
    fan_in = std::max<int64_t>(shape.empty() ? 1 : shape[0], 1);
  }
  const double b = 1.5 / std::sqrt(static_cast<double>(fan_in));
  return uni(-b, b);
}

WeightStore WeightStore::from_file(const std::string& path) { return WeightStore(nn::load_tensors(path), path); }

at::Tensor WeightStore::take(const std::vector<std::string>& names, const std::vector<int64_t>& shape) {
  at::Tensor t;
  std::string found;
  for (const auto& n : names) {
    auto it = tensors_.find(n);
    if (it != tensors_.end()) {
      t = it->second;
      found = n;
      break;
    }
    // Weight-norm parametrisation (import_mimi_pytorch.py:34-38): w = g * v / ||v||, the norm
    // taken over every dim but 0.
    const std::string suffix = ".weight";
    if (n.size() > suffix.size() && n.compare(n.size() - suffix.size(), suffix.size(), suffix) == 0) {
      auto g = tensors_.find(n + "_g"), v = tensors_.find(n + "_v");
      if (g != tensors_.end() && v != tensors_.end()) {
        at::Tensor vv = v->second.to(at::kFloat);
        std::vector<int64_t> dims;
        for (int64_t d = 1; d < vv.dim(); ++d) dims.push_back(d);
        at::Tensor norm = dims.empty() ? vv.abs() : vv.pow(2).sum(dims, /*keepdim=*/true).sqrt();
        t = g->second.to(at::kFloat) * vv / norm;
        used_.insert(g->first);
        used_.insert(v->first);
        found = n;
        break;
      }
    }
  }
  if (!t.defined() && random_) {
    found = names.front();
    t = invent(found, shape);
    tensors_[found] = t;
  }
  if (!t.defined()) {
    std::string alts;
    for (size_t i = 1; i < names.size(); ++i) alts += (i > 1 ? ", " : " (also tried ") + names[i];
    if (!alts.empty()) alts += ")";
    throw Error(source_, names.front(), "missing Mimi weight" + alts);
  }
  if (t.sizes() != at::IntArrayRef(shape)) {
    throw Error(source_, found, "shape " + shape_str(t.sizes()) + ", expected " + shape_str(shape) +
                                    " (checkpoint does not match the Mimi config)");
  }
  if (!t.is_floating_point()) throw Error(source_, found, "expected a floating-point tensor");
  used_.insert(found);
  return t.to(at::kFloat).contiguous();
}

void WeightStore::ignore(const std::vector<std::string>& names) {
  if (random_ && !names.empty() && ends_with(names.front(), "_initialized")) {
    tensors_[names.front()] = at::ones({1}, at::kFloat);
  }
  for (const auto& n : names)
    if (tensors_.count(n)) used_.insert(n);
}

void WeightStore::check_all_used() const {
  for (const auto& [k, v] : tensors_) {
    if (!used_.count(k)) throw Error(source_, k, "unexpected key in Mimi checkpoint (strict load)");
  }
}

}  // namespace mtt::mimi
