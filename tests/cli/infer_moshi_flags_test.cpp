// ttt-infer speaks moshi's run_inference flags (issue 14): --json run summary, --batch-size N
// writing OUT-0.wav ... OUT-(N-1).wav, --lm-config, --half, sampling defaults from the checkpoint's
// lm_gen_config, and repo ids resolved in the local Hugging Face cache without network access.
#include <gtest/gtest.h>

#include <algorithm>
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
using nlohmann::json;

void write_tone(const fs::path& p, double seconds) { mtt::test::write_tone_wav(p, seconds, {24000, 1, 6000, 0.03}); }

fs::path data(const std::string& rel) { return mtt::test::source_dir() / "tests" / "data" / rel; }

json read_json(const fs::path& p) {
  std::ifstream in(p);
  return json::parse(in);
}

void write_json(const fs::path& p, const json& j) { std::ofstream(p) << j.dump(2); }

// A model folder (moshi's config.json + weights) made from the committed base model, with
// `gen` as its lm_gen_config (null: none).
fs::path model_folder(const fs::path& dir, const json& gen) {
  fs::create_directories(dir);
  json cfg = read_json(data("fork_runs/base/config.json"));
  if (!gen.is_null()) cfg["lm_gen_config"] = gen;
  write_json(dir / "config.json", cfg);
  fs::copy_file(data("fork_runs/base/model.safetensors"), dir / "model.safetensors");
  return dir;
}

class InferMoshiFlags : public ::testing::Test {
 protected:
  void SetUp() override {
    write_tone(dir / "in.wav", 0.6);
    base = app_path("ttt-infer").string() + " " + (dir / "in.wav").string() + " ";
  }
  mtt::test::CommandResult infer(const std::string& out, const std::string& flags) {
    return run_command(base + (dir / out).string() + " --tiny --threads 1 --no-progress " + flags);
  }
  TempDir dir;
  std::string base;
};

TEST_F(InferMoshiFlags, JsonPrintsTheRunSummary) {
  const auto r = infer("out.wav", "--greedy --json --force-gating-alpha 0.5");
  ASSERT_EQ(r.status, 0) << r.err;
  const json j = json::parse(r.out);  // stdout is the JSON and nothing else
  EXPECT_GT(j.at("frames").get<int>(), 0);
  EXPECT_GT(j.at("audio_seconds").get<double>(), 0.5);
  EXPECT_GT(j.at("wall_seconds").get<double>(), 0);
  EXPECT_NEAR(j.at("rtf").get<double>(), j.at("wall_seconds").get<double>() / j.at("audio_seconds").get<double>(), 1e-9);
  EXPECT_EQ(j.at("outputs"), json::array({(dir / "out.wav").string()}));
  EXPECT_TRUE(fs::is_regular_file(dir / "out.wav"));
  // The gating used: every gate forced to alpha 0.5.
  ASSERT_FALSE(j.at("gates").empty());
  for (const auto& g : j.at("gates")) {
    EXPECT_TRUE(g.at("overridden").get<bool>());
    EXPECT_NEAR(g.at("multiplier_mean_pct").get<double>(), 100 * std::tanh(0.5), 1e-3);
  }
  EXPECT_EQ(j.at("run").at("sampling").at("use_sampling"), false);
  EXPECT_EQ(j.at("run").at("dtype"), "f32");
  EXPECT_EQ(j.at("run").at("batch_size"), 1);
  EXPECT_FALSE(j.contains("audio_codes")) << "the summary, not the per-frame codes (--stats-json has them)";
}

TEST_F(InferMoshiFlags, BatchSizeWritesOneFilePerRowAsMoshiNamesThem) {
  const auto r = infer("out.wav", "--batch-size 3 --json --stereo-output " + (dir / "st.wav").string());
  ASSERT_EQ(r.status, 0) << r.err;
  const json j = json::parse(r.out);
  for (int b = 0; b < 3; ++b) {
    EXPECT_TRUE(fs::is_regular_file(dir / ("out-" + std::to_string(b) + ".wav"))) << b;
    EXPECT_TRUE(fs::is_regular_file(dir / ("st-" + std::to_string(b) + ".wav"))) << b;
  }
  EXPECT_FALSE(fs::exists(dir / "out.wav"));
  EXPECT_EQ(j.at("outputs").size(), 6u);
  // Each row is sampled on its own: the rows' tokens are not all the same.
  const auto& rows = j.at("texts_tokens");
  ASSERT_EQ(rows.size(), 3u);
  EXPECT_FALSE(rows[0] == rows[1] && rows[1] == rows[2]) << rows.dump();
  EXPECT_EQ(j.at("text_tokens"), rows[0]);

  // Greedy: every row is the batch-of-one run.
  const auto one = infer("g.wav", "--greedy --json");
  const auto two = infer("g2.wav", "--greedy --json --batch-size 2");
  ASSERT_EQ(one.status, 0) << one.err;
  ASSERT_EQ(two.status, 0) << two.err;
  const json j1 = json::parse(one.out), j2 = json::parse(two.out);
  for (const auto& row : j2.at("texts_tokens")) EXPECT_EQ(row, j1.at("text_tokens"));
}

