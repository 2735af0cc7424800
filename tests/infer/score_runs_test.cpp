// `ttt-infer --score` on the run dirs the forks' own code wrote (tests/data/fork_runs: the
// moshi-finetune TTT fork; tests/data/inplace_runs: the In-Place TTT port), through the flags a
// user types: `--checkpoint RUN --moshi-weight BASE`. For every case, on the fork's own codes
// (T not a multiple of the mini-batch / chunk): the full forward equals the fork's
// LMModel.forward logits and its compute_loss_with_mask losses; `--streaming` equals the TTT fork's
// teacher-forced model.streaming() outputs (fork mode, chosen for its runs) and, for In-Place runs,
// the full forward (our stream carries the functional state; the port's own legacy stream, which
// writes w_down in place after each complete chunk, differs once the update is not inert:
// 2.6e-2 of max|logits| in inplace_big_lr); `--force-gating-alpha 0` equals the fork with its gates
// at 0.
//
// LoRA (issue 12 item 2), the fork's multi-layer query pass and its stateless streaming (item 3)
// come with moshi/lora.h: until that header is in the tree the cases that need them skip and say so.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "nn/tensor_io.h"
#include "test_util.h"

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

void PrintTo(const Case& c, std::ostream* os) { *os << c.name(); }  // readable CTest names

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

