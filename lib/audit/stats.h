#pragma once
// Streaming per-tensor statistics over the raw mmap'd bytes: fp64 accumulation whatever the
// stored dtype, NaN/Inf counted (and kept out of the moments), pages released as the scan moves
// on so the resident set stays bounded by one chunk however large the checkpoint.
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "io/safetensors.h"

namespace mtt::audit {

struct TensorStats {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  uint64_t numel = 0, nbytes = 0;
  uint64_t finite = 0, nan = 0, inf = 0, zeros = 0;
  double mean = 0, std = 0, min = 0, max = 0;  // over finite elements; std is the population std
  double l2 = 0;                               // sqrt(sum x^2) over finite elements
  bool all_equal = false;    // every element has the same bytes (a constant tensor)
  double first = 0;          // element 0 (the constant when all_equal)
  bool is_zero() const { return numel > 0 && zeros == numel; }
  bool constant() const { return all_equal && numel > 0; }
};

// How a tensor differs from the same key in a base checkpoint.
struct CompareStats {
  bool comparable = false;  // same shape
  bool bit_equal = false;
  double diff_l2 = 0;       // ||W - W_base||
  double base_l2 = 0;       // ||W_base||
  double rel_change() const { return base_l2 > 0 ? diff_l2 / base_l2 : (diff_l2 > 0 ? INFINITY : 0.0); }
};

// Bytes of one tensor per chunk between page releases (64 MiB).
inline constexpr uint64_t kStatsChunkBytes = 64ull << 20;

TensorStats tensor_stats(const io::TensorView& v);
CompareStats compare_tensors(const io::TensorView& v, const io::TensorView& base);

// Element i of a view as double (any dtype).
double element(const io::TensorView& v, uint64_t i);

// Releases the pages of bytes [from, to) of a tensor's data (io::SafetensorsFile::release).
void release_range(const io::TensorView& v, uint64_t from, uint64_t to);

}  // namespace mtt::audit
