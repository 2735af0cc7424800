#include "audit/stats.h"

#include <immintrin.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <limits>
#include <map>
#include <mutex>
#include <thread>

namespace mtt::audit {

namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

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

// The statistics of one block (or of several, merged). Moments are accumulated around a shift
// (the tensor's first finite value) to keep fp64 cancellation small.
struct Partial {
  double sum = 0, sumsq = 0, mn = kInf, mx = -kInf;
  uint64_t finite = 0, nan = 0, inf = 0, zeros = 0;
  int64_t first_nan = -1, first_inf = -1;
  bool equal = true;  // every element's bytes equal element 0's
  // Comparison with a base tensor.
  double dd = 0, bb = 0;
  bool bytes_equal = true;

  void take(double x, double shift, uint64_t idx) {
    if (!std::isfinite(x)) {
      if (std::isnan(x)) {
        ++nan;
        if (first_nan < 0) first_nan = static_cast<int64_t>(idx);
      } else {
        ++inf;
        if (first_inf < 0) first_inf = static_cast<int64_t>(idx);
      }
      return;
    }
    const double d = x - shift;
    sum += d;
    sumsq += d * d;
    mn = std::min(mn, x);
    mx = std::max(mx, x);
    zeros += (x == 0.0);
    ++finite;
  }

  // Blocks are merged in index order, so the first indices of the earlier block win.
  void merge(const Partial& o) {
    sum += o.sum;
    sumsq += o.sumsq;
    mn = std::min(mn, o.mn);
    mx = std::max(mx, o.mx);
    finite += o.finite;
    nan += o.nan;
    inf += o.inf;
    zeros += o.zeros;
    if (first_nan < 0) first_nan = o.first_nan;
    if (first_inf < 0) first_inf = o.first_inf;
    equal = equal && o.equal;
    dd += o.dd;
    bb += o.bb;
    bytes_equal = bytes_equal && o.bytes_equal;
  }
};

// ---- scalar kernel (any dtype) ---------------------------------------------------------------

void scalar_block(const uint8_t* p, DType t, std::size_t es, uint64_t begin, uint64_t end, double shift, Partial& a) {
  for (uint64_t i = begin; i < end; ++i) a.take(load(p, t, i), shift, i);
  // Bit-equality with element 0, by bytes (so -0.0 vs 0.0 and NaN payloads count as different).
  for (uint64_t i = begin; i < end && a.equal; ++i) a.equal = std::memcmp(p + i * es, p, es) == 0;
}

// ---- AVX2 + FMA kernel (BF16, F16, F32) -----------------------------------------------------
// Eight elements at a time as f32 (exact for these dtypes); vectors holding a NaN or Inf take
// the scalar path element by element (they are rare), the others update f32 min/max, an integer
// zero count and f64 sums of (x - shift) and (x - shift)^2 in 4 independent accumulators.

#define MTT_AVX2 __attribute__((target("avx2,fma,f16c")))

MTT_AVX2 inline double hsum(__m256d v) {
  __m128d s = _mm_add_pd(_mm256_castpd256_pd128(v), _mm256_extractf128_pd(v, 1));
  return _mm_cvtsd_f64(_mm_add_sd(s, _mm_unpackhi_pd(s, s)));
}
MTT_AVX2 inline float hmin(__m256 v) {
  __m128 m = _mm_min_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  m = _mm_min_ps(m, _mm_movehl_ps(m, m));
  m = _mm_min_ss(m, _mm_shuffle_ps(m, m, 1));
  return _mm_cvtss_f32(m);
}
MTT_AVX2 inline float hmax(__m256 v) {
  __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  m = _mm_max_ps(m, _mm_movehl_ps(m, m));
  m = _mm_max_ss(m, _mm_shuffle_ps(m, m, 1));
  return _mm_cvtss_f32(m);
}

template <DType T>
MTT_AVX2 void avx2_block(const uint8_t* p, uint64_t begin, uint64_t end, double shift, Partial& a) {
  constexpr std::size_t es = T == DType::F32 ? 4 : 2;
  const __m256i exp_mask = _mm256_set1_epi32(0x7f800000);
  const __m256d vshift = _mm256_set1_pd(shift);
  // Two accumulators per sum (the low and high four lanes of a vector): few enough registers that
  // nothing spills, enough independent chains that the adds do not wait on each other.
  __m256d slo = _mm256_setzero_pd(), shi = slo, qlo = slo, qhi = slo;
  __m256 vmn = _mm256_set1_ps(std::numeric_limits<float>::infinity());
  __m256 vmx = _mm256_set1_ps(-std::numeric_limits<float>::infinity());
  __m256i zc = _mm256_setzero_si256();
  // Equality with element 0: its bytes broadcast, compared lane-wise, and-ed over the block.
  __m256i e0, eq_all = _mm256_set1_epi32(-1);
  if constexpr (es == 2) {
    uint16_t h;
    std::memcpy(&h, p, 2);
    e0 = _mm256_set1_epi16(static_cast<short>(h));
  } else {
    uint32_t w;
    std::memcpy(&w, p, 4);
    e0 = _mm256_set1_epi32(static_cast<int>(w));
  }
  Partial slow;  // elements of vectors that hold a NaN or Inf, and the tail
  uint64_t fast = 0;
  uint64_t i = begin;
  for (; i + 8 <= end; i += 8) {
    __m256 x;
    if constexpr (T == DType::F32) {
      const __m256i raw = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + 4 * i));
      eq_all = _mm256_and_si256(eq_all, _mm256_cmpeq_epi32(raw, e0));
      x = _mm256_castsi256_ps(raw);
    } else {
      const __m128i raw = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 2 * i));
      eq_all = _mm256_and_si256(eq_all, _mm256_castsi128_si256(_mm_cmpeq_epi16(raw, _mm256_castsi256_si128(e0))));
      if constexpr (T == DType::BF16) x = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(raw), 16));
      else x = _mm256_cvtph_ps(raw);
    }
    const __m256i nf = _mm256_cmpeq_epi32(_mm256_and_si256(_mm256_castps_si256(x), exp_mask), exp_mask);
    if (__builtin_expect(!_mm256_testz_si256(nf, nf), 0)) {
      alignas(32) float v[8];
      _mm256_store_ps(v, x);
      for (int k = 0; k < 8; ++k) slow.take(v[k], shift, i + static_cast<uint64_t>(k));
      continue;
    }
    vmn = _mm256_min_ps(vmn, x);
    vmx = _mm256_max_ps(vmx, x);
    zc = _mm256_sub_epi32(zc, _mm256_castps_si256(_mm256_cmp_ps(x, _mm256_setzero_ps(), _CMP_EQ_OQ)));
    const __m256d lo = _mm256_sub_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(x)), vshift);
    const __m256d hi = _mm256_sub_pd(_mm256_cvtps_pd(_mm256_extractf128_ps(x, 1)), vshift);
    slo = _mm256_add_pd(slo, lo);
    shi = _mm256_add_pd(shi, hi);
    qlo = _mm256_fmadd_pd(lo, lo, qlo);
    qhi = _mm256_fmadd_pd(hi, hi, qhi);
    fast += 8;
  }
  for (uint64_t k = i; k < end; ++k) {
    slow.take(load(p, T, k), shift, k);
    slow.equal = slow.equal && std::memcmp(p + k * es, p, es) == 0;
  }
  if constexpr (es == 2) eq_all = _mm256_inserti128_si256(eq_all, _mm_set1_epi32(-1), 1);  // upper half unused

  Partial r;
  r.sum = hsum(slo) + hsum(shi);
  r.sumsq = hsum(qlo) + hsum(qhi);
  if (fast) {
    r.mn = hmin(vmn);
    r.mx = hmax(vmx);
  }
  alignas(32) uint32_t z[8];
  _mm256_store_si256(reinterpret_cast<__m256i*>(z), zc);
  for (uint32_t c : z) r.zeros += c;
  r.finite = fast;
  r.equal = _mm256_movemask_epi8(eq_all) == -1;
  r.merge(slow);
  a.merge(r);
}

