#pragma once
// moshi-finetune's MetricsLogger (finetune/monitoring/metrics_logger.py): each log() appends one
// line to <run>/metrics.<tag>.jsonl (the metrics in the order given, "step", then "at" =
// datetime.utcnow().isoformat(), json.dumps formatting) and one TensorBoard scalar per metric, tag
// "<tag>.<key>", to <run>/tb/events.out.tfevents.*.<tag>. The event file is created when the
// logger is, as SummaryWriter does.
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "io/tfevents.h"

namespace mtt::experiments {

class MetricsLogger {
 public:
  MetricsLogger(const std::string& run_dir, const std::string& tag);
  ~MetricsLogger();
  MetricsLogger(const MetricsLogger&) = delete;
  MetricsLogger& operator=(const MetricsLogger&) = delete;

  // metrics: numbers only (and "step", which must equal `step` when present).
  void log(const nlohmann::ordered_json& metrics, int64_t step);
  const std::string& jsonl_path() const { return jsonl_path_; }
  const std::string& tb_path() const { return tb_->path(); }

 private:
  std::string run_dir_, tag_, jsonl_path_;
  int fd_ = -1;
  std::unique_ptr<io::TfEventWriter> tb_;
};

// What a resumed run must not keep: drops from <run>/metrics.<tag>.jsonl and from every
// <run>/tb/events.out.tfevents.*.<tag> the records of steps after `step`, and a torn last line or
// record of a killed run. Files are rewritten atomically, and only when something is dropped.
void truncate_metrics_after(const std::string& run_dir, const std::string& tag, int64_t step);

// datetime.utcnow().isoformat() of now: "2025-01-31T12:34:56.789012" (no fraction when it is 0).
std::string utc_isoformat_now();

}  // namespace mtt::experiments
