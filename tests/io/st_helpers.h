#pragma once
// Helpers shared by the io tests: raw safetensors bytes, CRC-32 (as Python's zlib.crc32), and
// the Python reference (tests/io/st_reference.py on the PyPI `safetensors` package).
#include <cstdint>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "test_util.h"

namespace mtt::test {

// [u64 LE N][header][data]; the header is used verbatim (no padding added).
inline std::string st_bytes(const std::string& header, const std::string& data = "") {
  std::string out(8, '\0');
  uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((n >> (8 * i)) & 0xFF);
  return out + header + data;
}

inline void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream f(path, std::ios::binary);
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

inline uint32_t crc32(const void* data, std::size_t n) {
  static uint32_t table[256] = {0};
  static bool init = false;
  if (!init) {
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
      table[i] = c;
    }
    init = true;
  }
  uint32_t c = 0xFFFFFFFFu;
  auto* p = static_cast<const uint8_t*>(data);
  for (std::size_t i = 0; i < n; ++i) c = table[(c ^ p[i]) & 0xFF] ^ (c >> 8);
  return c ^ 0xFFFFFFFFu;
}

inline bool have_python() { return std::string(MTT_PYTHON).size() > 0 && std::ifstream(MTT_PYTHON).good(); }

inline std::string st_reference_script() { return (source_dir() / "tests" / "io" / "st_reference.py").string(); }

// Runs the reference script (one Python start for all `paths`: importing torch is slow);
// status 3 means the reference rejected a file.
inline CommandResult st_reference(const std::string& mode, const std::vector<std::string>& paths) {
  std::string cmd = std::string(MTT_PYTHON) + " " + st_reference_script() + " " + mode;
  for (const auto& p : paths) cmd += " '" + p + "'";
  return run_command(cmd);
}

}  // namespace mtt::test
