// Streaming statistics against a direct fp64 computation, for every float dtype, with NaN/Inf,
// constants and comparisons.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <vector>

#include "audit/stats.h"
#include "moshi/init.h"
#include "test_util.h"

using namespace mtt;
using namespace mtt::audit;

namespace {

struct Written {
  std::shared_ptr<io::SafetensorsFile> file;
};

std::vector<uint8_t> encode(const std::vector<double>& v, DType t) {
  std::vector<uint8_t> b(v.size() * dtype_size(t));
  for (std::size_t i = 0; i < v.size(); ++i) moshi::encode_value(v[i], t, b.data() + i * dtype_size(t));
  return b;
}

}  // namespace

TEST(Stats, MatchesDirectFp64ComputationForEveryFloatDtype) {
  mtt::test::TempDir dir;
  std::vector<double> v;
  for (int i = 0; i < 5000; ++i) v.push_back(1000.0 + std::sin(0.37 * i) * 3.0 + (i % 7 == 0 ? 0.0 : 0.5));
  v[10] = NAN;
  v[11] = INFINITY;
  v[12] = 0.0;
  for (DType t : {DType::BF16, DType::F16, DType::F32, DType::F64}) {
    const auto bytes = encode(v, t);
    const auto path = (dir / (std::string(dtype_name(t)) + ".safetensors")).string();
    io::write_safetensors(path, {{"x", t, {50, 100}, bytes.data()}});
    auto f = io::SafetensorsFile::open(path);
    const auto st = tensor_stats(f->view("x"));
    // Reference: the stored values (after rounding to t) in fp64, two-pass.
    double sum = 0, sq = 0, mn = INFINITY, mx = -INFINITY;
    uint64_t n = 0, zeros = 0;
    for (std::size_t i = 0; i < v.size(); ++i) {
      const double x = element_as_double(bytes.data(), t, i);
      if (!std::isfinite(x)) continue;
      sum += x, ++n, mn = std::min(mn, x), mx = std::max(mx, x), zeros += x == 0;
    }
    const double mean = sum / n;
    double l2 = 0;
    for (std::size_t i = 0; i < v.size(); ++i) {
      const double x = element_as_double(bytes.data(), t, i);
      if (std::isfinite(x)) sq += (x - mean) * (x - mean), l2 += x * x;
    }
    SCOPED_TRACE(dtype_name(t));
    EXPECT_EQ(st.numel, 5000u);
    EXPECT_EQ(st.nan, 1u);
    EXPECT_EQ(st.inf, 1u);
    EXPECT_EQ(st.finite, n);
    EXPECT_EQ(st.zeros, zeros);
    EXPECT_NEAR(st.mean, mean, 1e-12 * std::abs(mean));
    EXPECT_NEAR(st.std, std::sqrt(sq / n), 1e-9 * std::sqrt(sq / n));
    EXPECT_NEAR(st.l2, std::sqrt(l2), 1e-12 * std::sqrt(l2));
    EXPECT_EQ(st.min, mn);
    EXPECT_EQ(st.max, mx);
    EXPECT_FALSE(st.all_equal);
  }
}

