// ttt-sweep killed at random moments (SIGKILL) and resumed ends with exactly one result per grid
// point, identical to an uninterrupted run.
#include <gtest/gtest.h>
#include <signal.h>
#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
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

// Starts ttt-sweep and kills it with SIGKILL after `ms` milliseconds (if still running).
void run_and_kill(const std::vector<std::string>& args, int ms) {
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
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
  int status = 0;
  while (std::chrono::steady_clock::now() < deadline) {
    if (waitpid(pid, &status, WNOHANG) == pid) return;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  kill(pid, SIGKILL);
  waitpid(pid, &status, 0);
}

TEST(SweepCli, KilledAndResumedEqualsUninterrupted) {
  TempDir dir;
  const std::string exe = app_path("ttt-sweep").string();
  const std::string spec = (mtt::test::source_dir() / "tests/fixtures/sweep/resume.yaml").string();
  auto whole = run_command(exe + " run " + spec + " --out " + (dir / "whole").string() + " --no-progress --json");
  ASSERT_EQ(whole.status, 0) << whole.err;

  const std::string out = (dir / "killed").string();
  std::mt19937 rng(12345);
  std::uniform_int_distribution<int> delay(100, 2500);
  int kills = 0;
  for (int i = 0; i < 14; ++i) {
    run_and_kill({exe, "run", spec, "--out", out, "--resume", "--no-progress"}, delay(rng));
    ++kills;
  }
  EXPECT_GE(kills, 10);
  auto fin = run_command(exe + " run " + spec + " --out " + out + " --resume --no-progress --json");
  ASSERT_EQ(fin.status, 0) << fin.err;

  // Exactly one complete result per grid point, no temporaries left, same summary.
  std::size_t results = 0;
  for (const auto& e : fs::recursive_directory_iterator(out)) {
    std::string name = e.path().filename().string();
    EXPECT_EQ(name.find(".tmp."), std::string::npos) << "temporary left behind: " << e.path();
    if (name == "result.json") ++results;
  }
  EXPECT_EQ(results, 12u);
  EXPECT_EQ(slurp(fs::path(out) / "summary.csv"), slurp(dir / "whole" / "summary.csv"));
  auto v1 = nlohmann::json::parse(slurp(fs::path(out) / "verdict.json"));
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
