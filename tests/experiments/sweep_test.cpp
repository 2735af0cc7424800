#include "experiments/sweep.h"

#include <gtest/gtest.h>

#include <atomic>
#include <cmath>
#include <filesystem>

#include "core/atomic_file.h"
#include "core/error.h"
#include "core/version.h"
#include "experiments/slurm.h"
#include "test_util.h"

namespace mtt::experiments {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// A real (cheap) experiment for exercising the runner: gradient descent on (x - target)^2 from
// x0 = 0 with the point's lr for `steps` steps. Final loss = target^2 (1 - 2 lr)^(2 steps).
std::atomic<int> g_runs{0};
ExperimentKind descent_kind() {
  ExperimentKind k;
  k.name = "descent";
  k.run = [](const RunContext& ctx) {
    ++g_runs;
    double lr = ctx.point.config.at("lr").get<double>();
    int steps = ctx.point.config.at("steps").get<int>();
    double target = ctx.point.config.value("target", 1.0);
    double x = 0;
    for (int i = 0; i < steps; ++i) x -= lr * 2 * (x - target);
    RunResult r;
    r.metrics["final_loss"] = (x - target) * (x - target);
    return r;
  };
  k.verdict = [](const std::vector<PointOutcome>& pts) {
    Verdict v;
    double best = 1e300;
    for (const auto& p : pts) best = std::min(best, p.result.metrics["final_loss"].get<double>());
    v.status = best < 1e-6 ? "confirmed" : "refuted";
    v.text = "best final loss " + std::to_string(best);
    v.evidence["best"] = best;
    return v;
  };
  return k;
}

const char* kSpec = R"(
name: descent
experiment: descent
base: {steps: 20, target: 2.0}
grid:
  lr: [0.1, 0.25, 0.4]
  target: [1.0, 3.0]
reduced:
  grid: {lr: [0.25]}
  base: {steps: 3}
metrics: [final_loss]
)";

TEST(Spec, ParsesAxesAndReducedGrid) {
  ExperimentSpec s = parse_spec(kSpec, "descent.yaml");
  EXPECT_EQ(s.name, "descent");
  ASSERT_EQ(s.axes.size(), 2u);
  EXPECT_EQ(s.axes[0].name, "lr");
  auto pts = expand_grid(s, false);
  ASSERT_EQ(pts.size(), 6u);
  EXPECT_EQ(pts[1].config["lr"], 0.1);  // first axis slowest
  EXPECT_EQ(pts[1].config["target"], 3.0);
  EXPECT_NE(pts[0].id, pts[1].id);
  auto red = expand_grid(s, true);
  ASSERT_EQ(red.size(), 1u);
  EXPECT_EQ(red[0].config["steps"], 3);
  EXPECT_EQ(red[0].config["target"], 2.0) << "reduced grid keeps base values for axes it drops";
}

TEST(Spec, ErrorsNameFileAndLine) {
  try {
    parse_spec("name: x\nexperiment: y\ngrid:\n  lr: 3\n", "bad.yaml");
    FAIL();
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "bad.yaml: line 4: grid axis 'lr' must be a non-empty list");
  }
  try {
    parse_spec("name: x\nexperiment: [\n", "broken.yaml");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("broken.yaml: line"), std::string::npos) << e.what();
  }
  EXPECT_THROW(parse_spec("name: x\nexperiment: y\nstpes: 3\n", "typo.yaml"), Error);
  EXPECT_THROW(parse_spec("name: x\nname: y\nexperiment: z\n", "dup.yaml"), Error);
}

TEST(Spec, ScalarsAreTyped) {
  json j = yaml_to_json("a: 1e-3\nb: '1'\nc: 29,30,31\nd: true\ne: 16\n", "t.yaml");
  EXPECT_TRUE(j["a"].is_number_float());
  EXPECT_TRUE(j["b"].is_string());
  EXPECT_EQ(j["c"], "29,30,31");
  EXPECT_EQ(j["d"], true);
  EXPECT_EQ(j["e"], 16);
}

TEST(Sweep, RunsEveryPointOnceAndResumesWithoutRerunning) {
  test::TempDir dir;
  ExperimentSpec s = parse_spec(kSpec, "descent.yaml");
  SweepOptions o;
  o.out_dir = (dir / "out").string();
  o.progress = false;
  g_runs = 0;
  SweepResult r = run_sweep(s, o, descent_kind());
  EXPECT_EQ(g_runs, 6);
  ASSERT_EQ(r.points.size(), 6u);
  double expect = 1.0 * std::pow(1 - 2 * 0.25, 40);  // lr 0.25, target 1
  EXPECT_DOUBLE_EQ(r.points[2].result.metrics["final_loss"].get<double>(), expect);
  std::string csv = read_file(r.summary_csv);
  EXPECT_EQ(std::count(csv.begin(), csv.end(), '\n'), 7) << csv;

  // Without --resume an existing sweep is refused; with it nothing reruns.
  EXPECT_THROW(run_sweep(s, o, descent_kind()), Error);
  o.resume = true;
  g_runs = 0;
  SweepResult again = run_sweep(s, o, descent_kind());
  EXPECT_EQ(g_runs, 0);
  EXPECT_EQ(again.reused, 6u);
  EXPECT_EQ(read_file(again.summary_csv), csv);

  // A point whose result was never committed (killed mid-run) is rerun, and only that one.
  fs::remove(fs::path(o.out_dir) / "runs" / r.points[3].point.id / "result.json");
  g_runs = 0;
  run_sweep(s, o, descent_kind());
  EXPECT_EQ(g_runs, 1);
  EXPECT_EQ(read_file(again.summary_csv), csv);
}

