#pragma once
// Golden-file helpers for the In-Place TTT / gating / hybrid tests: reads a golden safetensors
// file (F32/F64 only) into at::Tensors (copies) and compares with the README tolerances
// (max|port − ref| ≤ tol · max|ref|, per tensor).
#include <filesystem>
#include <map>
#include <sstream>
#include <string>

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "core/error.h"
#include "io/safetensors.h"
#include "test_util.h"

namespace mtt::test {

struct Golden {
  std::map<std::string, at::Tensor> t;
  std::map<std::string, std::string> meta;
  const at::Tensor& operator[](const std::string& k) const {
    auto it = t.find(k);
    if (it == t.end()) throw std::runtime_error("golden tensor missing: " + k);
    return it->second;
  }
  bool has(const std::string& k) const { return t.count(k) != 0; }
};

inline Golden load_golden(const std::string& rel) {
  Golden g;
  auto f = io::SafetensorsFile::open((golden_dir() / rel).string());
  g.meta = f->metadata();
  for (const auto& info : f->tensors()) {
    auto v = f->view(info);
    at::ScalarType st;
    if (info.dtype == DType::F32) {
      st = at::kFloat;
    } else if (info.dtype == DType::F64) {
      st = at::kDouble;
    } else {
      continue;
    }
    std::vector<int64_t> shape(info.shape.begin(), info.shape.end());
    g.t[info.name] = at::from_blob(const_cast<uint8_t*>(v.data), shape, at::TensorOptions().dtype(st)).clone();
  }
  return g;
}

// max|a − ref| / max|ref| (absolute when ref is all zero).
inline double rel_err(const at::Tensor& a, const at::Tensor& ref) {
  at::Tensor r = ref.to(at::kDouble);
  double diff = (a.detach().to(at::kDouble) - r).abs().max().item<double>();
  double scale = r.abs().max().item<double>();
  return scale > 0 ? diff / scale : diff;
}

inline ::testing::AssertionResult close_to(const std::string& what, const at::Tensor& a, const at::Tensor& ref,
                                           double tol) {
  if (!a.defined()) return ::testing::AssertionFailure() << what << ": no tensor (no gradient reached it)";
  if (!a.sizes().equals(ref.sizes())) {
    std::ostringstream os;
    os << what << ": shape " << a.sizes() << " vs ref " << ref.sizes();
    return ::testing::AssertionFailure() << os.str();
  }
  double e = rel_err(a, ref);
  if (e <= tol) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << what << ": max|port-ref|/max|ref| = " << e << " > " << tol;
}

// A gradient that the reference says is exactly zero must be exactly zero (or absent).
inline ::testing::AssertionResult exactly_zero(const std::string& what, const at::Tensor& g) {
  if (!g.defined()) return ::testing::AssertionSuccess();
  double m = g.abs().max().item<double>();
  if (m == 0.0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << what << ": expected exactly zero, max|g| = " << m;
}

inline constexpr double kOutTol = 1e-5;   // golden README: float32 port, outputs
inline constexpr double kGradTol = 3e-5;  // golden README: float32 port, gradients

}  // namespace mtt::test
