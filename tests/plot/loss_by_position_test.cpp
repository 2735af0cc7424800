// ttt-plot loss-by-position: the batch reduction uses the score file's weights (so a curve's
// weighted mean is compute_loss_with_mask's scalar), NaN positions drop out, labels stay unique,
// and the figure / JSON hold what was read.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <limits>

#include "core/error.h"
#include "io/safetensors.h"
#include "plot/loss_by_position.h"
#include "test_util.h"

namespace {

namespace pl = mtt::plot;
namespace fs = std::filesystem;
using mtt::test::TempDir;

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

void write_score(const fs::path& p, const std::vector<float>& tl, const std::vector<float>& al,
                 const std::vector<float>& tw, const std::vector<float>& aw, int64_t B, int64_t T) {
  fs::create_directories(p.parent_path());
  std::vector<mtt::io::TensorToWrite> ts = {{"text_loss", mtt::DType::F32, {B, T}, tl.data()},
                                            {"audio_loss", mtt::DType::F32, {B, T}, al.data()}};
  if (!tw.empty()) ts.push_back({"text_weight", mtt::DType::F32, {B, T}, tw.data()});
  if (!aw.empty()) ts.push_back({"audio_weight", mtt::DType::F32, {B, T}, aw.data()});
  mtt::io::write_safetensors(p.string(), ts);
}

TEST(LossByPosition, WeightedBatchMeanPerPosition) {
  TempDir dir;
  // B = 2, T = 3. Text: row 1 has no target at t = 2 (NaN, weight 0); padding weight 0.5 at t = 0.
  const std::vector<float> tl = {1, 2, 3, 3, 4, kNaN};
  const std::vector<float> tw = {0.5f, 1, 1, 1, 1, 0};
  const std::vector<float> al = {2, kNaN, 6, 4, kNaN, 2};
  const std::vector<float> aw = {3, 0, 3, 1, 0, 1};
  write_score(dir / "a" / "s.safetensors", tl, al, tw, aw, 2, 3);
  pl::ScoreCurves c = pl::read_score_curves((dir / "a" / "s.safetensors").string());
  EXPECT_EQ(c.batch, 2);
  EXPECT_EQ(c.frames, 3);
  EXPECT_DOUBLE_EQ(c.text[0], (0.5 * 1 + 1 * 3) / 1.5);
  EXPECT_DOUBLE_EQ(c.text[1], 3.0);
  EXPECT_DOUBLE_EQ(c.text[2], 3.0);  // row 1 has no target there
  EXPECT_DOUBLE_EQ(c.audio[0], (3 * 2 + 1 * 4) / 4.0);
  EXPECT_TRUE(std::isnan(c.audio[1]));
  EXPECT_DOUBLE_EQ(c.audio[2], (3 * 6 + 1 * 2) / 4.0);
  EXPECT_DOUBLE_EQ(c.text_mean, (0.5 + 2 + 3 + 3 + 4) / 4.5);
  EXPECT_DOUBLE_EQ(c.audio_mean, (6 + 4 + 18 + 2) / 8.0);

  // Without weights: the plain mean of the finite losses.
  write_score(dir / "b" / "s.safetensors", tl, al, {}, {}, 2, 3);
  pl::ScoreCurves u = pl::read_score_curves((dir / "b" / "s.safetensors").string());
  EXPECT_DOUBLE_EQ(u.text[0], 2.0);
  EXPECT_DOUBLE_EQ(u.audio[0], 3.0);

  std::vector<pl::ScoreCurves> both = {c, u};
  pl::label_inputs(both);
  EXPECT_EQ(both[0].label, "a/s");
  EXPECT_EQ(both[1].label, "b/s");
  pl::LossByPositionOptions o;
  o.smooth = 2;
  o.frame_rate = 12.5;
  pl::Figure f = pl::loss_by_position_figure(both, o);
  ASSERT_EQ(f.panels.size(), 2u);
  ASSERT_EQ(f.panels[0].series.size(), 2u);
  EXPECT_EQ(f.panels[1].series[0].label, "a/s");
  EXPECT_DOUBLE_EQ(f.panels[0].series[0].x[2], 2 / 12.5);
  auto j = pl::loss_by_position_json(both, o);
  ASSERT_EQ(j.size(), 4u);
  EXPECT_EQ(j[1]["stream"], "audio");
  // Smoothed over 2 (centred: this and the next), NaN skipped; null where nothing is finite.
  EXPECT_DOUBLE_EQ(j[1]["y"][0].get<double>(), c.audio[0]);
  EXPECT_DOUBLE_EQ(j[1]["y"][1].get<double>(), c.audio[2]);
  EXPECT_DOUBLE_EQ(j[1]["mean"].get<double>(), c.audio_mean);
}

TEST(LossByPosition, NotAScoreFile) {
  TempDir dir;
  const std::vector<float> x = {1, 2};
  mtt::io::write_safetensors((dir / "x.safetensors").string(), {{"logits", mtt::DType::F32, {1, 2}, x.data()}});
  try {
    pl::read_score_curves((dir / "x.safetensors").string());
    ADD_FAILURE() << "no error";
  } catch (const mtt::Error& e) {
    EXPECT_EQ(e.key(), "text_loss") << e.what();
    EXPECT_EQ(e.file(), (dir / "x.safetensors").string());
  }
  const std::vector<float> tl = {1, 2}, al = {1, 2, 3};
  mtt::io::write_safetensors((dir / "y.safetensors").string(), {{"text_loss", mtt::DType::F32, {1, 2}, tl.data()},
                                                                {"audio_loss", mtt::DType::F32, {1, 3}, al.data()}});
  EXPECT_THROW(pl::read_score_curves((dir / "y.safetensors").string()), mtt::Error);
}

}  // namespace
