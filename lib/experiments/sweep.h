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
  // Intra-op (LibTorch) threads of each job; 0: plan_threads' choice, jobs x threads <= cores.
  int threads = 0;
};

// How a sweep's jobs share the machine's cores (issue 14, oversubscription guard).
struct ThreadPlan {
  int jobs = 1, threads = 1, cores = 1;
  std::string warning;  // "" unless the requested threads oversubscribe the cores
};
// requested 0: each job gets min(cores / jobs, LibTorch's default, which honours OMP_NUM_THREADS),
// at least 1; a requested count is kept as given, with a warning when jobs x threads > cores.
ThreadPlan plan_threads(int jobs, int requested_threads, int cores);
// The cores this process may run on (its CPU affinity mask; cgroup CPU limits are not read).
int available_cores();

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