TEST(Sweep, ParallelJobsGiveTheSameSummary) {
  test::TempDir dir;
  ExperimentSpec s = parse_spec(kSpec, "descent.yaml");
  SweepOptions o;
  o.progress = false;
  o.out_dir = (dir / "a").string();
  auto a = run_sweep(s, o, descent_kind());
  o.out_dir = (dir / "b").string();
  o.jobs = 3;
  auto b = run_sweep(s, o, descent_kind());
  EXPECT_EQ(read_file(a.summary_csv), read_file(b.summary_csv));
}

TEST(Sweep, ChangedGridIsRefusedOnResume) {
  test::TempDir dir;
  ExperimentSpec s = parse_spec(kSpec, "descent.yaml");
  SweepOptions o;
  o.progress = false;
  o.out_dir = (dir / "out").string();
  run_sweep(s, o, descent_kind());
  s.axes[0].values.push_back(0.3);
  o.resume = true;
  EXPECT_THROW(run_sweep(s, o, descent_kind()), Error);
}

TEST(Slurm, ArrayScriptCoversTheGridAndResumes) {
  ExperimentSpec s = parse_spec(kSpec, "descent.yaml");
  SlurmOptions so;
  so.exe = "/opt/moshi-ttt/bin/ttt-sweep";
  so.partition = "debug";
  so.max_parallel = 2;
  auto scripts = make_slurm_scripts(s, descent_kind(), "/specs/descent.yaml", "/scratch/out", so);
  EXPECT_EQ(scripts.tasks, 6u);
  const std::string expected =
      "#!/bin/bash\n"
      "#SBATCH --job-name=ttt-sweep-descent\n"
      "#SBATCH --partition=debug\n"
      "#SBATCH --time=01:00:00\n"
      "#SBATCH --cpus-per-task=2\n"
      "#SBATCH --mem=8G\n"
      "#SBATCH --array=0-5%2\n"
      "#SBATCH --output=/scratch/out/slurm/logs/%A_%a.out\n"
      "# One grid point per array task. --resume makes a re-queued or repeated task a no-op once\n"
      "# its result.json exists, so requeues never duplicate a result.\n"
      "set -euo pipefail\n"
      "exec '/opt/moshi-ttt/bin/ttt-sweep' run '/specs/descent.yaml' --out '/scratch/out' --resume --no-progress "
      "--index \"$SLURM_ARRAY_TASK_ID\"\n";
  EXPECT_EQ(scripts.array_script, expected);
  EXPECT_NE(scripts.summary_script.find("exec '/opt/moshi-ttt/bin/ttt-sweep' summarize '/scratch/out'"),
            std::string::npos);
}

TEST(Sweep, SinglePointsThenSummarizeEqualsOneRun) {
  // What a Slurm array does: each task runs --index i, then `summarize` collects.
  test::TempDir dir;
  ExperimentSpec s = parse_spec(kSpec, "descent.yaml");
  SweepOptions o;
  o.progress = false;
  o.out_dir = (dir / "whole").string();
  auto whole = run_sweep(s, o, descent_kind());
  o.out_dir = (dir / "array").string();
  o.resume = true;
  for (std::size_t i = 0; i < 6; ++i) {
    o.only_index = i;
    run_sweep(s, o, descent_kind());
  }
  auto kind = descent_kind();
  auto merged = summarize_sweep(o.out_dir, &kind);
  EXPECT_EQ(read_file(merged.summary_csv), read_file(whole.summary_csv));
  EXPECT_EQ(merged.verdict.text, whole.verdict.text);
  EXPECT_THROW(summarize_sweep((dir / "nothing").string(), &kind), Error);
}

}  // namespace
}  // namespace mtt::experiments

namespace mtt::experiments {
namespace {

TEST(Sweep, OutputsNameTheBuildAndDevicesAreChecked) {
  test::TempDir dir;
  ExperimentSpec s = parse_spec(kSpec, "descent.yaml");
  SweepOptions o;
  o.out_dir = (dir / "out").string();
  o.progress = false;
  o.reduced = true;
  SweepResult r = run_sweep(s, o, descent_kind());
  const json sweep = json::parse(read_file((dir / "out" / "sweep.json").string()));
  EXPECT_EQ(sweep["moshi_ttt"], build_info());
  const json result =
      json::parse(read_file((dir / "out" / "runs" / r.points[0].point.id / "result.json").string()));
  EXPECT_EQ(result["moshi_ttt"]["version"], version());
  EXPECT_EQ(result["moshi_ttt"]["commit"], git_commit());
  EXPECT_EQ(result["device"], "cpu");
  // A kind that does not train on a device refuses one, before touching the out dir.
  o.out_dir = (dir / "gpu").string();
  o.device = "cuda";
  try {
    run_sweep(s, o, descent_kind());
    FAIL() << "descent accepted --device cuda";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::Usage);
    EXPECT_NE(std::string(e.what()).find("CPU only"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(fs::exists(dir / "gpu"));
}

}  // namespace
}  // namespace mtt::experiments
