#pragma once
// Progress on stderr for long work: a bar on a terminal, a periodic line otherwise (CI logs). Both
// show the rate, the ETA and, where the work has one, its current figure (the training loss).
#include <chrono>
#include <cstdint>
#include <string>

namespace mtt {

// The text after the label: "3/7 (43%) 1.50 step/s ETA 2.7s loss 2.3456 2.0s elapsed". `unit` names
// one item ("step", "frame"); "B" counts bytes and shows the rate in kB/s, MB/s, GB/s. The ETA is
// left out until something is done (no rate yet) and once all is done. `first`: where this process
// started (a resumed training's step): the rate counts the work done since.
std::string progress_text(uint64_t done, uint64_t total, double seconds, const std::string& unit,
                          const std::string& note, uint64_t first = 0);

class Progress {
 public:
  Progress(std::string label, uint64_t total, bool enabled = true, std::string unit = "");
  ~Progress();
  void advance(uint64_t n = 1);
  void set(uint64_t done);
  // A job resumed at `done` (training from its checkpoint's step): the rate counts the work after it.
  void resume_at(uint64_t done);
  // The current figure shown after the ETA ("loss 2.3456"); drawn with the next update.
  void note(std::string text) { note_ = std::move(text); }
  void finish();

 private:
  void draw(bool force);
  std::string label_, unit_, note_;
  uint64_t total_, done_ = 0, first_ = 0;
  bool enabled_, tty_, finished_ = false;
  std::chrono::steady_clock::time_point start_, last_;
};

}  // namespace mtt
