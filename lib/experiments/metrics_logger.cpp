#include "experiments/metrics_logger.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <sstream>

#include "core/atomic_file.h"
#include "core/error.h"
#include "io/python_format.h"

namespace mtt::experiments {

namespace fs = std::filesystem;
using nlohmann::ordered_json;

namespace {

double wall_time_now() {
  struct timespec ts {};
  clock_gettime(CLOCK_REALTIME, &ts);
  return static_cast<double>(ts.tv_sec) + ts.tv_nsec * 1e-9;
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

}  // namespace

std::string utc_isoformat_now() {
  struct timespec ts {};
  clock_gettime(CLOCK_REALTIME, &ts);
  struct tm tm {};
  gmtime_r(&ts.tv_sec, &tm);
  char buf[64];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
  std::string s = buf;
  const long us = ts.tv_nsec / 1000;
  if (us != 0) {
    std::snprintf(buf, sizeof buf, ".%06ld", us);
    s += buf;
  }
  return s;
}

MetricsLogger::MetricsLogger(const std::string& run_dir, const std::string& tag)
    : run_dir_(run_dir), tag_(tag), jsonl_path_((fs::path(run_dir) / ("metrics." + tag + ".jsonl")).string()) {
  tb_ = std::make_unique<io::TfEventWriter>((fs::path(run_dir) / "tb").string(), "." + tag);
}

MetricsLogger::~MetricsLogger() {
  if (fd_ >= 0) ::close(fd_);
}

void MetricsLogger::log(const ordered_json& metrics, int64_t step) {
  const double wall = wall_time_now();
  for (auto it = metrics.begin(); it != metrics.end(); ++it) {
    if (it.key() == "step") continue;
    if (!it.value().is_number())
      throw Error(jsonl_path_, it.key(), "metrics must be numbers, got " + it.value().dump(), ErrorKind::Internal);
    tb_->add_scalar(tag_ + "." + it.key(), it.value().get<double>(), step, wall);
  }
  ordered_json line = metrics;
  if (line.contains("step")) check_internal(line["step"].get<int64_t>() == step, "metrics step differs from log step");
  else line["step"] = step;
  line["at"] = utc_isoformat_now();
  const std::string text = io::python_json_dumps(line) + "\n";
  if (fd_ < 0) {
    fd_ = ::open(jsonl_path_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd_ < 0) throw Error(jsonl_path_, "", std::string("cannot open for appending: ") + std::strerror(errno));
  }
  // One write per line (O_APPEND): a kill leaves at most a torn last line, which a resume drops.
  size_t done = 0;
  while (done < text.size()) {
    const ssize_t n = ::write(fd_, text.data() + done, text.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      throw Error(jsonl_path_, "", std::string("write failed: ") + std::strerror(errno));
    }
    done += static_cast<size_t>(n);
  }
}

void truncate_metrics_after(const std::string& run_dir, const std::string& tag, int64_t step) {
  std::error_code ec;
  const fs::path jsonl = fs::path(run_dir) / ("metrics." + tag + ".jsonl");
  if (fs::exists(jsonl, ec)) {
    const std::string text = read_file(jsonl.string());
    std::string kept;
    bool dropped = false;
    size_t pos = 0;
    while (pos < text.size()) {
      const size_t nl = text.find('\n', pos);
      if (nl == std::string::npos) {  // torn last line
        dropped = true;
        break;
      }
      const std::string line = text.substr(pos, nl - pos);
      pos = nl + 1;
      bool keep = false;
      try {
        const auto j = nlohmann::json::parse(line);
        keep = j.is_object() && j.contains("step") && j["step"].is_number() && j["step"].get<int64_t>() <= step;
      } catch (const nlohmann::json::exception&) {
        keep = false;
      }
      if (keep) kept += line + "\n";
      else dropped = true;
    }
    if (dropped) write_file_atomic(jsonl.string(), kept);
  }
  const fs::path tb = fs::path(run_dir) / "tb";
  if (!fs::is_directory(tb, ec)) return;
  for (const auto& entry : fs::directory_iterator(tb, ec)) {
    const std::string name = entry.path().filename().string();
    if (name.rfind("events.out.tfevents.", 0) != 0 || !ends_with(name, "." + tag) || !entry.is_regular_file()) continue;
    const io::TfEventFile f = io::read_tf_events(entry.path().string());
    std::string kept;
    bool dropped = f.torn;
    for (size_t i = 0; i < f.events.size(); ++i) {
      if (!f.events[i].scalars.empty() && f.events[i].step > step) {
        dropped = true;
        continue;
      }
      kept += f.records[i];
    }
    if (dropped) write_file_atomic(entry.path().string(), kept);
  }
}

}  // namespace mtt::experiments
