#pragma once
// Fixtures for the audit tests: a model's tensors from the library's initialisers, edited in
// memory, written with io::write_safetensors (no mtt.schema_config metadata unless asked, so the
// configuration is inferred from names and shapes as for a foreign checkpoint).
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "io/safetensors.h"
#include "moshi/init.h"
#include "moshi/schema.h"

namespace mtt::audit::test {

struct Fixture {
  std::vector<moshi::InitTensor> tensors;

  explicit Fixture(const moshi::SchemaConfig& c, DType dtype = DType::BF16, uint64_t seed = 1) {
    moshi::InitOptions o;
    o.dtype = dtype;
    o.seed = seed;
    tensors = moshi::init_parameters(moshi::declare_parameters(c), o);
  }
  moshi::InitTensor& at(const std::string& name) {
    for (auto& t : tensors)
      if (t.name == name) return t;
    throw std::runtime_error("fixture has no " + name);
  }
  // Element i of `name` := f(i).
  void set(const std::string& name, const std::function<double(int64_t)>& f) {
    auto& t = at(name);
    const std::size_t es = dtype_size(t.dtype);
    const int64_t n = static_cast<int64_t>(t.bytes.size() / es);
    for (int64_t i = 0; i < n; ++i) moshi::encode_value(f(i), t.dtype, t.bytes.data() + i * es);
  }
  void erase_if(const std::function<bool(const std::string&)>& pred) {
    std::vector<moshi::InitTensor> keep;
    for (auto& t : tensors)
      if (!pred(t.name)) keep.push_back(std::move(t));
    tensors = std::move(keep);
  }
  void write(const std::string& path, const std::map<std::string, std::string>& meta = {}) const {
    std::vector<io::TensorToWrite> w;
    for (const auto& t : tensors) w.push_back({t.name, t.dtype, t.shape, t.bytes.data()});
    io::write_safetensors(path, w, meta);
  }
};

// Deterministic "trained" values: varying, finite.
inline double wiggle(int64_t i, double center, double scale) {
  return center + scale * static_cast<double>((i * 7919) % 97 - 48) / 48.0;
}

}  // namespace mtt::audit::test
