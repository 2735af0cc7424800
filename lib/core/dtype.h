#pragma once
// Safetensors dtypes and scalar conversions (fp32 statistics whatever the stored dtype).
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>

namespace mtt {

enum class DType { F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL, F8_E4M3, F8_E5M2 };

// Name as written in a safetensors header ("BF16", "F8_E4M3", ...).
const char* dtype_name(DType t);
std::optional<DType> parse_dtype(std::string_view name);
std::size_t dtype_size(DType t);
bool dtype_is_float(DType t);

inline float bf16_to_float(uint16_t v) {
  uint32_t bits = static_cast<uint32_t>(v) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}
// Round-to-nearest-even, NaN kept quiet: the conversion torch uses for .to(bfloat16).
uint16_t float_to_bf16(float f);
float f16_to_float(uint16_t h);
uint16_t float_to_f16(float f);
float f8e4m3_to_float(uint8_t v);
float f8e5m2_to_float(uint8_t v);

// Element i of a raw buffer of dtype t, as double (exact for every dtype but I64/U64 > 2^53).
double element_as_double(const uint8_t* data, DType t, std::size_t i);

}  // namespace mtt
