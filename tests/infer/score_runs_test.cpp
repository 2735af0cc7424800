// `ttt-infer --score` on the run dirs the forks' own code wrote (tests/data/fork_runs: the
// moshi-finetune TTT fork; tests/data/inplace_runs: the In-Place TTT port), through the flags a
// user types: `--checkpoint RUN --moshi-weight BASE`. For every case, on the fork's own codes
// (T not a multiple of the mini-batch / chunk): the full forward equals the fork's
// LMModel.forward logits and its compute_loss_with_mask losses, `--streaming` equals the fork's
// teacher-forced model.streaming() outputs (fork mode, chosen for fork runs), and
// `--force-gating-alpha 0` equals the fork with its gates at 0.
//
// Waiting: these need the run-dir resolver (issue 12 item 1: moshi/model_source.h) and, for LoRA
// and the fork's numerics (items 2, 3), moshi/lora.h. Until those headers are in the tree the
// tests skip and say so; they turn on by themselves when they land.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "nn/tensor_io.h"
#include "test_util.h"

#if __has_include("moshi/model_source.h")
#define MTT_HAVE_RESOLVER 1
#else
#define MTT_HAVE_RESOLVER 0
#endif
#if __has_include("moshi/lora.h")
#define MTT_HAVE_FORK_NUMERICS 1
#else
#define MTT_HAVE_FORK_NUMERICS 0
#endif

