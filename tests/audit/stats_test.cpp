// Streaming statistics against a direct fp64 computation, for every float dtype, with NaN/Inf,
// constants and comparisons.
#include <gtest/gtest.h>

#include <cmath>
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
