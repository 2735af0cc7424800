// ttt-infer on the built-in tiny model: gate overrides change what they must and nothing else.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "test_util.h"

namespace {

namespace fs = std::filesystem;
using mtt::test::app_path;
using mtt::test::run_command;
using mtt::test::TempDir;

// A 16-bit mono WAV at 16 kHz (ttt-infer resamples to 24 kHz).
void write_tone(const fs::path& p, double seconds) { mtt::test::write_tone_wav(p, seconds, {16000}); }

nlohmann::json stats(const fs::path& p) {
  std::ifstream in(p);
  return nlohmann::json::parse(in);
}

TEST(InferCli, GateOverridesOnTheTinyModel) {
  TempDir dir;
  write_tone(dir / "in.wav", 0.6);
  const std::string base = app_path("ttt-infer").string() + " " + (dir / "in.wav").string() + " ";
  auto run = [&](const std::string& name, const std::string& flags) {
    auto r = run_command(base + (dir / (name + ".wav")).string() + " --tiny --greedy --no-progress --stats-json " +
                         (dir / (name + ".json")).string() + " " + flags);
    EXPECT_EQ(r.status, 0) << r.err;
    return r;
  };
  auto a0 = run("alpha0", "--force-gating-alpha 0");
  run("mult0", "--force-gating-multiplier 0");
  run("alpha1", "--force-gating-alpha 1");
  auto s0 = stats(dir / "alpha0.json"), m0 = stats(dir / "mult0.json"), s1 = stats(dir / "alpha1.json");
  ASSERT_GT(s0["frames"].get<int>(), 0);
  // alpha = 0 and multiplier 0 both switch every TTT branch off exactly: same tokens.
  EXPECT_EQ(s0["audio_codes"], m0["audio_codes"]);
  EXPECT_EQ(s0["text_tokens"], m0["text_tokens"]);
  // The printed statistics describe the forced gates: tanh(0) = 0 %, tanh(1) = 76.16 %.
  for (const auto& g : s1["gates"]) {
    EXPECT_NEAR(g["multiplier_mean_pct"].get<double>(), 100 * std::tanh(1.0), 1e-3);
    EXPECT_TRUE(g["overridden"].get<bool>());
  }
  for (const auto& g : s0["gates"]) EXPECT_EQ(g["multiplier_mean_pct"].get<double>(), 0.0);
  // Every parameter that was set is printed.
  EXPECT_NE(a0.err.find("forward_ssm_gating.gating_alpha := 0"), std::string::npos) << a0.err;
  EXPECT_NE(a0.err.find("backward_ssm_gating.gating_alpha := 0"), std::string::npos);
  EXPECT_NE(a0.err.find("[tiny]"), std::string::npos) << "the tiny path says so";
  // A different alpha gives a different output.
  EXPECT_NE(s0["audio_codes"], s1["audio_codes"]);
  EXPECT_TRUE(fs::exists(dir / "alpha1.wav"));
}

TEST(InferCli, UnreadableInputGivesOneLineAndNoOutput) {
  TempDir dir;
  std::ofstream(dir / "empty.wav").close();
  std::ofstream(dir / "text.wav") << "this is not audio\n";
  for (const char* name : {"empty.wav", "text.wav", "missing.wav"}) {
    auto r = run_command(app_path("ttt-infer").string() + " " + (dir / name).string() + " " +
                         (dir / "out.wav").string() + " --tiny --no-progress");
    EXPECT_EQ(r.status, 2) << name << ": " << r.err;
    EXPECT_NE(r.err.find(name), std::string::npos) << r.err;
    EXPECT_FALSE(fs::exists(dir / "out.wav")) << name;
  }
}

}  // namespace