TEST_F(InferMoshiFlags, SamplingDefaultsComeFromTheCheckpointsLmGenConfig) {
  const fs::path folder = model_folder(dir / "model", {{"temp", 0.3}, {"temp_text", 0.2}, {"top_k", 7}, {"top_k_text", 3}});
  auto sampling = [&](const std::string& flags) {
    const auto r = infer("o.wav", "--json --checkpoint " + folder.string() + " " + flags);
    EXPECT_EQ(r.status, 0) << r.err;
    return r.status == 0 ? json::parse(r.out).at("run").at("sampling") : json();
  };
  const json s = sampling("");
  EXPECT_EQ(s.at("temp"), 0.3);
  EXPECT_EQ(s.at("temp_text"), 0.2);
  EXPECT_EQ(s.at("top_k"), 7);
  EXPECT_EQ(s.at("top_k_text"), 3);
  EXPECT_EQ(s.at("from").at("temp"), "checkpoint");
  // A flag given replaces its own value only.
  const json t = sampling("--temp 0.9 --top-k-text 11");
  EXPECT_EQ(t.at("temp"), 0.9);
  EXPECT_EQ(t.at("from").at("temp"), "--temp");
  EXPECT_EQ(t.at("top_k_text"), 11);
  EXPECT_EQ(t.at("temp_text"), 0.2);
  EXPECT_EQ(t.at("top_k"), 7);
  // The same checkpoint with another config (moshi's --lm-config, alias of --config): its values.
  json other = read_json(folder / "config.json");
  other["lm_gen_config"] = {{"temp", 0.55}, {"temp_text", 0.45}, {"top_k", 9}, {"top_k_text", 4}};
  write_json(dir / "other.json", other);
  const json u = sampling("--lm-config " + (dir / "other.json").string());
  EXPECT_EQ(u.at("temp"), 0.55);
  EXPECT_EQ(u.at("top_k"), 9);
  // Without lm_gen_config: LMGen's defaults.
  const fs::path plain = model_folder(dir / "plain", nullptr);
  const auto r = infer("p.wav", "--json --checkpoint " + plain.string());
  ASSERT_EQ(r.status, 0) << r.err;
  const json d = json::parse(r.out).at("run").at("sampling");
  EXPECT_EQ(d.at("temp"), 0.8);
  EXPECT_EQ(d.at("temp_text"), 0.7);
  EXPECT_EQ(d.at("top_k"), 250);
  EXPECT_EQ(d.at("top_k_text"), 25);
  // --greedy with a sampling flag: one of them would be ignored.
  const auto g = infer("q.wav", "--greedy --temp 0.5");
  EXPECT_EQ(g.status, 64) << g.err;
  EXPECT_NE(g.err.find("--greedy"), std::string::npos) << g.err;
}

TEST_F(InferMoshiFlags, HalfIsBf16) {
  const auto r = infer("h.wav", "--greedy --json --half");
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(json::parse(r.out).at("run").at("dtype"), "bf16");
  const auto both = infer("h2.wav", "--half --dtype f32");
  EXPECT_EQ(both.status, 64) << both.err;
}

TEST_F(InferMoshiFlags, RepoIdResolvesInTheLocalHuggingFaceCache) {
  // huggingface_hub's layout: blobs named by hash, snapshots/<commit>/ of links to them, refs/main.
  const fs::path hub = dir / "hf" / "hub";
  const fs::path repo = hub / "models--kyutai--tiny-ttt-test";
  const std::string commit = "0123456789abcdef0123456789abcdef01234567";
  fs::create_directories(repo / "blobs");
  fs::create_directories(repo / "refs");
  fs::create_directories(repo / "snapshots" / commit);
  std::ofstream(repo / "refs" / "main") << commit;
  json cfg = read_json(data("fork_runs/base/config.json"));
  write_json(repo / "blobs" / "aaaa", cfg);
  fs::copy_file(data("fork_runs/base/model.safetensors"), repo / "blobs" / "bbbb");
  fs::create_symlink("../../blobs/aaaa", repo / "snapshots" / commit / "config.json");
  fs::create_symlink("../../blobs/bbbb", repo / "snapshots" / commit / "model.safetensors");
  const std::string env = "HF_HUB_CACHE= HUGGINGFACE_HUB_CACHE= HF_HOME=" + (dir / "hf").string() + " ";

  for (const std::string flag : {"--hf-repo", "--checkpoint"}) {
    SCOPED_TRACE(flag);
    const auto r = run_command(env + base + (dir / "o.wav").string() + " --tiny --threads 1 --no-progress --greedy " +
                               flag + " kyutai/tiny-ttt-test");
    ASSERT_EQ(r.status, 0) << r.err;
    EXPECT_NE(r.err.find("kyutai/tiny-ttt-test: the local Hugging Face cache's snapshot " +
                         (repo / "snapshots" / commit).string()),
              std::string::npos)
        << r.err;
  }
  // Not in the cache: one line naming what was looked for, exit 2, no output.
  const auto m = run_command(env + base + (dir / "m.wav").string() + " --tiny --no-progress --hf-repo kyutai/not-here");
  EXPECT_EQ(m.status, 2) << m.err;
  EXPECT_EQ(std::count(m.err.begin(), m.err.end(), '\n'), 1) << m.err;
  EXPECT_NE(m.err.find("kyutai/not-here: not in the local Hugging Face cache: no " + (hub / "models--kyutai--not-here").string()),
            std::string::npos)
      << m.err;
  EXPECT_FALSE(fs::exists(dir / "m.wav"));
  // refs/main naming a snapshot that is not there: said so.
  std::ofstream(repo / "refs" / "main") << "feedface";
  const auto s = run_command(env + base + (dir / "s.wav").string() + " --tiny --no-progress --hf-repo kyutai/tiny-ttt-test");
  EXPECT_EQ(s.status, 2) << s.err;
  EXPECT_NE(s.err.find("refs/main names feedface"), std::string::npos) << s.err;
}

}  // namespace