bool cpu_has_avx2() {
  static const bool ok = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                         __builtin_cpu_supports("f16c");
  return ok;
}

void block_stats(const io::TensorView& v, uint64_t begin, uint64_t end, double shift, StatsKernel kernel, Partial& a) {
  const DType t = v.dtype();
  if (kernel == StatsKernel::Auto && cpu_has_avx2()) {
    switch (t) {
      case DType::BF16: return avx2_block<DType::BF16>(v.data, begin, end, shift, a);
      case DType::F16: return avx2_block<DType::F16>(v.data, begin, end, shift, a);
      case DType::F32: return avx2_block<DType::F32>(v.data, begin, end, shift, a);
      default: break;
    }
  }
  scalar_block(v.data, t, dtype_size(t), begin, end, shift, a);
}

void block_compare(const io::TensorView& v, const io::TensorView& base, uint64_t begin, uint64_t end, Partial& a) {
  const std::size_t ea = dtype_size(v.dtype()), eb = dtype_size(base.dtype());
  const bool same_dtype = v.dtype() == base.dtype();
  const bool equal = same_dtype && std::memcmp(v.data + begin * ea, base.data + begin * eb, (end - begin) * ea) == 0;
  a.bytes_equal = a.bytes_equal && equal;
  double dd = 0, bb = 0;
  for (uint64_t i = begin; i < end; ++i) {
    const double x = load(v.data, v.dtype(), i), b = load(base.data, base.dtype(), i);
    if (!equal) dd += (x - b) * (x - b);
    bb += b * b;
  }
  a.dd += dd;
  a.bb += bb;
}