namespace {

namespace fs = std::filesystem;
using mtt::test::app_path;
using mtt::test::run_command;
using mtt::test::TempDir;

struct Case {
  fs::path dir, base;
  bool fork = false;  // fork_runs (else inplace_runs)
  std::string name() const { return dir.parent_path().filename().string() + "/" + dir.filename().string(); }
};

std::vector<Case> cases() {
  std::vector<Case> out;
  for (const char* family : {"fork_runs", "inplace_runs"}) {
    const fs::path root = mtt::test::source_dir() / "tests" / "data" / family;
    if (!fs::is_directory(root)) continue;
    for (const auto& e : fs::directory_iterator(root))
      if (fs::is_regular_file(e.path() / "ref.safetensors"))
        out.push_back({e.path(), root / "base" / "model.safetensors", std::string(family) == "fork_runs"});
  }
  std::sort(out.begin(), out.end(), [](const Case& a, const Case& b) { return a.dir < b.dir; });
  return out;
}

// max |ours - ref| where ref is finite, relative to max |ref| there; NaN patterns must agree.
double rel_err(const at::Tensor& ours, const at::Tensor& ref) {
  EXPECT_TRUE(at::equal(ours.isnan(), ref.isnan())) << "NaN at other positions";
  at::Tensor m = ~ref.isnan() & ~ours.isnan();
  at::Tensor r = ref.masked_select(m).to(at::kDouble), o = ours.masked_select(m).to(at::kDouble);
  return (o - r).abs().max().item<double>() / r.abs().max().item<double>();
}

struct Scored {
  std::map<std::string, at::Tensor> t;
  nlohmann::json summary;
};

Scored score(const Case& c, const TempDir& dir, const std::string& tag, const std::string& flags) {
  const fs::path out = dir / (tag + ".safetensors");
  auto r = run_command(app_path("ttt-infer").string() + " --score " + (c.dir / "ref.safetensors").string() + " " +
                       out.string() + " --checkpoint " + (c.dir / "run").string() + " --moshi-weight " +
                       c.base.string() + " --no-progress --json " + flags);
  EXPECT_EQ(r.status, 0) << c.name() << " " << flags << ": " << r.err;
  if (r.status != 0) return {};
  return {mtt::nn::load_tensors(out.string()), nlohmann::json::parse(r.out)};
}

TEST(ScoreRuns, TheForksDataIsHere) { EXPECT_GE(cases().size(), 9u); }

// Runs today, without the resolver: the merged fork run (every tensor in one file) with the run's
// `ttt:` settings written into a config by hand, scored through --config.
TEST(ScoreRuns, MergedForkRunWithItsSettingsMappedByHand) {
  const fs::path root = mtt::test::source_dir() / "tests" / "data" / "fork_runs";
  const fs::path run = root / "ttt_merged";
  ASSERT_TRUE(fs::is_regular_file(run / "ref.safetensors"));
  TempDir dir;
  std::ifstream in(root / "base" / "config.json");
  nlohmann::json cfg = nlohmann::json::parse(in);
  // args.yaml `ttt:` of this run (layers middle = 1, 2 of 4; mini-batch 16 > T % 16 = 5).
  cfg["ttt"] = {{"enable", true},        {"layers", "middle"},         {"mini_batch_size", 16},
                {"base_lr", 1.0},        {"initial_gating_alpha", 0.1}, {"persistent_states", true},
                {"ttt_mlp_layers", 2}};
  std::ofstream(dir / "config.json") << cfg.dump(2);
  auto ref = mtt::nn::load_tensors((run / "ref.safetensors").string());
  const std::string base_cmd = app_path("ttt-infer").string() + " --score " + (run / "ref.safetensors").string() + " ";
  const std::string model = " --checkpoint " +
                            (run / "run" / "checkpoints" / "checkpoint_000003" / "consolidated" / "consolidated.safetensors")
                                .string() +
                            " --config " + (dir / "config.json").string() + " --no-progress --json";
  for (const std::string gates : {"", "--force-gating-alpha 0"}) {
    SCOPED_TRACE(gates);
    const std::string pre = gates.empty() ? "" : "gate0.";
    auto r = run_command(base_cmd + (dir / "o.safetensors").string() + model + " " + gates);
    ASSERT_EQ(r.status, 0) << r.err;
    auto o = mtt::nn::load_tensors((dir / "o.safetensors").string());
    EXPECT_LE(rel_err(o.at("logits"), ref.at(pre + "logits")), 1e-5);
    EXPECT_LE(rel_err(o.at("text_logits"), ref.at(pre + "text_logits")), 1e-5);
    if (gates.empty()) {
      auto j = nlohmann::json::parse(r.out);
      const double lt = ref.at("loss.text").item<double>(), la = ref.at("loss.audio").item<double>();
      EXPECT_NEAR(j.at("text_loss").get<double>(), lt, 1e-5 * lt);
      EXPECT_NEAR(j.at("audio_loss").get<double>(), la, 1e-5 * la);
    }
  }
}

TEST(ScoreRuns, FullForwardEqualsTheForksLogitsAndLosses) {
#if !MTT_HAVE_RESOLVER
  GTEST_SKIP() << "waiting for the run-dir resolver (issue 12 item 1, moshi/model_source.h)";
#endif
  for (const auto& c : cases()) {
    SCOPED_TRACE(c.name());
    auto ref = mtt::nn::load_tensors((c.dir / "ref.safetensors").string());
    if (!MTT_HAVE_FORK_NUMERICS && c.fork && (c.dir.filename() == "lora_ttt" || c.dir.filename() == "ttt_mlp3")) {
      ADD_FAILURE() << "LoRA / the fork's multi-layer query pass (issue 12 items 2, 3) are not in the tree";
      continue;
    }
    TempDir dir;
    Scored s = score(c, dir, "full", "");
    if (s.t.empty()) continue;
    EXPECT_LE(rel_err(s.t.at("logits"), ref.at("logits")), 1e-5);
    EXPECT_LE(rel_err(s.t.at("text_logits"), ref.at("text_logits")), 1e-5);
    EXPECT_TRUE(at::equal(s.t.at("mask"), ref.at("mask").to(at::kBool)));
    EXPECT_TRUE(at::equal(s.t.at("text_mask"), ref.at("text_mask").to(at::kBool)));
    // train.py's losses (both forks' args.yaml: text_padding_weight 0.5, first codebook x1.0).
    const double lt = ref.at("loss.text").item<double>(), la = ref.at("loss.audio").item<double>();
    EXPECT_NEAR(s.summary.at("text_loss").get<double>(), lt, 1e-5 * lt);
    EXPECT_NEAR(s.summary.at("audio_loss").get<double>(), la, 1e-5 * la);
  }
}

TEST(ScoreRuns, StreamingEqualsTheForksStreamedOutputs) {
#if !MTT_HAVE_RESOLVER || !MTT_HAVE_FORK_NUMERICS
  GTEST_SKIP() << "waiting for the run-dir resolver and the fork's streaming numerics (issue 12 items 1, 3)";
#endif
  for (const auto& c : cases()) {
    SCOPED_TRACE(c.name());
    auto ref = mtt::nn::load_tensors((c.dir / "ref.safetensors").string());
    if (!ref.count("stream.logits")) continue;
    TempDir dir;
    Scored s = score(c, dir, "stream", "--streaming");
    if (s.t.empty()) continue;
    EXPECT_EQ(s.summary.at("mode"), "streaming");
    EXPECT_LE(rel_err(s.t.at("logits"), ref.at("stream.logits")), 1e-5);
    EXPECT_LE(rel_err(s.t.at("text_logits"), ref.at("stream.text_logits")), 1e-5);
  }
}

TEST(ScoreRuns, GatesAtZeroEqualTheForkWithItsGatesAtZero) {
#if !MTT_HAVE_RESOLVER
  GTEST_SKIP() << "waiting for the run-dir resolver (issue 12 item 1, moshi/model_source.h)";
#endif
  for (const auto& c : cases()) {
    auto ref = mtt::nn::load_tensors((c.dir / "ref.safetensors").string());
    if (!ref.count("gate0.logits")) continue;  // In-Place runs have no gates
    SCOPED_TRACE(c.name());
    if (!MTT_HAVE_FORK_NUMERICS && c.dir.filename() == "lora_ttt") {
      ADD_FAILURE() << "LoRA (issue 12 item 2) is not in the tree";
      continue;
    }
    TempDir dir;
    Scored s = score(c, dir, "gate0", "--force-gating-alpha 0");
    if (s.t.empty()) continue;
    EXPECT_LE(rel_err(s.t.at("logits"), ref.at("gate0.logits")), 1e-5);
    EXPECT_LE(rel_err(s.t.at("text_logits"), ref.at("gate0.text_logits")), 1e-5);
  }
}

}  // namespace
