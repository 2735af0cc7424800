#include "audit/stats.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

namespace mtt::audit {

namespace {

inline double load(const uint8_t* p, DType t, uint64_t i) {
  switch (t) {
    case DType::BF16: {
      uint16_t h;
      std::memcpy(&h, p + 2 * i, 2);
      return bf16_to_float(h);
    }
    case DType::F32: {
      float f;
      std::memcpy(&f, p + 4 * i, 4);
      return f;
    }
    case DType::F64: {
      double d;
      std::memcpy(&d, p + 8 * i, 8);
      return d;
    }
    case DType::F16: {
      uint16_t h;
      std::memcpy(&h, p + 2 * i, 2);
      return f16_to_float(h);
    }
    default: return element_as_double(p, t, i);
  }
}

// Moments accumulated around a shift (the first finite value) to keep fp64 cancellation small.
struct Acc {
  bool have_shift = false;
  double shift = 0, sum = 0, sumsq = 0, mn = std::numeric_limits<double>::infinity(),
         mx = -std::numeric_limits<double>::infinity();
  uint64_t finite = 0, nan = 0, inf = 0, zeros = 0;

  template <DType T>
  void run(const uint8_t* p, uint64_t n) {
    double s = 0, ss = 0, lo = mn, hi = mx;
    uint64_t fin = 0, z = 0;
    for (uint64_t i = 0; i < n; ++i) {
      const double x = load(p, T, i);
      if (!std::isfinite(x)) {
        if (std::isnan(x)) ++nan; else ++inf;
        continue;
      }
      if (!have_shift) {
        have_shift = true;
        shift = x;
      }
      const double d = x - shift;
      s += d;
      ss += d * d;
      lo = std::min(lo, x);
      hi = std::max(hi, x);
      z += (x == 0.0);
      ++fin;
    }
    sum += s;
    sumsq += ss;
    mn = lo;
    mx = hi;
    finite += fin;
    zeros += z;
  }

};

}  // namespace

double element(const io::TensorView& v, uint64_t i) { return load(v.data, v.dtype(), i); }

void release_range(const io::TensorView& v, uint64_t from, uint64_t to) {
  if (!v.file || !v.info) return;
  io::TensorInfo part = *v.info;
  part.begin = v.info->begin + from;
  part.end = v.info->begin + to;
  v.file->release(part);
}

TensorStats tensor_stats(const io::TensorView& v) {
  TensorStats st;
  st.name = v.name();
  st.dtype = v.dtype();
  st.shape = v.shape();
  st.numel = v.numel();
  st.nbytes = v.nbytes();
  if (st.numel == 0) return st;
  const std::size_t es = dtype_size(st.dtype);
  st.first = load(v.data, st.dtype, 0);
  bool equal = true;
  Acc acc;
  const uint64_t per_chunk = std::max<uint64_t>(1, kStatsChunkBytes / es);
  for (uint64_t start = 0; start < st.numel; start += per_chunk) {
    const uint64_t n = std::min(per_chunk, st.numel - start);
    const uint8_t* p = v.data + start * es;
    // Bit-equality with element 0, by bytes (so -0.0 vs 0.0 and NaN payloads count as different).
    if (equal) {
      for (uint64_t i = 0; i < n && equal; ++i) equal = std::memcmp(p + i * es, v.data, es) == 0;
    }
    switch (st.dtype) {
      case DType::BF16: acc.run<DType::BF16>(p, n); break;
      case DType::F32: acc.run<DType::F32>(p, n); break;
      case DType::F64: acc.run<DType::F64>(p, n); break;
      case DType::F16: acc.run<DType::F16>(p, n); break;
      default: {
        for (uint64_t i = 0; i < n; ++i) {  // integer and fp8 tensors: generic conversion
          const double x = element_as_double(p, st.dtype, i);
          if (!std::isfinite(x)) {
            if (std::isnan(x)) ++acc.nan; else ++acc.inf;
            continue;
          }
          if (!acc.have_shift) {
            acc.have_shift = true;
            acc.shift = x;
          }
          const double d = x - acc.shift;
          acc.sum += d;
          acc.sumsq += d * d;
          acc.mn = std::min(acc.mn, x);
          acc.mx = std::max(acc.mx, x);
          acc.zeros += (x == 0.0);
          ++acc.finite;
        }
      }
    }
    release_range(v, start * es, (start + n) * es);
  }
  st.all_equal = equal;
  st.finite = acc.finite;
  st.nan = acc.nan;
  st.inf = acc.inf;
  st.zeros = acc.zeros;
  if (acc.finite > 0) {
    const double n = static_cast<double>(acc.finite);
    const double md = acc.sum / n;
    st.mean = acc.shift + md;
    st.std = std::sqrt(std::max(0.0, acc.sumsq / n - md * md));
    if (equal) st.std = 0.0;  // exact for constant tensors
    st.min = acc.mn;
    st.max = acc.mx;
    // sum x^2 = sum (d + s)^2 = sumsq + 2 s sum + n s^2
    st.l2 = std::sqrt(std::max(0.0, acc.sumsq + 2.0 * acc.shift * acc.sum + n * acc.shift * acc.shift));
  }
  return st;
}

CompareStats compare_tensors(const io::TensorView& v, const io::TensorView& base) {
  CompareStats c;
  if (v.shape() != base.shape()) return c;
  c.comparable = true;
  const uint64_t n = v.numel();
  const bool same_dtype = v.dtype() == base.dtype();
  if (same_dtype) c.bit_equal = std::memcmp(v.data, base.data, v.nbytes()) == 0;
  const std::size_t ea = dtype_size(v.dtype()), eb = dtype_size(base.dtype());
  const uint64_t per_chunk = std::max<uint64_t>(1, kStatsChunkBytes / std::max(ea, eb));
  double dd = 0, bb = 0;
  for (uint64_t start = 0; start < n; start += per_chunk) {
    const uint64_t m = std::min(per_chunk, n - start);
    for (uint64_t i = start; i < start + m; ++i) {
      const double a = load(v.data, v.dtype(), i), b = load(base.data, base.dtype(), i);
      if (!c.bit_equal) dd += (a - b) * (a - b);
      bb += b * b;
    }
    release_range(v, start * ea, (start + m) * ea);
    release_range(base, start * eb, (start + m) * eb);
  }
  // Same dtype: equality is by bytes. Different dtypes: numerically identical after conversion.
  if (!same_dtype) c.bit_equal = dd == 0.0;
  c.diff_l2 = std::sqrt(dd);
  c.base_l2 = std::sqrt(bb);
  return c;
}

}  // namespace mtt::audit