TEST(Stats, ConstantsZerosAndComparison) {
  mtt::test::TempDir dir;
  const auto c = encode(std::vector<double>(1000, 0.3), DType::BF16);
  const auto z = encode(std::vector<double>(1000, 0.0), DType::BF16);
  std::vector<double> v(1000);
  for (int i = 0; i < 1000; ++i) v[i] = 0.3 + (i == 999 ? 0.01 : 0.0);
  const auto almost = encode(v, DType::BF16);
  const auto path = (dir / "c.safetensors").string();
  io::write_safetensors(path, {{"c", DType::BF16, {1000}, c.data()},
                               {"z", DType::BF16, {10, 100}, z.data()},
                               {"a", DType::BF16, {1000}, almost.data()}});
  auto f = io::SafetensorsFile::open(path);
  const auto sc = tensor_stats(f->view("c"));
  EXPECT_TRUE(sc.constant());
  EXPECT_EQ(sc.first, 0.30078125);  // bf16(0.3)
  EXPECT_EQ(sc.std, 0.0);
  EXPECT_FALSE(sc.is_zero());
  EXPECT_TRUE(tensor_stats(f->view("z")).is_zero());
  EXPECT_FALSE(tensor_stats(f->view("a")).constant());

  const auto same = compare_tensors(f->view("c"), f->view("c"));
  EXPECT_TRUE(same.comparable && same.bit_equal);
  EXPECT_EQ(same.rel_change(), 0.0);
  const auto diff = compare_tensors(f->view("a"), f->view("c"));
  EXPECT_FALSE(diff.bit_equal);
  const double d = bf16_to_float(float_to_bf16(0.31f)) - 0.30078125;
  EXPECT_NEAR(diff.rel_change(), std::abs(d) / (0.30078125 * std::sqrt(1000.0)), 1e-12);
  EXPECT_FALSE(compare_tensors(f->view("z"), f->view("c")).comparable);  // shapes differ
}

namespace {

// Values around 1 with a spread, zeros, both zero signs, denormal-range and large magnitudes, and
// NaN/Inf at chosen places (inside 8-element vectors, at block edges, in the tail).
std::vector<double> awkward_values(std::size_t n, uint64_t seed, const std::vector<std::size_t>& nan_at,
                                   const std::vector<std::size_t>& inf_at) {
  std::vector<double> v(n);
  uint64_t x = seed * 0x9E3779B97F4A7C15ULL + 1;
  for (std::size_t i = 0; i < n; ++i) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    const double u = static_cast<double>(x >> 11) / 9007199254740992.0;
    v[i] = 1.0 + (u - 0.5) * 0.1;
    if (i % 1013 == 0) v[i] = 0.0;
    if (i % 2027 == 0) v[i] = -0.0;
    if (i % 4099 == 0) v[i] = -3.0e4;
    if (i % 8191 == 0) v[i] = 1e-6;
  }
  for (std::size_t i : nan_at) v[i] = NAN;
  for (std::size_t i : inf_at) v[i] = (i % 2) ? -INFINITY : INFINITY;
  return v;
}

void expect_same_stats(const TensorStats& a, const TensorStats& b, bool bit_exact) {
  EXPECT_EQ(a.numel, b.numel);
  EXPECT_EQ(a.finite, b.finite);
  EXPECT_EQ(a.nan, b.nan);
  EXPECT_EQ(a.inf, b.inf);
  EXPECT_EQ(a.zeros, b.zeros);
  EXPECT_EQ(a.first_nan, b.first_nan);
  EXPECT_EQ(a.first_inf, b.first_inf);
  EXPECT_EQ(a.min, b.min);
  EXPECT_EQ(a.max, b.max);
  EXPECT_EQ(a.all_equal, b.all_equal);
  EXPECT_EQ(a.first, b.first);
  if (bit_exact) {
    EXPECT_EQ(a.mean, b.mean);
    EXPECT_EQ(a.std, b.std);
    EXPECT_EQ(a.l2, b.l2);
  }
}

// Mean, population std and L2 norm of the finite stored values, two-pass in long double.
struct Moments {
  long double mean = 0, std = 0, l2 = 0;
};
Moments reference_moments(const std::vector<uint8_t>& bytes, DType t, std::size_t n) {
  long double sum = 0, sq = 0, l2 = 0;
  std::size_t k = 0;
  for (std::size_t i = 0; i < n; ++i) {
    const double x = element_as_double(bytes.data(), t, i);
    if (std::isfinite(x)) sum += x, l2 += static_cast<long double>(x) * x, ++k;
  }
  const long double mean = sum / k;
  for (std::size_t i = 0; i < n; ++i) {
    const double x = element_as_double(bytes.data(), t, i);
    if (std::isfinite(x)) sq += (x - mean) * (x - mean);
  }
  return {mean, std::sqrt(sq / k), std::sqrt(l2)};
}

