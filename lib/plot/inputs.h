#pragma once
// Readers for the inputs of ttt-plot (formats: docs/formats.md). Every reader validates fully
// and throws mtt::Error(file, key-or-line, reason) before anything is drawn.
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace mtt::plot {

// ---- inner-loop log (moshi-ttt/inner-loop/1, written by lib/ttt/inner_loop_log) ----
struct InnerLoopLayer {
  int layer = 0;
  std::string name;
  int64_t mini_batch_size = 0;
  std::vector<double> positions, loss_w0, loss_before, loss_after;  // null in the file -> NaN
  std::vector<std::vector<double>> head_w0, head_before, head_after;  // [head][position]; may be empty
};
struct InnerLoopData {
  std::string path;  // the JSON file read
  std::vector<InnerLoopLayer> layers;
};
// `path`: the JSON file, or a run dir holding inner_loop.json.
InnerLoopData read_inner_loop(const std::string& path);
InnerLoopData parse_inner_loop(const std::string& text, const std::string& path);

// ---- sweep summary (ttt-sweep: summary.csv / summary.json) ----
struct Cell {
  bool null = true;
  bool numeric = false;
  double num = 0;
  std::string text;  // as written (numbers too), "" for null
};
struct Table {
  std::string path;
  std::vector<std::string> columns;        // the columns held in rows
  std::vector<std::string> file_columns;   // every column of the file (when only some are kept)
  std::vector<std::string> axes, metrics;  // from summary.json; empty for a bare CSV
  std::vector<std::vector<Cell>> rows;     // rows[i][column index]
  std::vector<int> lines;                  // source line of each row (CSV), 0 for JSON
  int column(const std::string& name) const;  // -1 if absent
};
// `path`: summary.csv, summary.json, or the sweep's out dir (summary.json preferred).
// `keep`: when not empty, only these columns are held (names the file lacks are skipped): a
// summary of 10^6 points then costs memory for the plotted columns only. Every row is still
// checked (field counts, quoting).
Table read_summary(const std::string& path, const std::vector<std::string>& keep = {});
Table parse_summary_csv(const std::string& text, const std::string& path, const std::vector<std::string>& keep = {});
Table parse_summary_json(const std::string& text, const std::string& path, const std::vector<std::string>& keep = {});

// ---- training metrics (moshi-finetune metrics.train.jsonl / metrics.eval.jsonl) ----
struct MetricsLog {
  std::string path;
  std::vector<double> step;
  std::map<std::string, std::vector<double>> fields;  // numeric fields, NaN where a line lacks it
};
struct MetricsRun {
  std::string dir;
  MetricsLog train;
  std::optional<MetricsLog> eval;
};
MetricsLog parse_metrics_jsonl(const std::string& text, const std::string& path);
// `path`: a run dir (metrics.train.jsonl required, metrics.eval.jsonl optional) or a .jsonl file.
MetricsRun read_metrics(const std::string& path);

// ---- SSM gates from checkpoints ----
struct GateValues {
  std::vector<float> alpha;  // gating_alpha as stored (converted to float)
};
struct GateCheckpoint {
  std::string source;           // path as opened (and step)
  std::string run;              // run dir name, "" for loose files
  std::optional<int64_t> step;  // training step when known
  // (layer, "forward"|"backward") -> values
  std::map<std::pair<int, std::string>, GateValues> gates;
};
// Each input is a checkpoint file/dir (io::Checkpoint) or a moshi-finetune run dir, which expands
// to all of its checkpoint steps. Throws naming the file when one holds no gate keys.
std::vector<GateCheckpoint> read_gates(const std::vector<std::string>& inputs);

}  // namespace mtt::plot
