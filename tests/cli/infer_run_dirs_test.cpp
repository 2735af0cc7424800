// ttt-infer on the run dirs the forks' own code wrote (tests/data/fork_runs, tests/data/inplace_runs):
// --tiny --checkpoint RUN builds the run's configuration (not the tiny preset's) with a random tiny
// codec sized to its codebooks.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "test_util.h"

namespace {

namespace fs = std::filesystem;
using mtt::test::app_path;
using mtt::test::run_command;
using mtt::test::TempDir;

void write_tone(const fs::path& p, double seconds) { mtt::test::write_tone_wav(p, seconds, {24000, 1, 6000, 0.03}); }

fs::path data(const std::string& rel) { return mtt::test::source_dir() / "tests" / "data" / rel; }

}  // namespace

TEST(InferRunDirs, TinyCheckpointRunUsesTheRunsConfiguration) {
  TempDir dir;
  write_tone(dir / "in.wav", 0.8);
  for (const std::string c : {"fork_runs/ttt_other", "fork_runs/ttt_merged", "inplace_runs/inplace_big_lr"}) {
    SCOPED_TRACE(c);
    const std::string family = c.substr(0, c.find('/'));
    const auto r = run_command(app_path("ttt-infer").string() + " " + (dir / "in.wav").string() + " " +
                               (dir / "out.wav").string() + " --tiny --threads 1 --no-progress --checkpoint " +
                               data(c + "/run").string() + " --moshi-weight " +
                               data(family + "/base/model.safetensors").string() + " --stats-json " +
                               (dir / "s.json").string());
    ASSERT_EQ(r.status, 0) << r.err;
    EXPECT_TRUE(fs::is_regular_file(dir / "out.wav"));
    // The model that ran is the run's: its TTT settings and its codebooks, said before generating.
    EXPECT_NE(r.err.find("TTT settings from"), std::string::npos) << r.err;
    std::ifstream in(dir / "s.json");
    const auto s = nlohmann::json::parse(in);
    const auto base_cfg = nlohmann::json::parse(std::ifstream(data(family + "/base/config.json")));
    ASSERT_FALSE(s.at("audio_codes").empty());
    EXPECT_EQ(s.at("audio_codes")[0].size(), base_cfg.at("dep_q").get<size_t>());
    for (const auto& frame : s.at("audio_codes"))
      for (const auto& code : frame) EXPECT_LT(code.get<int64_t>(), base_cfg.at("card").get<int64_t>());
  }
}

