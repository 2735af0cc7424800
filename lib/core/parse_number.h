#pragma once
// Numbers from text read out of files (checkpoint keys, folder names, safetensors metadata):
// std::stoi and friends throw std::invalid_argument / std::out_of_range, which would reach the user
// as an internal error; these return nothing instead, and the caller names the file and the key.
#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <optional>
#include <string>

namespace mtt {

// The whole of `s` as a decimal integer (optional leading '-'), within int64.
inline std::optional<int64_t> parse_int64(const std::string& s) {
  int64_t v = 0;
  const auto r = std::from_chars(s.data(), s.data() + s.size(), v);
  if (s.empty() || r.ec != std::errc() || r.ptr != s.data() + s.size()) return std::nullopt;
  return v;
}

// The whole of `s` as a finite double.
inline std::optional<double> parse_finite_double(const std::string& s) {
  if (s.empty()) return std::nullopt;
  char* end = nullptr;
  const double v = std::strtod(s.c_str(), &end);
  if (*end != '\0' || !std::isfinite(v)) return std::nullopt;
  return v;
}

}  // namespace mtt
