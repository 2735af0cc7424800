// CLI conventions every app follows (issue 14): --help shows each option's default, --json where
// an app has a result to print, the sweep's oversubscription guard.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <sched.h>

#include "test_util.h"

namespace {

namespace fs = std::filesystem;
using mtt::test::app_path;
using mtt::test::fixtures_dir;
using mtt::test::run_command;
using mtt::test::TempDir;

// The help line of `flag` (CLI11 prints "  --dtype TEXT:{f32,bf16}=f32  LM compute dtype").
std::string help_line(const std::string& help, const std::string& flag) {
  std::istringstream in(help);
  std::string line;
  while (std::getline(in, line)) {
    const auto b = line.find_first_not_of(' ');
    if (b == std::string::npos) continue;
    const std::string rest = line.substr(b);
    // "--dtype TEXT" or "-o,--output TEXT": the flag as a whole name.
    for (std::size_t at = rest.find(flag); at != std::string::npos && at < rest.find(' '); at = rest.find(flag, at + 1)) {
      const char after = at + flag.size() < rest.size() ? rest[at + flag.size()] : ' ';
      const bool starts = at == 0 || rest[at - 1] == ',';
      if (starts && (after == ' ' || after == ',')) return rest;
    }
  }
  return "";
}

TEST(CliConventions, HelpShowsEachOptionsDefault) {
  struct Case {
    std::string command;
    std::vector<std::pair<std::string, std::string>> defaults;  // flag, default shown
  } cases[] = {
      {"ttt-inspect", {{"--variant", "fork"}, {"--dtype", "bf16"}, {"--seed", "0"}}},
      {"ttt-infer",
       {{"--dtype", "f32"}, {"--seed", "4242"}, {"--threads", "0"}, {"--fork-numerics", "auto"}, {"--device", "cpu"},
        {"--batch-size", "1"}, {"--channels", "moshi,user"}, {"--temp", "checkpoint"}, {"--top-k-text", "checkpoint"}}},
      {"ttt-sweep run", {{"--jobs", "1"}, {"--threads", "0"}, {"--device", "cpu"}}},
      {"ttt-sweep train", {{"--device", "cpu"}}},
      {"ttt-sweep data speech", {{"--n", ""}, {"--seed", ""}}},
      {"ttt-plot inner-loop", {{"--output", "inner_loop.png"}}},
      {"ttt-plot gating", {{"--output", "gating.png"}, {"--value", "both"}}},
      {"ttt-plot sweep", {{"--output", "sweep.png"}}},
      {"ttt-plot metrics", {{"--output", "metrics.png"}}},
      {"ttt-plot loss-by-position", {{"--out", "loss_by_position.png"}, {"--smooth", ""}}},
      {"ttt-golden", {{"--dtype", "f32"}, {"--against", "f64"}, {"--tol-out", "README"}, {"--tol-grad", "README"}}},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.command);
    const std::string app = c.command.substr(0, c.command.find(' '));
    const std::string sub = c.command.size() > app.size() ? c.command.substr(app.size()) : "";
    const auto r = run_command(app_path(app).string() + sub + " --help");
    ASSERT_EQ(r.status, 0) << r.err;
    for (const auto& [flag, value] : c.defaults) {
      const std::string line = help_line(r.out, flag);
      ASSERT_FALSE(line.empty()) << flag << " not in\n" << r.out;
      // "" : some default is shown, whatever it is (counts and seeds that may change).
      // The default closes the option's own column ("--temp FLOAT:a finite number >= 0=checkpoint"),
      // before the two spaces that start its description.
      const std::string spec = line.substr(0, line.find("  "));
      const auto eq = spec.rfind('=');
      ASSERT_NE(eq, std::string::npos) << "no default shown: " << line;
      const std::string shown = spec.substr(eq + 1, spec.find(' ', eq) - eq - 1);  // before " Excludes: ..."
      EXPECT_FALSE(shown.empty()) << line;
      if (!value.empty()) {
        EXPECT_EQ(shown, value) << line;
      }
    }
  }
}

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

