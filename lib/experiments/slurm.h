#pragma once
// Slurm job-array scripts for a sweep: one array task per grid point, each running
// `ttt-sweep run SPEC --out DIR --resume --index $SLURM_ARRAY_TASK_ID`, and a dependent job
// that runs `ttt-sweep summarize DIR`. Resume semantics make re-queued tasks safe.
#include <string>

#include "experiments/registry.h"
#include "experiments/spec.h"

namespace mtt::experiments {

struct SlurmOptions {
  std::string partition;        // empty: cluster default
  std::string time = "01:00:00";
  int cpus_per_task = 2;
  std::string mem = "8G";
  std::string gres;             // e.g. "gpu:1"; array tasks only (the summary job reads JSON)
  int max_parallel = 0;         // %N throttle on the array; 0 = none
  std::string exe = "ttt-sweep";  // absolute path of the ttt-sweep binary
  bool reduced = false;
  std::string device = "cpu";    // passed on to every task as --device (with --gres gpu:1, say)
};

struct SlurmScripts {
  std::string array_script;    // text of <out>/slurm/array.sbatch
  std::string summary_script;  // text of <out>/slurm/summarize.sbatch
  std::size_t tasks = 0;
};

// Every grid point is checked against the kind's declared keys first (a bad point fails here, not
// on the cluster). The first form finds the kind among the built-in ones by the spec's `experiment`.
SlurmScripts make_slurm_scripts(const ExperimentSpec& spec, const std::string& spec_path, const std::string& out_dir,
                                const SlurmOptions& opts);
SlurmScripts make_slurm_scripts(const ExperimentSpec& spec, const ExperimentKind& kind, const std::string& spec_path,
                                const std::string& out_dir, const SlurmOptions& opts);

// Writes both scripts under <out>/slurm/ (atomically) and returns their paths.
std::pair<std::string, std::string> write_slurm_scripts(const SlurmScripts& s, const std::string& out_dir);

// Submits the array, then the summary with afterany on it; returns sbatch's job ids.
std::pair<std::string, std::string> submit_slurm(const std::string& array_path, const std::string& summary_path);

}  // namespace mtt::experiments
