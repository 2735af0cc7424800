#pragma once
// Progress on stderr for long work: a bar on a terminal, a periodic line otherwise (CI logs).
#include <chrono>
#include <cstdint>
#include <string>

namespace mtt {

class Progress {
 public:
  Progress(std::string label, uint64_t total, bool enabled = true);
  ~Progress();
  void advance(uint64_t n = 1);
  void set(uint64_t done);
  void finish();

 private:
  void draw(bool force);
  std::string label_;
  uint64_t total_, done_ = 0;
  bool enabled_, tty_, finished_ = false;
  std::chrono::steady_clock::time_point start_, last_;
};

}  // namespace mtt
