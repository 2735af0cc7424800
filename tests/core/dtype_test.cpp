#include "core/dtype.h"

#include <gtest/gtest.h>

#include <cmath>

namespace mtt {
namespace {

TEST(DType, NamesRoundTrip) {
  for (DType t : {DType::F64, DType::F32, DType::F16, DType::BF16, DType::I64, DType::I32, DType::I16, DType::I8,
                  DType::U8, DType::BOOL, DType::F8_E4M3, DType::F8_E5M2}) {
    auto back = parse_dtype(dtype_name(t));
    ASSERT_TRUE(back.has_value());
    EXPECT_EQ(*back, t);
  }
  EXPECT_FALSE(parse_dtype("F32 ").has_value());
  EXPECT_FALSE(parse_dtype("f32").has_value());
}

TEST(DType, Bf16OfPointThreeIsTheSeedValue) {
  // seed 000: backward gates stored as bf16(0.3) read back as 0.30078125.
  EXPECT_EQ(bf16_to_float(float_to_bf16(0.3f)), 0.30078125f);
  EXPECT_EQ(bf16_to_float(float_to_bf16(0.1f)), 0.10009765625f);
}

TEST(DType, HalfConversionsAreExactOnRepresentableValues) {
  for (float f : {0.0f, -0.0f, 1.0f, -2.5f, 65504.0f, 6.103515625e-05f, 5.960464477539063e-08f}) {
    EXPECT_EQ(f16_to_float(float_to_f16(f)), f) << f;
  }
  EXPECT_TRUE(std::isinf(f16_to_float(float_to_f16(1e6f))));
  EXPECT_TRUE(std::isnan(f16_to_float(float_to_f16(NAN))));
}

TEST(DType, Float8) {
  EXPECT_EQ(f8e4m3_to_float(0x38), 1.0f);   // exp 7, mant 0
  EXPECT_EQ(f8e4m3_to_float(0x7E), 448.0f);  // max finite E4M3FN
  EXPECT_TRUE(std::isnan(f8e4m3_to_float(0x7F)));
  EXPECT_EQ(f8e5m2_to_float(0x3C), 1.0f);
}

}  // namespace
}  // namespace mtt
