#pragma once
// Runs a grid: one run dir per point, results written atomically, so a sweep killed at any moment
// and run again with `resume` loses and duplicates nothing.
//
// <out>/sweep.json                 the spec, the grid and the build (written first; checked on resume)
// <out>/runs/<id>/config.json      the point's config
// <out>/runs/<id>/result.json      written last, atomically: its presence marks the point done; it
//                                  names the build that computed it (moshi_ttt: version, commit)
// <out>/summary.csv, summary.json  one row per point; verdict.json
#include <optional>
#include <string>
#include <vector>

#include "experiments/registry.h"

namespace mtt::experiments {

struct SweepOptions {
  std::string out_dir;
  int jobs = 1;
  bool resume = false;
  bool force = false;    // start over in a non-empty out dir
  bool reduced = false;  // the spec's CI-sized grid
  std::optional<std::size_t> only_index;  // one point (Slurm array task); no summary
  bool progress = true;
  std::string device = "cpu";  // `--device`: cpu, cuda or cuda:N (kinds that train on a device)
};

struct SweepResult {
  std::vector<PointOutcome> points;
  std::size_t reused = 0;  // points found complete on resume
  Verdict verdict;
  std::string summary_csv, summary_json, verdict_json;  // paths
};

SweepResult run_sweep(const ExperimentSpec& spec, const SweepOptions& opts);
// Same, with an explicit kind instead of the built-in one named by the spec.
SweepResult run_sweep(const ExperimentSpec& spec, const SweepOptions& opts, const ExperimentKind& kind);

// Rebuilds summary and verdict from the run dirs of an out dir (after a Slurm array, say).
SweepResult summarize_sweep(const std::string& out_dir, const ExperimentKind* kind = nullptr);

// The aligned text table of a sweep (axes, metrics) and its verdict.
std::string format_sweep_table(const SweepResult& r);

}  // namespace mtt::experiments
