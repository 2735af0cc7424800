#include "moshi/init.h"

#include <cmath>
#include <cstring>

#include "core/error.h"
#include "io/safetensors.h"

namespace mtt::moshi {

namespace {

// splitmix64: a tiny, well-mixed generator; one independent stream per key.
struct Rng {
  uint64_t s;
  uint64_t next() {
    uint64_t z = (s += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
  }
  double uniform01() { return (static_cast<double>(next() >> 11) + 0.5) * (1.0 / 9007199254740992.0); }
  double normal() {  // Box-Muller (one value per call keeps the stream simple)
    const double u1 = uniform01(), u2 = uniform01();
    return std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
  }
};

uint64_t fnv1a(const std::string& s) {
  uint64_t h = 0xcbf29ce484222325ULL;
  for (unsigned char c : s) h = (h ^ c) * 0x100000001b3ULL;
  return h;
}

}  // namespace

void encode_value(double v, DType dtype, uint8_t* out) {
  switch (dtype) {
    case DType::F64: std::memcpy(out, &v, 8); return;
    case DType::F32: {
      const float f = static_cast<float>(v);
      std::memcpy(out, &f, 4);
      return;
    }
    case DType::BF16: {
      const uint16_t h = float_to_bf16(static_cast<float>(v));
      std::memcpy(out, &h, 2);
      return;
    }
    case DType::F16: {
      const uint16_t h = float_to_f16(static_cast<float>(v));
      std::memcpy(out, &h, 2);
      return;
    }
    default: throw Error("", dtype_name(dtype), "initialisers write BF16, F16, F32 or F64", ErrorKind::Usage);
  }
}

std::vector<InitTensor> init_parameters(const ModelSchema& schema, const InitOptions& opt) {
  const std::size_t es = dtype_size(opt.dtype);
  std::vector<InitTensor> out;
  out.reserve(schema.params.size());
  std::map<std::string, std::size_t> at;
  // Pass 1: every tensor with its own values; pass 2: duplicates and copies.
  for (const auto& p : schema.params) {
    InitTensor t;
    t.name = p.name;
    t.shape = p.shape;
    t.dtype = opt.dtype;
    const int64_t n = p.numel();
    t.bytes.resize(static_cast<std::size_t>(n) * es);
    if (p.duplicate_of.empty() && p.init.kind != InitKind::copy_of) {
      Rng rng{opt.seed ^ fnv1a(p.name)};
      uint8_t* dst = t.bytes.data();
      if (p.init.kind == InitKind::diagonal) {
        if (p.shape.size() != 2 || p.shape[0] != p.shape[1])
          throw Error("", p.name, "diagonal init needs a square matrix", ErrorKind::Internal);
        const int64_t r = p.shape[0];
        for (int64_t i = 0; i < n; ++i) encode_value(0.0, opt.dtype, dst + i * es);
        for (int64_t i = 0; i < r; ++i) encode_value(p.init.a * rng.normal(), opt.dtype, dst + (i * r + i) * es);
      } else {
        for (int64_t i = 0; i < n; ++i) {
          double v = 0;
          switch (p.init.kind) {
            case InitKind::normal: v = p.init.a * rng.normal(); break;
            case InitKind::uniform: v = p.init.a * (2.0 * rng.uniform01() - 1.0); break;
            case InitKind::constant: v = p.init.a; break;
            default: break;
          }
          encode_value(v, opt.dtype, dst + i * es);
        }
      }
    }
    at[p.name] = out.size();
    out.push_back(std::move(t));
  }
  for (const auto& p : schema.params) {
    const std::string& src = !p.duplicate_of.empty() ? p.duplicate_of
                             : p.init.kind == InitKind::copy_of ? p.init.source
                                                                : std::string();
    if (src.empty()) continue;
    auto it = at.find(src);
    if (it == at.end()) throw Error("", p.name, "copies undeclared tensor " + src, ErrorKind::Internal);
    const auto& s = out[it->second];
    auto& d = out[at[p.name]];
    if (s.bytes.size() != d.bytes.size()) throw Error("", p.name, "copy of " + src + " with another size", ErrorKind::Internal);
    d.bytes = s.bytes;
  }
  return out;
}

void write_initial_checkpoint(const std::string& path, const ModelSchema& schema, const InitOptions& opt,
                              const std::map<std::string, std::string>& metadata) {
  auto tensors = init_parameters(schema, opt);
  std::vector<io::TensorToWrite> w;
  w.reserve(tensors.size());
  for (const auto& t : tensors) w.push_back({t.name, t.dtype, t.shape, t.bytes.data()});
  auto meta = metadata;
  meta["mtt.schema_config"] = schema_config_to_json(schema.config);
  meta["mtt.init_seed"] = std::to_string(opt.seed);
  io::write_safetensors(path, w, meta);
}

}  // namespace mtt::moshi
