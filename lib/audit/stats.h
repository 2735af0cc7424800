#pragma once
// Streaming per-tensor statistics over the raw mmap'd bytes: fp64 accumulation whatever the
// stored dtype, NaN/Inf counted (and located: first flat index) and kept out of the moments,
// pages released as the scan moves on so the resident set stays bounded by a few blocks however
// large the checkpoint.
//
// One pass over a whole file (stats_pass): every tensor is cut into blocks of kStatsBlockBytes,
// handed out in file order to all cores, with read-ahead (MADV_WILLNEED) a window ahead of the
// scan. BF16, F16 and F32 blocks run an AVX2+FMA kernel where the CPU has one (f32 lanes for
// min/max/zero/NaN tests, f64 lanes for the sums); the results do not depend on the number of
// threads or on where a tensor sits in the file: a block's partial sums depend on its elements
// only, and partials are merged in block order.
#include <cmath>
#include <cstdint>
#include <functional>
#include <optional>
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
  int64_t first_nan = -1, first_inf = -1;      // flat (row-major) index of the first NaN / Inf, -1: none
  double mean = 0, std = 0, min = 0, max = 0;  // over finite elements; std is the population std
  double l2 = 0;                               // sqrt(sum x^2) over finite elements
  bool all_equal = false;    // every element has the same bytes (a constant tensor)
  double first = 0;          // element 0 (the constant when all_equal)
  bool is_zero() const { return numel > 0 && zeros == numel; }
  bool constant() const { return all_equal && numel > 0; }
  bool has_nonfinite() const { return nan + inf > 0; }
  // The smaller of first_nan and first_inf (-1 when the tensor is finite).
  int64_t first_nonfinite() const {
    if (first_nan < 0) return first_inf;
    if (first_inf < 0) return first_nan;
    return first_nan < first_inf ? first_nan : first_inf;
  }
};

// How a tensor differs from the same key in a base checkpoint.
struct CompareStats {
  bool comparable = false;  // same shape
  bool bit_equal = false;
  double diff_l2 = 0;       // ||W - W_base||
  double base_l2 = 0;       // ||W_base||
  double rel_change() const { return base_l2 > 0 ? diff_l2 / base_l2 : (diff_l2 > 0 ? INFINITY : 0.0); }
};

// Bytes of one tensor per block: the unit of work of a thread and of page release (1 MiB).
inline constexpr uint64_t kStatsBlockBytes = 1ull << 20;
// How far ahead of the scan stats_pass asks the kernel to read (per file).
inline constexpr uint64_t kStatsReadAheadBytes = 64ull << 20;

enum class StatsKernel {
  Auto,    // AVX2+FMA(+F16C) where the CPU has it, scalar otherwise
  Scalar,  // the portable per-element loop (the reference the vector kernel is tested against)
};

struct StatsPassOptions {
  int threads = 0;  // 0: one per core (at most 16); small inputs run on the calling thread
  StatsKernel kernel = StatsKernel::Auto;
  bool read_ahead = true;
  // Called on the calling thread with the bytes scanned so far (for a progress bar).
  std::function<void(uint64_t)> progress;
};

struct StatsJob {
  io::TensorView view;
  std::optional<io::TensorView> base;  // compare against this tensor too (--base)
};
struct StatsResult {
  TensorStats stats;
  std::optional<CompareStats> compare;  // when the job had a base
};

// Statistics (and comparisons) of every job in one streaming pass; results in job order.
// Jobs should be given in file order (that is the order of the reads).
std::vector<StatsResult> stats_pass(const std::vector<StatsJob>& jobs, const StatsPassOptions& opt = {});

TensorStats tensor_stats(const io::TensorView& v, StatsKernel kernel = StatsKernel::Auto);
CompareStats compare_tensors(const io::TensorView& v, const io::TensorView& base);

// Whether the vector kernel runs on this CPU (StatsKernel::Auto picks it).
bool stats_simd_available();

// Element i of a view as double (any dtype).
double element(const io::TensorView& v, uint64_t i);

// Releases the pages of bytes [from, to) of a tensor's data (io::SafetensorsFile::release).
void release_range(const io::TensorView& v, uint64_t from, uint64_t to);

}  // namespace mtt::audit