// Within fp64 rounding of the exact moments (the bound both kernels meet on these values).
void expect_close_to(const TensorStats& a, const Moments& m) {
  EXPECT_NEAR(a.mean, static_cast<double>(m.mean), 1e-10 * std::abs(static_cast<double>(m.mean)));
  EXPECT_NEAR(a.std, static_cast<double>(m.std), 1e-10 * static_cast<double>(m.std));
  EXPECT_NEAR(a.l2, static_cast<double>(m.l2), 1e-10 * static_cast<double>(m.l2));
}

}  // namespace

// The vector kernel against the portable loop, over several blocks (1 MiB each), with NaN and
// Inf inside vectors, across block boundaries and in the tail; and against a direct fp64
// computation of the stored values.
TEST(Stats, VectorKernelAgreesWithScalarLoopOverManyBlocks) {
  if (!stats_simd_available()) GTEST_SKIP() << "no AVX2+FMA+F16C on this CPU: only the scalar kernel runs here";
  mtt::test::TempDir dir;
  const std::size_t n = 3 * (kStatsBlockBytes / 2) + 13;  // bf16: 3 blocks and a ragged tail
  const std::vector<std::size_t> nan_at = {5, kStatsBlockBytes / 4 - 1, kStatsBlockBytes / 4, n - 3};
  const std::vector<std::size_t> inf_at = {6, 1000, kStatsBlockBytes / 2 + 7, n - 1};
  const auto v = awkward_values(n, 7, nan_at, inf_at);
  for (DType t : {DType::BF16, DType::F16, DType::F32}) {
    SCOPED_TRACE(dtype_name(t));
    const auto bytes = encode(v, t);
    const auto path = (dir / (std::string(dtype_name(t)) + ".safetensors")).string();
    io::write_safetensors(path, {{"x", t, {static_cast<int64_t>(n)}, bytes.data()}});
    auto f = io::SafetensorsFile::open(path);
    const auto simd = tensor_stats(f->view("x"), StatsKernel::Auto);
    const auto scalar = tensor_stats(f->view("x"), StatsKernel::Scalar);
    // Counts, extremes, locations, equality: identical. Sums: another order, both as close to
    // the exact moments.
    expect_same_stats(simd, scalar, false);
    const Moments ref = reference_moments(bytes, t, n);
    expect_close_to(simd, ref);
    expect_close_to(scalar, ref);
    std::printf("  %s: |mean - exact| simd %.3g scalar %.3g; |l2 - exact| simd %.3g scalar %.3g\n", dtype_name(t),
                std::abs(simd.mean - static_cast<double>(ref.mean)), std::abs(scalar.mean - static_cast<double>(ref.mean)),
                std::abs(simd.l2 - static_cast<double>(ref.l2)), std::abs(scalar.l2 - static_cast<double>(ref.l2)));
    // Counts and locations against the values themselves.
    uint64_t nans = 0, infs = 0, zeros = 0;
    int64_t first_nan = -1, first_inf = -1;
    double mn = INFINITY, mx = -INFINITY, sum = 0;
    for (std::size_t i = 0; i < n; ++i) {
      const double x = element_as_double(bytes.data(), t, i);
      if (std::isnan(x)) {
        ++nans;
        if (first_nan < 0) first_nan = static_cast<int64_t>(i);
      } else if (std::isinf(x)) {
        ++infs;
        if (first_inf < 0) first_inf = static_cast<int64_t>(i);
      } else {
        zeros += x == 0, mn = std::min(mn, x), mx = std::max(mx, x), sum += x;
      }
    }
    EXPECT_EQ(simd.nan, nans);
    EXPECT_EQ(simd.inf, infs);
    EXPECT_EQ(simd.first_nan, first_nan);
    EXPECT_EQ(simd.first_inf, first_inf);
    EXPECT_EQ(simd.first_nonfinite(), std::min(first_nan, first_inf));
    EXPECT_EQ(simd.zeros, zeros);
    EXPECT_EQ(simd.min, mn);
    EXPECT_EQ(simd.max, mx);
    EXPECT_NEAR(simd.mean, sum / static_cast<double>(simd.finite), 1e-12);
  }
}