// The first finite value of a tensor (0 when there is none): the shift of the moments.
double first_finite(const io::TensorView& v) {
  const uint64_t n = v.numel();
  for (uint64_t i = 0; i < n; ++i) {
    const double x = load(v.data, v.dtype(), i);
    if (std::isfinite(x)) return x;
  }
  return 0;
}

TensorStats finish(const io::TensorView& v, const Partial& acc, double shift) {
  TensorStats st;
  st.name = v.name();
  st.dtype = v.dtype();
  st.shape = v.shape();
  st.numel = v.numel();
  st.nbytes = v.nbytes();
  if (st.numel == 0) return st;
  st.first = load(v.data, st.dtype, 0);
  st.all_equal = acc.equal;
  st.finite = acc.finite;
  st.nan = acc.nan;
  st.inf = acc.inf;
  st.zeros = acc.zeros;
  st.first_nan = acc.first_nan;
  st.first_inf = acc.first_inf;
  if (acc.finite > 0) {
    const double n = static_cast<double>(acc.finite);
    const double md = acc.sum / n;
    st.mean = shift + md;
    st.std = std::sqrt(std::max(0.0, acc.sumsq / n - md * md));
    if (acc.equal) st.std = 0.0;  // exact for constant tensors
    st.min = acc.mn;
    st.max = acc.mx;
    // sum x^2 = sum (d + s)^2 = sumsq + 2 s sum + n s^2
    st.l2 = std::sqrt(std::max(0.0, acc.sumsq + 2.0 * shift * acc.sum + n * shift * shift));
  }
  return st;
}

CompareStats finish_compare(const io::TensorView& v, const io::TensorView& base, const Partial& acc) {
  CompareStats c;
  c.comparable = true;
  // Same dtype: equality is by bytes. Different dtypes: numerically identical after conversion.
  c.bit_equal = v.dtype() == base.dtype() ? acc.bytes_equal : acc.dd == 0.0;
  c.diff_l2 = std::sqrt(acc.dd);  // equal blocks add nothing
  c.base_l2 = std::sqrt(acc.bb);
  return c;
}

// File offset of a view's data (for read-ahead).
uint64_t file_offset(const io::TensorView& v) { return v.file->header().data_start + v.info->begin; }

// Keeps the kernel reading kStatsReadAheadBytes ahead of the furthest block handed out.
class ReadAhead {
 public:
  void ahead_of(const io::TensorView& v, uint64_t end_byte_in_tensor) {
    if (!v.file || !v.info) return;
    const uint64_t pos = file_offset(v) + end_byte_in_tensor;
    std::lock_guard<std::mutex> lock(mu_);
    uint64_t& until = until_[v.file.get()];
    if (pos + kStatsReadAheadBytes / 2 <= until) return;  // still half a window ahead
    const uint64_t from = std::max(until, pos);
    const uint64_t to = pos + kStatsReadAheadBytes;
    v.file->prefetch(from, to);
    until = to;
  }

 private:
  std::mutex mu_;
  std::map<const io::SafetensorsFile*, uint64_t> until_;
};

}  // namespace

bool stats_simd_available() { return cpu_has_avx2(); }

double element(const io::TensorView& v, uint64_t i) { return load(v.data, v.dtype(), i); }

void release_range(const io::TensorView& v, uint64_t from, uint64_t to) {
  if (!v.file || !v.info) return;
  io::TensorInfo part = *v.info;
  part.begin = v.info->begin + from;
  part.end = v.info->begin + to;
  v.file->release(part);
}