// The loss weights a run trained with are the scorer's defaults; flags override them.
TEST(ScoreRuns, LossWeightsComeFromTheRunsArgs) {
  const fs::path src = mtt::test::source_dir() / "tests" / "data" / "fork_runs";
  TempDir dir;
  fs::copy(src / "ttt_merged" / "run", dir / "run", fs::copy_options::recursive);
  const fs::path args = dir / "run" / "args.yaml";
  std::string text;
  {
    std::ifstream in(args);
    text.assign(std::istreambuf_iterator<char>(in), {});
  }
  const std::string from = "text_padding_weight: 0.5", to = "text_padding_weight: 0.25";
  ASSERT_NE(text.find(from), std::string::npos);
  text.replace(text.find(from), from.size(), to);
  std::ofstream(args) << text;
  const std::string cmd = app_path("ttt-infer").string() + " --score " + (src / "ttt_merged" / "ref.safetensors").string() +
                          " " + (dir / "o.safetensors").string() + " --checkpoint " + (dir / "run").string() +
                          " --moshi-weight " + (src / "base" / "model.safetensors").string() + " --no-progress --json";
  auto r = run_command(cmd);
  ASSERT_EQ(r.status, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  EXPECT_DOUBLE_EQ(j.at("loss_weights").at("text_padding_weight").get<double>(), 0.25);
  EXPECT_DOUBLE_EQ(j.at("loss_weights").at("first_codebook_weight_multiplier").get<double>(), 1.0);
  auto o = mtt::nn::load_tensors((dir / "o.safetensors").string());
  auto ref = mtt::nn::load_tensors((src / "ttt_merged" / "ref.safetensors").string());
  // The run's weights at the padding targets, where the reference (args 0.5) has 0.5.
  at::Tensor rw = ref.at("loss.text_weight").select(1, 0);
  EXPECT_TRUE(at::equal(o.at("text_weight"), at::where(rw == 0.5, at::full({}, 0.25f), rw)));
  EXPECT_GT((rw == 0.5).sum().item<int64_t>(), 0);
  auto f = run_command(cmd + " --text-padding-weight 0.5");
  ASSERT_EQ(f.status, 0) << f.err;
  auto jf = nlohmann::json::parse(f.out);
  EXPECT_DOUBLE_EQ(jf.at("loss_weights").at("text_padding_weight").get<double>(), 0.5);
  const double lt = ref.at("loss.text").item<double>();
  EXPECT_NEAR(jf.at("text_loss").get<double>(), lt, 1e-5 * lt);
  EXPECT_GT(std::abs(j.at("text_loss").get<double>() - lt), 1e-4);
}

class ScoreRun : public ::testing::TestWithParam<Case> {
 protected:
  void SetUp() override { ref_ = mtt::nn::load_tensors((GetParam().dir / "ref.safetensors").string()); }
  // Skips what needs LoRA or the fork's numerics while they are not in the tree.
  bool skip_without_fork_numerics(bool streaming) {
    if (MTT_HAVE_FORK_NUMERICS) return false;
    const Case& c = GetParam();
    const std::string n = c.dir.filename().string();
    if (c.fork && (n == "lora_ttt" || n == "ttt_mlp3" || streaming)) return true;
    return false;
  }
  std::map<std::string, at::Tensor> ref_;
  TempDir dir_;
};

TEST_P(ScoreRun, FullForwardEqualsTheForksLogitsAndLosses) {
  if (skip_without_fork_numerics(false))
    GTEST_SKIP() << "needs LoRA / the fork's multi-layer query pass (issue 12 items 2, 3: moshi/lora.h)";
  Scored s = score(GetParam(), dir_, "full", "");
  ASSERT_FALSE(s.t.empty());
  EXPECT_EQ(s.summary.at("mode"), "full");
  EXPECT_LE(rel_err(s.t.at("logits"), ref_.at("logits")), 1e-5);
  EXPECT_LE(rel_err(s.t.at("text_logits"), ref_.at("text_logits")), 1e-5);
  EXPECT_TRUE(at::equal(s.t.at("mask"), ref_.at("mask").to(at::kBool)));
  EXPECT_TRUE(at::equal(s.t.at("text_mask"), ref_.at("text_mask").to(at::kBool)));
  // train.py's losses, with the weights of the run's args.yaml (both forks: text_padding_weight 0.5,
  // first codebook x1.0).
  EXPECT_NE(s.summary.at("loss_weights").at("from").get<std::string>().find("args.yaml"), std::string::npos)
      << s.summary.at("loss_weights");
  const double lt = ref_.at("loss.text").item<double>(), la = ref_.at("loss.audio").item<double>();
  EXPECT_NEAR(s.summary.at("text_loss").get<double>(), lt, 1e-5 * lt);
  EXPECT_NEAR(s.summary.at("audio_loss").get<double>(), la, 1e-5 * la);
}

TEST_P(ScoreRun, StreamingEqualsTheForksStream) {
  if (skip_without_fork_numerics(true))
    GTEST_SKIP() << "needs the fork's stateless streaming (issue 12 item 3: moshi/lora.h)";
  const Case& c = GetParam();
  Scored s = score(c, dir_, "stream", "--streaming");
  ASSERT_FALSE(s.t.empty());
  EXPECT_EQ(s.summary.at("mode"), "streaming");
  const std::string pre = c.fork ? "stream." : "";
  EXPECT_LE(rel_err(s.t.at("logits"), ref_.at(pre + "logits")), 1e-5);
  EXPECT_LE(rel_err(s.t.at("text_logits"), ref_.at(pre + "text_logits")), 1e-5);
}

TEST_P(ScoreRun, GatesAtZeroEqualTheForkWithItsGatesAtZero) {
  if (!ref_.count("gate0.logits")) GTEST_SKIP() << "no gate-0 reference (In-Place runs have no gates)";
  if (skip_without_fork_numerics(false))
    GTEST_SKIP() << "needs LoRA / the fork's multi-layer query pass (issue 12 items 2, 3: moshi/lora.h)";
  Scored s = score(GetParam(), dir_, "gate0", "--force-gating-alpha 0");
  ASSERT_FALSE(s.t.empty());
  EXPECT_LE(rel_err(s.t.at("logits"), ref_.at("gate0.logits")), 1e-5);
  EXPECT_LE(rel_err(s.t.at("text_logits"), ref_.at("gate0.text_logits")), 1e-5);
}

INSTANTIATE_TEST_SUITE_P(Data, ScoreRun, ::testing::ValuesIn(cases()), [](const ::testing::TestParamInfo<Case>& i) {
  std::string n = i.param.name();
  for (auto& ch : n)
    if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
  return n;
});

}  // namespace
