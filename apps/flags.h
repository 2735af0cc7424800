#pragma once
// Flag checks shared by the apps (CLI11 validators). They read the text as given, so "-1" for an
// unsigned flag, "nan" or "inf" for a number and "1e999" are refused before any conversion, and
// each message states the real range ("--threads: must be an integer in 0..256, got '100000'"),
// not CLI11's double limits. app_main.h prints the message as the app's one error line (exit 64).
#include <CLI/CLI.hpp>

#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <string>

#include "io/config_rules.h"

namespace mtt::app {

// An integer in [lo, hi] (decimal digits with an optional sign).
inline CLI::Validator int_range(int64_t lo, int64_t hi) {
  const std::string want = "must be " + io::integer_range_text(lo, hi);
  return CLI::Validator(
      [lo, hi, want](std::string& s) -> std::string {
        const char* b = s.data() + (!s.empty() && s[0] == '+' ? 1 : 0);
        const char* e = s.data() + s.size();
        int64_t v = 0;
        const auto r = std::from_chars(b, e, v);
        if (b == e || r.ec != std::errc() || r.ptr != e || v < lo || v > hi) return want + ", got '" + s + "'";
        return {};
      },
      hi == std::numeric_limits<int64_t>::max() ? ">=" + std::to_string(lo)
                                                : std::to_string(lo) + ".." + std::to_string(hi));
}

// An unsigned 64-bit integer (seeds): no sign, all 64 bits.
inline CLI::Validator uint64_value() {
  return CLI::Validator(
      [](std::string& s) -> std::string {
        uint64_t v = 0;
        const auto r = std::from_chars(s.data(), s.data() + s.size(), v);
        if (s.empty() || r.ec != std::errc() || r.ptr != s.data() + s.size())
          return "must be an integer in 0..18446744073709551615, got '" + s + "'";
        return {};
      },
      "0..2^64-1");
}

// A finite number in [lo, hi] (open bounds leave the bound out); NaN and Inf are never in range.
inline CLI::Validator number_range(double lo = -std::numeric_limits<double>::max(),
                                   double hi = std::numeric_limits<double>::max(), bool open_lo = false,
                                   bool open_hi = false) {
  const std::string want = "must be " + io::number_range_text(lo, hi, open_lo, open_hi);
  return CLI::Validator(
      [=](std::string& s) -> std::string {
        char* end = nullptr;
        errno = 0;
        const double v = std::strtod(s.c_str(), &end);
        const bool ok = !s.empty() && *end == '\0' && errno != ERANGE && std::isfinite(v) &&
                        (open_lo ? v > lo : v >= lo) && (open_hi ? v < hi : v <= hi);
        return ok ? std::string() : want + ", got '" + s + "'";
      },
      want.substr(std::string("must be ").size()));
}

}  // namespace mtt::app