std::vector<StatsResult> stats_pass(const std::vector<StatsJob>& jobs, const StatsPassOptions& opt) {
  struct JobState {
    uint64_t per_block = 1, blocks = 0;
    bool compare = false;
    std::vector<Partial> partials;
    std::atomic<int> shift_state{0};  // 0 not yet, 2 ready (set by whoever runs block 0)
    double shift = 0;
    std::atomic<uint64_t> left{0};    // blocks not finished: the last one releases the whole tensor
  };
  std::vector<JobState> state(jobs.size());
  struct Item {
    uint32_t job;
    uint64_t block;
  };
  std::vector<Item> items;
  uint64_t total_bytes = 0;
  for (std::size_t j = 0; j < jobs.size(); ++j) {
    const StatsJob& job = jobs[j];
    JobState& s = state[j];
    const uint64_t n = job.view.numel();
    const std::size_t es = dtype_size(job.view.dtype());
    s.compare = job.base && job.base->shape() == job.view.shape();
    const std::size_t eb = s.compare ? dtype_size(job.base->dtype()) : 1;
    s.per_block = std::max<uint64_t>(1, kStatsBlockBytes / std::max(es, eb));
    s.blocks = (n + s.per_block - 1) / s.per_block;
    s.partials.resize(s.blocks);
    s.left = s.blocks;
    for (uint64_t b = 0; b < s.blocks; ++b) items.push_back({static_cast<uint32_t>(j), b});
    total_bytes += job.view.nbytes() + (s.compare ? job.base->nbytes() : 0);
  }

  ReadAhead ra;
  std::atomic<std::size_t> next{0};
  std::atomic<uint64_t> done_bytes{0};
  std::mutex err_mu;
  std::exception_ptr failure;
  std::atomic<bool> failed{false};
  auto run_item = [&](const Item& it) {
    const StatsJob& job = jobs[it.job];
    JobState& s = state[it.job];
    const io::TensorView& v = job.view;
    const std::size_t es = dtype_size(v.dtype());
    const uint64_t begin = it.block * s.per_block, end = std::min(v.numel(), begin + s.per_block);
    if (opt.read_ahead) {
      ra.ahead_of(v, end * es);
      if (s.compare) ra.ahead_of(*job.base, end * dtype_size(job.base->dtype()));
    }
    if (it.block == 0) {
      s.shift = first_finite(v);
      s.shift_state.store(2, std::memory_order_release);
    } else {
      // Block 0 was handed out before this one and waits for nothing: this wait is short.
      while (s.shift_state.load(std::memory_order_acquire) != 2) {
        if (failed.load()) return;
        std::this_thread::yield();
      }
    }
    Partial& part = s.partials[it.block];
    block_stats(v, begin, end, s.shift, opt.kernel, part);  // equality: with the tensor's element 0
    release_range(v, begin * es, end * es);
    uint64_t bytes = (end - begin) * es;
    if (s.compare) {
      const std::size_t eb = dtype_size(job.base->dtype());
      block_compare(v, *job.base, begin, end, part);
      release_range(*job.base, begin * eb, end * eb);
      bytes += (end - begin) * eb;
    }
    if (s.left.fetch_sub(1, std::memory_order_acq_rel) == 1) {
      // Pages that straddle two blocks were left mapped by the block releases.
      release_range(v, 0, v.nbytes());
      if (s.compare) release_range(*job.base, 0, job.base->nbytes());
    }
    done_bytes.fetch_add(bytes, std::memory_order_relaxed);
  };
  auto worker = [&](bool caller) {
    while (true) {
      {
        std::lock_guard<std::mutex> lock(err_mu);
        if (failure) return;
      }
      const std::size_t k = next.fetch_add(1);
      if (k >= items.size()) return;
      try {
        run_item(items[k]);
      } catch (...) {
        failed = true;
        std::lock_guard<std::mutex> lock(err_mu);
        if (!failure) failure = std::current_exception();
        return;
      }
      if (caller && opt.progress) opt.progress(done_bytes.load(std::memory_order_relaxed));
    }
  };
  int threads = opt.threads > 0 ? opt.threads : static_cast<int>(std::thread::hardware_concurrency());
  threads = std::clamp(threads, 1, 16);
  if (total_bytes < 4 * kStatsBlockBytes || items.size() < 2) threads = 1;  // not worth a thread
  std::vector<std::thread> pool;
  for (int t = 1; t < threads; ++t) pool.emplace_back(worker, false);
  worker(true);
  for (auto& t : pool) t.join();
  if (failure) std::rethrow_exception(failure);
  if (opt.progress) opt.progress(done_bytes.load());

  std::vector<StatsResult> out(jobs.size());
  for (std::size_t j = 0; j < jobs.size(); ++j) {
    Partial acc;
    for (const Partial& p : state[j].partials) acc.merge(p);
    out[j].stats = finish(jobs[j].view, acc, state[j].shift);
    if (jobs[j].base) {
      if (state[j].compare) out[j].compare = finish_compare(jobs[j].view, *jobs[j].base, acc);
      else out[j].compare = CompareStats{};  // shapes differ: not comparable
    }
  }
  return out;
}

TensorStats tensor_stats(const io::TensorView& v, StatsKernel kernel) {
  StatsPassOptions o;
  o.kernel = kernel;
  o.threads = 1;
  return stats_pass({StatsJob{v, std::nullopt}}, o)[0].stats;
}

CompareStats compare_tensors(const io::TensorView& v, const io::TensorView& base) {
  StatsPassOptions o;
  o.threads = 1;
  return *stats_pass({StatsJob{v, base}}, o)[0].compare;
}

}  // namespace mtt::audit
