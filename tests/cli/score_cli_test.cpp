// ttt-infer --score and ttt-plot loss-by-position end to end on the committed upstream reference
// model (tests/data/score_ref): flags, JSON summaries, exit statuses, and the plot's series means
// agreeing with the scorer's compute_loss_with_mask scalars.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "test_util.h"

namespace {

namespace fs = std::filesystem;
using mtt::test::app_path;
using mtt::test::run_command;
using mtt::test::TempDir;

fs::path ref_dir() { return mtt::test::source_dir() / "tests" / "data" / "score_ref"; }

std::string score_cmd(const fs::path& out, const std::string& extra) {
  return app_path("ttt-infer").string() + " --score " + (ref_dir() / "codes.safetensors").string() + " " +
         out.string() + " --checkpoint " + (ref_dir() / "model.safetensors").string() + " --config " +
         (ref_dir() / "config.json").string() + " --no-progress " + extra;
}

TEST(ScoreCli, ScoresCodesAndPlotsLossByPosition) {
  TempDir dir;
  auto full = run_command(score_cmd(dir / "full.safetensors", "--json"));
  ASSERT_EQ(full.status, 0) << full.err;
  auto j = nlohmann::json::parse(full.out);
  EXPECT_EQ(j["mode"], "full");
  EXPECT_EQ(j["batch"], 2);
  EXPECT_EQ(j["frames"], 23);
  EXPECT_EQ(j["shapes"]["logits"], nlohmann::json({2, 2, 23, 24}));
  EXPECT_EQ(j["shapes"]["text_logits"], nlohmann::json({2, 1, 23, 40}));
  ASSERT_TRUE(j["text_loss"].is_number());
  ASSERT_TRUE(j["audio_loss"].is_number());
  EXPECT_NEAR(j["loss"].get<double>(), j["text_loss"].get<double>() + j["audio_loss"].get<double>(), 1e-12);
  ASSERT_TRUE(fs::exists(dir / "full.safetensors"));

  auto st = run_command(score_cmd(dir / "stream.safetensors", "--streaming --json"));
  ASSERT_EQ(st.status, 0) << st.err;
  auto js = nlohmann::json::parse(st.out);
  EXPECT_EQ(js["mode"], "streaming");
  EXPECT_NEAR(js["audio_loss"].get<double>(), j["audio_loss"].get<double>(), 1e-5 * j["audio_loss"].get<double>());
  EXPECT_NEAR(js["text_loss"].get<double>(), j["text_loss"].get<double>(), 1e-5 * j["text_loss"].get<double>());

  // The plot's weighted means are the scorer's compute_loss_with_mask scalars.
  const fs::path fig = dir / "fig.svg";
  auto p = run_command(app_path("ttt-plot").string() + " loss-by-position " + (dir / "full.safetensors").string() + " " +
                       (dir / "stream.safetensors").string() + " --window 3 --json --out " + fig.string());
  ASSERT_EQ(p.status, 0) << p.err;
  auto pj = nlohmann::json::parse(p.out);
  ASSERT_EQ(pj["series"].size(), 4u);
  for (const auto& s : pj["series"]) {
    const auto& ref = s["input"].get<std::string>().find("stream") != std::string::npos ? js : j;
    const std::string stream = s["stream"];
    EXPECT_NEAR(s["mean"].get<double>(), ref[stream + "_loss"].get<double>(), 1e-6) << stream;
    EXPECT_EQ(s["y"].size(), 23u);
    EXPECT_EQ(s["smooth"], 3);
  }
  ASSERT_TRUE(fs::exists(fig));
  EXPECT_GT(fs::file_size(fig), 1000u);
}

TEST(ScoreCli, ExitStatuses) {
  TempDir dir;
  // Not a codes file: the weights file has no `codes`.
  auto r = run_command(app_path("ttt-infer").string() + " --score " + (ref_dir() / "model.safetensors").string() + " " +
                       (dir / "o.safetensors").string() + " --checkpoint " + (ref_dir() / "model.safetensors").string() +
                       " --config " + (ref_dir() / "config.json").string() + " --no-progress");
  EXPECT_EQ(r.status, 2) << r.err;
  // One line naming the file and the key, last on stderr (the model's label comes before it).
  const std::string last = r.err.substr(r.err.rfind('\n', r.err.size() - 2) + 1);
  EXPECT_NE(last.find("ttt-infer: "), std::string::npos) << r.err;
  EXPECT_NE(last.find("model.safetensors: codes: no tensor named 'codes'"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(dir / "o.safetensors"));
  // --streaming belongs to --score.
  auto u = run_command(app_path("ttt-infer").string() + " in.wav out.wav --tiny --streaming");
  EXPECT_EQ(u.status, 64) << u.err;
  // The scores are safetensors.
  auto w = run_command(score_cmd(dir / "o.wav", ""));
  EXPECT_EQ(w.status, 64) << w.err;
  // ttt-plot on a file that is not a score file.
  auto pl = run_command(app_path("ttt-plot").string() + " loss-by-position " + (ref_dir() / "codes.safetensors").string() +
                        " --out " + (dir / "x.png").string());
  EXPECT_EQ(pl.status, 2) << pl.err;
  EXPECT_NE(pl.err.find("text_loss"), std::string::npos) << pl.err;
}

}  // namespace
