// plots/regenerate.sh on a runs tree laid out as `ttt-sweep run` writes it: figures for the
// experiments that have outputs, a note for those that do not, PNG and SVG for each.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "test_util.h"

namespace {

using mtt::test::app_path;
using mtt::test::fixtures_dir;
using mtt::test::run_command;
using mtt::test::source_dir;
using mtt::test::TempDir;
namespace fs = std::filesystem;

TEST(PlotRegenerate, DrawsTheExperimentsThatHaveOutputs) {
  if (!fs::exists(app_path("ttt-plot"))) GTEST_SKIP() << "ttt-plot not built";
  TempDir d;
  const fs::path runs = d / "runs", out = d / "figs", fx = fixtures_dir() / "plot";
  // mini-batch: a summary with the spec's axes, one run dir with metrics, inner-loop log and
  // several checkpoints (the fixtures).
  fs::create_directories(runs / "mini-batch" / "runs");
  nlohmann::json rows = nlohmann::json::array();
  char id[8] = "p0";
  for (int b : {16, 32, 64, 128})
    for (double lr : {0.1, 1.0}) {
      ++id[1];
      rows.push_back({{"id", std::string(id)}, {"ttt.mini_batch_size", b}, {"ttt.base_lr", lr},
                      {"final_loss", 2.0 + 0.1 * b / 16 - lr * 0.05}, {"eval_loss", 2.1 + 0.1 * b / 16}});
    }
  std::ofstream(runs / "mini-batch" / "summary.json")
      << nlohmann::json({{"axes", {"ttt.mini_batch_size", "ttt.base_lr"}}, {"metrics", {"final_loss", "eval_loss"}}, {"rows", rows}}).dump();
  fs::copy(fx / "run", runs / "mini-batch" / "runs" / "p0", fs::copy_options::recursive);

  const auto r = run_command("TTT_PLOT=" + app_path("ttt-plot").string() + " " + (source_dir() / "plots" / "regenerate.sh").string() +
                             " " + runs.string() + " " + out.string());
  ASSERT_EQ(r.status, 0) << r.err;
  for (const char* f : {"mini-batch/final_loss", "mini-batch/eval_loss", "mini-batch/runs/p0_metrics",
                        "mini-batch/runs/p0_inner_loop", "mini-batch/runs/p0_gating"})
    for (const char* ext : {".png", ".svg"}) EXPECT_TRUE(fs::exists(out / (std::string(f) + ext))) << f << ext;
  EXPECT_NE(r.err.find("skip gating"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("10 figure file(s)"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(out / "gating"));
}

}  // namespace
