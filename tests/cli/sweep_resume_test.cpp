// ttt-sweep killed at random moments (SIGKILL) and resumed ends with exactly one result per grid
// point, identical to an uninterrupted run.
#include <gtest/gtest.h>
#include <signal.h>
#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <sstream>
#include <thread>

#include "test_util.h"

namespace {

namespace fs = std::filesystem;
using mtt::test::app_path;
using mtt::test::run_command;
using mtt::test::TempDir;

std::string slurp(const fs::path& p) {
  std::ifstream in(p);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

struct RunsOnDisk {
  int results = 0;     // run dirs with result.json
  int incomplete = 0;  // run dirs without one (a point whose run was cut off)
  int started = 0;     // of those, the ones (re)started at or after `since`
};

RunsOnDisk runs_on_disk(const fs::path& out, fs::file_time_type since = fs::file_time_type::min()) {
  RunsOnDisk r;
  std::error_code ec;
  for (fs::directory_iterator it(out / "runs", ec), end; !ec && it != end; it.increment(ec)) {
    std::error_code e2;
    if (!it->is_directory(e2)) continue;
    if (fs::exists(it->path() / "result.json", e2)) {
      ++r.results;
      continue;
    }
    ++r.incomplete;
    auto t = fs::last_write_time(it->path() / "config.json", e2);
    if (!e2 && t >= since) ++r.started;
  }
  return r;
}

struct KillOutcome {
  bool killed = false;  // still running when the signal was sent (it did not finish on its own)
  RunsOnDisk after;     // `started`: points this run had begun and not finished
};

// Starts ttt-sweep, lets it complete `complete_first` grid points, and SIGKILLs it `ms`
// milliseconds after it has begun the next one (it wrote the point's config.json and no
// result.json yet), so that the kill lands inside the sweep's work. A run dir left incomplete by an
// earlier kill does not count as begun: the sweep redoes it from scratch.
KillOutcome run_and_kill(const std::vector<std::string>& args, const fs::path& out, int ms, int complete_first) {
  const auto since = fs::file_time_type::clock::now();
  const int results_at_start = runs_on_disk(out).results;
  pid_t pid = fork();
  if (pid == 0) {
    std::vector<char*> argv;
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    int devnull = ::open("/dev/null", O_WRONLY);
    dup2(devnull, 1);
    dup2(devnull, 2);
    execv(argv[0], argv.data());
    _exit(127);
  }
  KillOutcome k;
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  std::optional<std::chrono::steady_clock::time_point> deadline;
  int status = 0;
  while (true) {
    if (waitpid(pid, &status, WNOHANG) == pid) {
      k.after = runs_on_disk(out, since);
      return k;  // finished (or failed) on its own: not an interruption
    }
    const auto now = std::chrono::steady_clock::now();
    if (!deadline) {
      const RunsOnDisk d = runs_on_disk(out, since);
      if (d.started > 0 && d.results >= results_at_start + complete_first) deadline = now + std::chrono::milliseconds(ms);
    }
    if ((deadline && now >= *deadline) || now >= give_up) break;
    std::this_thread::sleep_for(std::chrono::microseconds(500));
  }
  kill(pid, SIGKILL);
  waitpid(pid, &status, 0);
  k.killed = WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL;
  k.after = runs_on_disk(out, since);
  return k;
}

TEST(SweepCli, KilledAndResumedEqualsUninterrupted) {
  TempDir dir;
  const std::string exe = app_path("ttt-sweep").string();
  const std::string spec = (mtt::test::source_dir() / "tests/fixtures/sweep/resume.yaml").string();
  auto whole = run_command(exe + " run " + spec + " --out " + (dir / "whole").string() + " --no-progress --json");
  ASSERT_EQ(whole.status, 0) << whole.err;
  const int points = runs_on_disk(dir / "whole").results;
  ASSERT_EQ(points, 12);

  const fs::path out = dir / "killed";
  std::mt19937 rng(12345);
  std::uniform_int_distribution<int> delay(0, 3), complete_first(0, 2);
  // Only kills that interrupt a sweep with work left count; a kill that lands mid-point leaves a
  // run dir without result.json, which the resume must discard and redo.
  int interrupted = 0, mid_point = 0;
  for (int i = 0; i < 40 && interrupted < 10; ++i) {
    // Most runs are cut inside their first point, some after finishing one (a resume that must
    // keep earlier results and redo the cut point).
    const int first = complete_first(rng) == 2 ? 1 : 0;
    KillOutcome k = run_and_kill({exe, "run", spec, "--out", out.string(), "--resume", "--no-progress", "--jobs", "1"},
                                 out, delay(rng), first);
    if (k.after.results >= points) break;  // the sweep finished: nothing left to interrupt
    if (!k.killed) continue;
    ++interrupted;
    mid_point += k.after.started > 0;
  }
  EXPECT_GE(interrupted, 10);
  EXPECT_GE(mid_point, 1) << "no kill landed inside a grid point's run";
  const RunsOnDisk before = runs_on_disk(out);
  std::printf("[resume] %d kills interrupted work (%d inside a grid point); %d of %d results on disk before the resume\n",
              interrupted, mid_point, before.results, points);
  ASSERT_LT(before.results, points) << "the kills left nothing for the resume to do";
  EXPECT_GT(before.results, 0) << "no run completed a point before its kill: the resume reuses nothing";
  auto fin = run_command(exe + " run " + spec + " --out " + out.string() + " --resume --no-progress --json");
  ASSERT_EQ(fin.status, 0) << fin.err;

  // Exactly one complete result per grid point, no temporaries left, same summary.
  std::size_t results = 0;
  for (const auto& e : fs::recursive_directory_iterator(out)) {
    std::string name = e.path().filename().string();
    EXPECT_EQ(name.find(".tmp."), std::string::npos) << "temporary left behind: " << e.path();
    if (name == "result.json") ++results;
  }
  EXPECT_EQ(results, 12u);
  EXPECT_EQ(runs_on_disk(out).incomplete, 0);
  EXPECT_EQ(slurp(out / "summary.csv"), slurp(dir / "whole" / "summary.csv"));
  auto v1 = nlohmann::json::parse(slurp(out / "verdict.json"));
  auto v2 = nlohmann::json::parse(slurp(dir / "whole" / "verdict.json"));
  EXPECT_EQ(v1, v2);
}

TEST(SweepCli, BadSpecIsOneLineErrorWithFileAndLine) {
  TempDir dir;
  auto bad = dir / "bad.yaml";
  std::ofstream(bad) << "name: x\nexperiment: causal-leak\ngrid:\n  seed: [0, 1\n";
  auto r = run_command(app_path("ttt-sweep").string() + " run " + bad.string() + " --out " + (dir / "o").string());
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.err.find(bad.string() + ": line"), std::string::npos) << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  EXPECT_FALSE(fs::exists(dir / "o" / "summary.csv"));
}

TEST(SweepCli, ListNamesEveryBuiltInExperiment) {
  auto r = run_command(app_path("ttt-sweep").string() + " list");
  ASSERT_EQ(r.status, 0);
  for (const char* k : {"norm-variant", "gradient-flow", "gating", "mini-batch", "batch-state", "causal-leak"})
    EXPECT_NE(r.out.find(k), std::string::npos) << k;
}

}  // namespace
