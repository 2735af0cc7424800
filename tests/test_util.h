#pragma once
// Paths and helpers shared by the tests.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>
#include <sys/wait.h>
#include <unistd.h>

namespace mtt::test {

inline std::filesystem::path source_dir() { return MTT_SOURCE_DIR; }
inline std::filesystem::path shared_dir() {
  if (const char* s = std::getenv("MTT_SHARED_DIR")) return s;
  return MTT_SHARED_DIR;
}
inline std::filesystem::path golden_dir() { return shared_dir() / "golden"; }
inline std::filesystem::path fixtures_dir() { return source_dir() / "tests" / "fixtures"; }
// Folders of golden files every golden test runs: shared/golden/{ttt,moshi}, the committed variants
// (tests/fixtures/golden_variants: other seeds and odd shapes from the reference code) and any
// folders in MTT_GOLDEN_DIRS (':'-separated), so a further set runs through the same tests.
inline std::vector<std::filesystem::path> golden_test_dirs() {
  std::vector<std::filesystem::path> dirs = {golden_dir() / "ttt", golden_dir() / "moshi",
                                             fixtures_dir() / "golden_variants"};
  if (const char* extra = std::getenv("MTT_GOLDEN_DIRS")) {
    std::string s = extra;
    size_t b = 0;
    while (b <= s.size()) {
      size_t e = s.find(':', b);
      if (e == std::string::npos) e = s.size();
      if (e > b) dirs.emplace_back(s.substr(b, e - b));
      b = e + 1;
    }
  }
  return dirs;
}
inline std::filesystem::path app_path(const std::string& name) {
  return std::filesystem::path(MTT_BINARY_DIR) / "bin" / name;
}

// scripts/test.sh exports MTT_REQUIRE_REFERENCE=1 when the PyPI moshi reference is required (CI,
// and any run without the MTT_ALLOW_NO_REFERENCE=1 opt-out): a parity test that cannot reach the
// reference must then fail, not skip, or a green run could carry no upstream parity at all.
inline bool reference_required() {
  const char* v = std::getenv("MTT_REQUIRE_REFERENCE");
  return v != nullptr && std::string(v) == "1";
}

// A fresh directory under the system temp dir, removed at scope exit.
class TempDir {
 public:
  TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "mtt-test-XXXXXX").string();
    char* p = ::mkdtemp(tmpl.data());
    path_ = p ? p : tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  const std::filesystem::path& path() const { return path_; }
  std::filesystem::path operator/(const std::string& s) const { return path_ / s; }

 private:
  std::filesystem::path path_;
};

struct CommandResult {
  int status = -1;  // exit status
  std::string out;  // stdout
  std::string err;  // stderr
};

// Runs a shell command, capturing stdout and stderr separately.
inline CommandResult run_command(const std::string& cmd) {
  TempDir dir;
  std::string errf = (dir / "stderr").string();
  CommandResult r;
  FILE* p = ::popen((cmd + " 2>" + errf).c_str(), "r");
  if (!p) return r;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) r.out.append(buf, n);
  int st = ::pclose(p);
  r.status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
  if (FILE* e = std::fopen(errf.c_str(), "rb")) {
    while ((n = std::fread(buf, 1, sizeof buf, e)) > 0) r.err.append(buf, n);
    std::fclose(e);
  }
  return r;
}

// A 16-bit PCM WAV holding a sine (channel c advances (c + 1) * step radians a sample), written
// byte by byte so the tests that feed audio to the apps do not go through our own WAV writer.
struct Tone {
  int rate = 24000;
  int channels = 1;
  double amplitude = 8000;
  double step = 0.05;
};
inline void write_tone_wav(const std::filesystem::path& p, double seconds, const Tone& t = {}) {
  const int n = static_cast<int>(seconds * t.rate);
  const auto bytes = static_cast<uint32_t>(2 * t.channels * n);
  std::ofstream f(p, std::ios::binary);
  auto u32 = [&](uint32_t v) { f.write(reinterpret_cast<const char*>(&v), 4); };
  auto u16 = [&](uint16_t v) { f.write(reinterpret_cast<const char*>(&v), 2); };
  f.write("RIFF", 4);
  u32(36 + bytes);
  f.write("WAVEfmt ", 8);
  u32(16);
  u16(1);  // PCM
  u16(static_cast<uint16_t>(t.channels));
  u32(static_cast<uint32_t>(t.rate));
  u32(static_cast<uint32_t>(2 * t.channels * t.rate));
  u16(static_cast<uint16_t>(2 * t.channels));
  u16(16);
  f.write("data", 4);
  u32(bytes);
  for (int i = 0; i < n; ++i)
    for (int c = 0; c < t.channels; ++c)
      u16(static_cast<uint16_t>(static_cast<int16_t>(t.amplitude * std::sin(i * t.step * (c + 1)))));
}

}  // namespace mtt::test

// In a gtest body or void helper: skip with `why`, or fail when the reference is required.
#define MTT_REFERENCE_UNAVAILABLE(why)                                                 \
  do {                                                                                 \
    if (::mtt::test::reference_required()) {                                           \
      FAIL() << "the PyPI reference is required (MTT_REQUIRE_REFERENCE=1): " << (why); \
    } else {                                                                           \
      GTEST_SKIP() << (why);                                                           \
    }                                                                                  \
  } while (0)
