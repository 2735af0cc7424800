#include "core/progress.h"

#include <unistd.h>

#include <cmath>
#include <cstdio>

namespace mtt {

namespace {

std::string duration_text(double s) {
  char buf[64];
  if (s < 60) std::snprintf(buf, sizeof buf, "%.1fs", s);
  else if (s < 3600) std::snprintf(buf, sizeof buf, "%dm%02ds", static_cast<int>(s / 60), static_cast<int>(s) % 60);
  else std::snprintf(buf, sizeof buf, "%dh%02dm", static_cast<int>(s / 3600), static_cast<int>(s / 60) % 60);
  return buf;
}

std::string rate_text(double per_s, const std::string& unit) {
  char buf[64];
  if (unit == "B") {
    const char* names[] = {"B", "kB", "MB", "GB", "TB"};
    int i = 0;
    while (per_s >= 1000 && i < 4) per_s /= 1000, ++i;
    std::snprintf(buf, sizeof buf, "%.1f %s/s", per_s, names[i]);
  } else {
    std::snprintf(buf, sizeof buf, per_s >= 100 ? "%.0f %s/s" : "%.2f %s/s", per_s, unit.empty() ? "it" : unit.c_str());
  }
  return buf;
}

}  // namespace

std::string progress_text(uint64_t done, uint64_t total, double seconds, const std::string& unit,
                          const std::string& note, uint64_t first) {
  char buf[96];
  const double frac = total ? static_cast<double>(done) / static_cast<double>(total) : 1.0;
  std::snprintf(buf, sizeof buf, "%llu/%llu (%.0f%%)", static_cast<unsigned long long>(done),
                static_cast<unsigned long long>(total), 100.0 * frac);
  std::string s = buf;
  if (done > first && seconds > 0) {
    const double rate = static_cast<double>(done - first) / seconds;
    s.append(" ").append(rate_text(rate, unit));
    if (done < total) s.append(" ETA ").append(duration_text(static_cast<double>(total - done) / rate));
  }
  if (!note.empty()) s.append(" ").append(note);
  s.append(" ").append(duration_text(seconds)).append(" elapsed");
  return s;
}

Progress::Progress(std::string label, uint64_t total, bool enabled, std::string unit)
    : label_(std::move(label)), unit_(std::move(unit)), total_(total), enabled_(enabled), tty_(::isatty(2) != 0) {
  start_ = last_ = std::chrono::steady_clock::now();
}

Progress::~Progress() { finish(); }

void Progress::advance(uint64_t n) { set(done_ + n); }

void Progress::resume_at(uint64_t done) { first_ = done_ = done; }

void Progress::set(uint64_t done) {
  done_ = done;
  draw(false);
}

void Progress::finish() {
  if (finished_) return;
  finished_ = true;
  if (!enabled_) return;
  draw(true);
  if (tty_) std::fputc('\n', stderr);
}

void Progress::draw(bool force) {
  if (!enabled_) return;
  auto now = std::chrono::steady_clock::now();
  // Terminals get ~10 redraws/s; logs get a line every 5 s so CI output stays short.
  auto period = tty_ ? std::chrono::milliseconds(100) : std::chrono::milliseconds(5000);
  if (!force && now - last_ < period) return;
  last_ = now;
  const double secs = std::chrono::duration<double>(now - start_).count();
  const std::string text = progress_text(done_, total_, secs, unit_, note_, first_);
  if (tty_) {
    constexpr int kWidth = 30;
    const double frac = total_ ? static_cast<double>(done_) / static_cast<double>(total_) : 1.0;
    int filled = static_cast<int>(frac * kWidth);
    std::string bar(static_cast<std::size_t>(filled), '#');
    bar.resize(kWidth, '.');
    std::fprintf(stderr, "\r%s [%s] %s\033[K", label_.c_str(), bar.c_str(), text.c_str());
  } else {
    std::fprintf(stderr, "%s: %s\n", label_.c_str(), text.c_str());
  }
  std::fflush(stderr);
}

}  // namespace mtt