// Results depend on the data only: not on the number of threads, nor on where the tensor sits
// in the file (the duplicate-copy check compares statistics of two copies exactly).
TEST(Stats, ResultsDoNotDependOnThreadsOrFilePosition) {
  mtt::test::TempDir dir;
  const std::size_t n = 5 * (kStatsBlockBytes / 4) + 3;  // f32: 5 blocks and a tail
  const auto v = awkward_values(n, 11, {77}, {kStatsBlockBytes / 4 * 2 + 1});
  const auto b = encode(v, DType::F32);
  const std::vector<uint8_t> pad(4 * 333, 0);
  const auto path = (dir / "two.safetensors").string();
  // "a_pad" sorts first and shifts "b_copy" by an odd number of elements relative to "a_orig".
  io::write_safetensors(path, {{"a_orig", DType::F32, {static_cast<int64_t>(n)}, b.data()},
                               {"a_pad", DType::F32, {333}, pad.data()},
                               {"b_copy", DType::F32, {static_cast<int64_t>(n)}, b.data()}});
  auto f = io::SafetensorsFile::open(path);
  std::vector<StatsJob> jobs;
  for (const auto& info : f->tensors()) jobs.push_back({f->view(info), std::nullopt});
  StatsPassOptions one, three;
  one.threads = 1;
  three.threads = 3;
  const auto r1 = stats_pass(jobs, one), r3 = stats_pass(jobs, three);
  ASSERT_EQ(r1.size(), 3u);
  for (std::size_t i = 0; i < r1.size(); ++i) {
    SCOPED_TRACE(r1[i].stats.name);
    expect_same_stats(r3[i].stats, r1[i].stats, true);
  }
  const auto& orig = r1[0].stats.name == "a_orig" ? r1[0].stats : r1[2].stats;
  const auto& copy = r1[0].stats.name == "b_copy" ? r1[0].stats : r1[2].stats;
  ASSERT_EQ(orig.name, "a_orig");
  ASSERT_EQ(copy.name, "b_copy");
  expect_same_stats(orig, copy, true);
  EXPECT_EQ(orig.first_nan, 77);
}

// A comparison in the same pass as the statistics equals compare_tensors, block by block.
TEST(Stats, PassComparesWithBaseLikeCompareTensors) {
  mtt::test::TempDir dir;
  const std::size_t n = 2 * (kStatsBlockBytes / 2) + 5;
  auto v = awkward_values(n, 3, {}, {});
  const auto a = encode(v, DType::BF16);
  v[n - 2] += 0.25;  // differs in the last block only
  const auto c = encode(v, DType::BF16);
  const auto path = (dir / "cmp.safetensors").string();
  io::write_safetensors(path, {{"a", DType::BF16, {static_cast<int64_t>(n)}, a.data()},
                               {"c", DType::BF16, {static_cast<int64_t>(n)}, c.data()}});
  auto f = io::SafetensorsFile::open(path);
  StatsPassOptions o;
  o.threads = 2;
  const auto r = stats_pass({{f->view("c"), f->view("a")}, {f->view("a"), f->view("a")}}, o);
  ASSERT_TRUE(r[0].compare && r[1].compare);
  EXPECT_TRUE(r[1].compare->bit_equal);
  EXPECT_EQ(r[1].compare->diff_l2, 0.0);
  EXPECT_FALSE(r[0].compare->bit_equal);
  const double d = element_as_double(c.data(), DType::BF16, n - 2) - element_as_double(a.data(), DType::BF16, n - 2);
  EXPECT_NEAR(r[0].compare->diff_l2, std::abs(d), 1e-15);
  const auto direct = compare_tensors(f->view("c"), f->view("a"));
  EXPECT_EQ(direct.diff_l2, r[0].compare->diff_l2);
  EXPECT_NEAR(direct.base_l2, r[0].compare->base_l2, 1e-12 * direct.base_l2);
}
