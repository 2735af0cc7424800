#include "experiments/trainer.h"

#include <gtest/gtest.h>

#include <filesystem>

#include "core/atomic_file.h"
#include "io/checkpoint.h"
#include "nn/tensor_io.h"
#include "test_util.h"

namespace mtt::experiments {
namespace {

namespace fs = std::filesystem;

TEST(Trainer, MatchesTorchAdamWOneCycleAndClipping) {
  if (std::string(MTT_PYTHON).empty() || !fs::exists(MTT_PYTHON)) GTEST_SKIP() << "torch venv python not configured";
  test::TempDir dir;
  const int steps = 12;
  auto ref_path = (dir / "ref.safetensors").string();
  auto r = test::run_command(std::string(MTT_PYTHON) + " " +
                             (test::source_dir() / "tests/experiments/ref/adamw_ref.py").string() + " " + ref_path +
                             " " + std::to_string(steps));
  ASSERT_EQ(r.status, 0) << r.err;
  auto ref = nn::load_tensors(ref_path);
  at::Tensor W = ref["init.W"].clone().requires_grad_(true);
  at::Tensor b = ref["init.bias"].clone().requires_grad_(true);
  TrainConfig cfg;
  cfg.max_steps = steps;
  cfg.lr = 0.05;
  cfg.pct_start = 0.2;
  cfg.weight_decay = 0.1;
  cfg.max_norm = 0.5;
  NamedParams params = {{"W", W}, {"bias", b}};  // "bias" gets no weight decay, as in the reference groups
  auto res = train(params, cfg, [&](int, int) {
    at::Tensor loss = (at::matmul(ref["x"], W.t()) + b - ref["y"]).pow(2).mean();
    return StepLoss{loss, 16};
  }, (dir / "run").string(), nlohmann::json{{"dim", 3}}, {}, false);
  ASSERT_EQ(res.history.size(), static_cast<std::size_t>(steps));
  auto lrs = ref["lrs"];
  for (int i = 0; i < steps; ++i) EXPECT_NEAR(res.history[i].lr, lrs[i].item<double>(), 1e-12) << "step " << i;
  EXPECT_TRUE(at::allclose(W.detach(), ref["final.W"], 1e-5, 1e-6)) << (W - ref["final.W"]).abs().max();
  EXPECT_TRUE(at::allclose(b.detach(), ref["final.bias"], 1e-5, 1e-6));

  // moshi-finetune's run-dir layout, readable by our checkpoint loader.
  auto ckpt = io::Checkpoint::open((dir / "run").string());
  EXPECT_EQ(ckpt.keys().size(), 2u);
  std::string metrics = read_file((dir / "run" / "metrics.train.jsonl").string());
  EXPECT_EQ(std::count(metrics.begin(), metrics.end(), '\n'), steps);
  auto first = nlohmann::json::parse(metrics.substr(0, metrics.find('\n')));
  for (const char* k : {"lr", "step", "loss", "percent_done", "wps", "avg_wps", "eta_in_seconds", "prob_real_tokens", "at"})
    EXPECT_TRUE(first.contains(k)) << k;
}

TEST(Trainer, ParameterGroupsFollowTheReferenceNames) {
  EXPECT_TRUE(is_ttt_param("transformer.layers.3.seq_modeling_block.ttt_layer.ttt.W1"));
  EXPECT_TRUE(is_ttt_param("transformer.layers.3.seq_modeling_block.forward_ssm_gating.gating_alpha"));
  EXPECT_FALSE(is_ttt_param("transformer.layers.3.self_attn.in_projs.0.weight"));
  EXPECT_TRUE(is_no_decay_param("x.ttt.b1"));
  EXPECT_TRUE(is_no_decay_param("x.ttt.post_norm.weight"));
  EXPECT_FALSE(is_no_decay_param("x.ttt.W1"));
}

}  // namespace
}  // namespace mtt::experiments
