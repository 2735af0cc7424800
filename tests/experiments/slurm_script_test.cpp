// The Slurm scripts ttt-sweep --slurm writes, checked against their expected text on every run (no
// Slurm needed); tests/slurm/ submits them to a real one under the opt-in `slurm` label (issue 7).
#include <gtest/gtest.h>

#include <filesystem>

#include "core/atomic_file.h"
#include "experiments/slurm.h"
#include "experiments/spec.h"
#include "test_util.h"

namespace mtt::experiments {
namespace {

namespace fs = std::filesystem;

const char* kSpec = R"(
name: tiny
experiment: causal-leak
grid:
  seed: [0, 1, 2, 3]
  ttt.eta: [causal, dit]
reduced:
  grid: {seed: [0], ttt.eta: [causal, dit]}
)";

TEST(SlurmScript, SummaryJobAndReducedGrid) {
  ExperimentSpec s = parse_spec(kSpec, "tiny.yaml");
  SlurmOptions so;
  so.exe = "/opt/bin/ttt-sweep";
  so.gres = "gpu:1";
  so.cpus_per_task = 2;
  so.mem = "512M";
  so.time = "00:10:00";
  so.reduced = true;
  auto scripts = make_slurm_scripts(s, "/specs/tiny.yaml", "/scratch/o", so);
  EXPECT_EQ(scripts.tasks, 2u);  // the reduced grid, not the 8 points of the full one
  EXPECT_EQ(scripts.array_script,
            "#!/bin/bash\n"
            "#SBATCH --job-name=ttt-sweep-tiny\n"
            "#SBATCH --time=00:10:00\n"
            "#SBATCH --cpus-per-task=2\n"
            "#SBATCH --mem=512M\n"
            "#SBATCH --gres=gpu:1\n"
            "#SBATCH --array=0-1\n"
            "#SBATCH --output=/scratch/o/slurm/logs/%A_%a.out\n"
            "# One grid point per array task. --resume makes a re-queued or repeated task a no-op once\n"
            "# its result.json exists, so requeues never duplicate a result.\n"
            "set -euo pipefail\n"
            "exec '/opt/bin/ttt-sweep' run '/specs/tiny.yaml' --out '/scratch/o' --resume --no-progress "
            "--index \"$SLURM_ARRAY_TASK_ID\" --reduced\n");
  // The summary only reads JSON: one CPU, no GPU held (or waited for) after the array.
  EXPECT_EQ(scripts.summary_script,
            "#!/bin/bash\n"
            "#SBATCH --job-name=ttt-sweep-tiny-summary\n"
            "#SBATCH --time=00:10:00\n"
            "#SBATCH --cpus-per-task=1\n"
            "#SBATCH --mem=512M\n"
            "#SBATCH --output=/scratch/o/slurm/logs/%j-summary.out\n"
            "set -euo pipefail\n"
            "exec '/opt/bin/ttt-sweep' summarize '/scratch/o'\n");
}

TEST(SlurmScript, PathsAreAbsoluteAndQuoted) {
  ExperimentSpec s = parse_spec(kSpec, "tiny.yaml");
  SlurmOptions so;
  // argv[0] as typed: the task runs in sbatch's working directory, maybe on another node.
  so.exe = "build/bin/ttt-sweep";
  auto rel = make_slurm_scripts(s, "specs/it's.yaml", "out dir", so);
  const std::string cwd = fs::current_path().string();
  EXPECT_NE(rel.array_script.find("exec '" + cwd + "/build/bin/ttt-sweep' run '" + cwd + "/specs/it'\\''s.yaml' --out '" +
                                  cwd + "/out dir' "),
            std::string::npos)
      << rel.array_script;
  EXPECT_NE(rel.summary_script.find("exec '" + cwd + "/build/bin/ttt-sweep' summarize '" + cwd + "/out dir'\n"),
            std::string::npos)
      << rel.summary_script;
  // A bare name is looked up on the job's PATH (sbatch exports the submitter's environment).
  so.exe = "ttt-sweep";
  auto bare = make_slurm_scripts(s, "/s.yaml", "/o", so);
  EXPECT_NE(bare.array_script.find("exec 'ttt-sweep' run '/s.yaml'"), std::string::npos) << bare.array_script;
  EXPECT_NE(bare.array_script.find("#SBATCH --array=0-7\n"), std::string::npos);
}

TEST(SlurmScript, WrittenExecutableUnderOutSlurm) {
  test::TempDir dir;
  ExperimentSpec s = parse_spec(kSpec, "tiny.yaml");
  SlurmOptions so;
  so.exe = "/opt/bin/ttt-sweep";
  auto scripts = make_slurm_scripts(s, "/s.yaml", dir.path().string(), so);
  auto [a, m] = write_slurm_scripts(scripts, dir.path().string());
  EXPECT_EQ(a, (dir / "slurm" / "array.sbatch").string());
  EXPECT_EQ(m, (dir / "slurm" / "summarize.sbatch").string());
  EXPECT_EQ(read_file(a), scripts.array_script);
  EXPECT_EQ(read_file(m), scripts.summary_script);
  EXPECT_TRUE((fs::status(a).permissions() & fs::perms::owner_exec) != fs::perms::none);
  // Slurm does not create the --output folder; a missing one loses every task's log.
  EXPECT_TRUE(fs::is_directory(dir / "slurm" / "logs"));
}

}  // namespace
}  // namespace mtt::experiments