int cores() {
  cpu_set_t set;
  CPU_ZERO(&set);
  return sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set) : static_cast<int>(std::thread::hardware_concurrency());
}

TEST(CliConventions, SweepJobsTimesThreadsFitTheCores) {
  TempDir d;
  const std::string spec = (mtt::test::source_dir() / "tests/fixtures/sweep/resume.yaml").string();
  const std::string exe = app_path("ttt-sweep").string() + " run " + spec + " --no-progress --jobs 2 --out ";
  // Without --threads: each job's LibTorch threads are planned so that jobs x threads <= cores.
  const auto a = run_command(exe + (d / "a").string());
  ASSERT_EQ(a.status, 0) << a.err;
  EXPECT_EQ(a.err.find("warning"), std::string::npos) << a.err;
  int seen = 0;
  for (const auto& e : fs::directory_iterator(d / "a" / "runs")) {
    const auto j = nlohmann::json::parse(slurp(e.path() / "result.json"));
    EXPECT_EQ(j.at("jobs").get<int>() * j.at("threads").get<int>() <= std::max(cores(), j.at("jobs").get<int>()), true) << j.dump();
    EXPECT_GE(j.at("threads").get<int>(), 1);
    ++seen;
  }
  EXPECT_GT(seen, 0);
  // A --threads that oversubscribes is kept, and said so in one warning line.
  const int many = cores() + 1;
  const auto b = run_command(exe + (d / "b").string() + " --threads " + std::to_string(many));
  ASSERT_EQ(b.status, 0) << b.err;
  EXPECT_NE(b.err.find("ttt-sweep: warning: --jobs 2 x --threads " + std::to_string(many) + " = " +
                       std::to_string(2 * many) + " threads on " + std::to_string(cores()) + " cores"),
            std::string::npos)
      << b.err;
  for (const auto& e : fs::directory_iterator(d / "b" / "runs"))
    EXPECT_EQ(nlohmann::json::parse(slurp(e.path() / "result.json")).at("threads").get<int>(), many);
}

TEST(CliConventions, PlotJsonListsWhatItDrewWithTheSeriesData) {
  TempDir d;
  const fs::path run = fixtures_dir() / "plot" / "run";
  const auto r = run_command(app_path("ttt-plot").string() + " metrics " + run.string() + " --y loss -o " +
                             (d / "m.svg").string() + " --json");
  ASSERT_EQ(r.status, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j.at("output"), (d / "m.svg").string());
  EXPECT_EQ(j.at("format"), "svg");
  EXPECT_TRUE(fs::exists(d / "m.svg"));
  ASSERT_EQ(j.at("panels").size(), 1u);
  const auto& p = j.at("panels")[0];
  // The train loss series holds every logged step and its loss, as the jsonl has them.
  std::vector<double> steps, losses;
  std::istringstream in(slurp(run / "metrics.train.jsonl"));
  for (std::string l; std::getline(in, l);) {
    if (l.empty()) continue;
    const auto rec = nlohmann::json::parse(l);
    steps.push_back(rec.at("step").get<double>());
    losses.push_back(rec.at("loss").get<double>());
  }
  bool found = false;
  for (const auto& s : p.at("series")) {
    if (s.at("x").get<std::vector<double>>() != steps) continue;
    EXPECT_EQ(s.at("y").get<std::vector<double>>(), losses);
    found = true;
  }
  EXPECT_TRUE(found) << p.dump().substr(0, 2000);
  EXPECT_FALSE(p.at("xlabel").get<std::string>().empty());
}

TEST(CliConventions, SweepListJson) {
  const auto r = run_command(app_path("ttt-sweep").string() + " list --json");
  ASSERT_EQ(r.status, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out);
  ASSERT_TRUE(j.is_array());
  bool gating = false;
  for (const auto& k : j) gating = gating || k.at("name") == "gating";
  EXPECT_TRUE(gating) << r.out;
}

}  // namespace
