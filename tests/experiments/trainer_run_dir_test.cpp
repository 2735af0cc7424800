// The trainer's run dir as moshi-finetune writes it: metrics lines in its schema, appended (never
// rewritten) one per log step; eval lines every eval_freq; the newest num_ckpt_keep checkpoints;
// and a run stopped at any step and resumed gives the losses, weights and metrics of the
// uninterrupted run.
#include <c10/core/GradMode.h>
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <random>

#include "core/atomic_file.h"
#include "core/error.h"
#include "experiments/synthetic_data.h"
#include "experiments/toy_lm.h"
#include "experiments/trainer.h"
#include "io/checkpoint.h"
#include "io/tfevents.h"
#include "test_util.h"

namespace mtt::experiments {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

ToyLMConfig toy_config() {
  ToyLMConfig c;
  c.vocab = 16;
  c.ttt = ttt::TTTConfig::moshi(16, 2, 4);
  return c;
}

TrainConfig config(int steps) {
  TrainConfig tc;
  tc.max_steps = steps;
  tc.lr = 3e-3;
  tc.pct_start = 0.2;
  tc.ckpt_freq = 2;
  tc.num_ckpt_keep = 2;
  tc.batch_size = 2;
  return tc;
}

// The batch of a step: a function of the step, as the real data sources are.
at::Tensor batch(int step, int micro) { return make_permutation_chain_batch(2, 16, 16, 0.9, 1000 + 7 * step + micro); }

// Dropout-like use of the global generator inside the loss, so a resume that lost the RNG state
// would train on different noise.
StepLoss noisy_loss(ToyTTTLM& m, int step, int micro) {
  at::Tensor t = batch(step, micro);
  at::Tensor loss = m.lm_loss(t, nullptr) * (1 + 0.01 * at::rand({}));
  return StepLoss{loss, t.numel(), t.numel() - 2};
}

std::vector<json> lines(const fs::path& p) {
  std::vector<json> out;
  if (!fs::exists(p)) return out;
  std::istringstream in(read_file(p.string()));
  std::string l;
  while (std::getline(in, l)) out.push_back(json::parse(l));
  return out;
}

TEST(TrainerRunDir, MetricsInMoshiFinetunesSchemaAppendedPerLogStep) {
  test::TempDir d;
  const fs::path run = d / "run";
  ToyTTTLM m(toy_config(), 3);
  TrainConfig tc = config(5);
  tc.do_eval = true;
  tc.eval_freq = 2;
  TrainHooks hooks;
  std::vector<ino_t> inodes;
  hooks.after_step = [&](const StepRecord& r) {
    // The line of step r.step is written after this hook; the file holds the earlier ones, in the
    // same inode (appended, not replaced by a rewrite).
    struct stat st {};
    if (::stat((run / "metrics.train.jsonl").c_str(), &st) == 0) inodes.push_back(st.st_ino);
    EXPECT_EQ(lines(run / "metrics.train.jsonl").size(), static_cast<size_t>(r.step - 1));
  };
  hooks.evaluate = [&](int) {
    c10::NoGradGuard ng;
    return m.lm_loss(batch(99, 0), nullptr).item<double>();
  };
  auto res = train(m.named_parameters(), tc, [&](int s, int mi) { return noisy_loss(m, s, mi); }, run.string(),
                   m.config_json(), hooks, false);
  ASSERT_EQ(inodes.size(), 4u);
  for (auto i : inodes) EXPECT_EQ(i, inodes.front());

  const auto train_lines = lines(run / "metrics.train.jsonl");
  ASSERT_EQ(train_lines.size(), 5u);
  // finetune/monitoring/metrics_logger.py get_train_logs, in its order, + the TTT fork's fields for a
  // model with TTT parameters and a gate, + "at" (MetricsLogger.log).
  std::vector<std::string> keys;
  for (auto it = train_lines[1].begin(); it != train_lines[1].end(); ++it) keys.push_back(it.key());
  // nlohmann::json sorts keys: compare the raw line's order instead.
  const std::string raw = read_file((run / "metrics.train.jsonl").string());
  const std::string second = raw.substr(raw.find('\n') + 1, raw.find('\n', raw.find('\n') + 1) - raw.find('\n') - 1);
  const std::vector<std::string> order = {"lr", "step", "loss", "prob_real_tokens", "percent_done", "peak_allocated_mem",
                                          "allocated_mem", "wps", "avg_wps", "eta_in_seconds", "lr_base",
                                          "lr_ttt_weights", "lr_ttt_alpha", "ttt_gating_alpha", "ttt_gating_alpha_raw",
                                          "ttt_alpha_change", "at"};
  size_t pos = 0;
  for (const auto& k : order) {
    const size_t at = second.find("\"" + k + "\": ", pos);
    ASSERT_NE(at, std::string::npos) << k << " missing or out of order in " << second;
    pos = at;
  }
  EXPECT_EQ(keys.size(), order.size()) << second;
  EXPECT_EQ(train_lines[0].size(), order.size() - 1);  // no ttt_alpha_change before a previous log
  for (size_t i = 0; i < res.history.size(); ++i) {
    EXPECT_EQ(train_lines[i]["step"], static_cast<int>(i) + 1);
    EXPECT_EQ(train_lines[i]["loss"].get<double>(), res.history[i].loss);
    EXPECT_EQ(train_lines[i]["lr"].get<double>(), res.history[i].lr);
    EXPECT_DOUBLE_EQ(train_lines[i]["percent_done"].get<double>(), 100.0 * (i + 1) / 5);
    EXPECT_DOUBLE_EQ(train_lines[i]["prob_real_tokens"].get<double>(), (32.0 - 2) / 32.0);
    EXPECT_GT(train_lines[i]["peak_allocated_mem"].get<double>(), 0.001);  // RSS of this process, in GB
    EXPECT_GE(train_lines[i]["peak_allocated_mem"].get<double>(), train_lines[i]["allocated_mem"].get<double>() * 0.999);
    EXPECT_GT(train_lines[i]["wps"].get<double>(), 0);
    EXPECT_GE(train_lines[i]["eta_in_seconds"].get<double>(), 0);
    EXPECT_EQ(train_lines[i]["at"].get<std::string>().size() >= 19, true);
  }
  EXPECT_EQ(train_lines[4]["eta_in_seconds"].get<double>(), 0.0);
  const at::Tensor alpha = m.forward_gate().gating_alpha.detach().to(at::kDouble);
  EXPECT_DOUBLE_EQ(train_lines[4]["ttt_gating_alpha_raw"].get<double>(), alpha.mean().item<double>());
  EXPECT_DOUBLE_EQ(train_lines[4]["ttt_gating_alpha"].get<double>(), alpha.tanh().mean().item<double>());

  // Eval at steps 2, 4 and the last one (5): step, train_loss, perplexity, eval_loss, at.
  const auto ev = lines(run / "metrics.eval.jsonl");
  ASSERT_EQ(ev.size(), 3u);
  EXPECT_EQ(ev[0]["step"], 2);
  EXPECT_EQ(ev[1]["step"], 4);
  EXPECT_EQ(ev[2]["step"], 5);
  EXPECT_EQ(ev[2].size(), 5u);
  EXPECT_EQ(ev[1]["train_loss"].get<double>(), res.history[3].loss);
  EXPECT_DOUBLE_EQ(ev[1]["perplexity"].get<double>(), std::pow(2.0, ev[1]["eval_loss"].get<double>()));

  // TensorBoard: one scalar per metric and log step, tag "<tag>.<key>".
  int scalars = 0;
  for (const auto& e : fs::directory_iterator(run / "tb")) {
    const auto f = io::read_tf_events(e.path().string());
    EXPECT_FALSE(f.torn);
    for (const auto& ev2 : f.events) scalars += static_cast<int>(ev2.scalars.size());
  }
  EXPECT_EQ(scalars, (15 * 5 - 1) + 3 * 3);  // 15 numbers per train line (14 on the first), 3 per eval line

  // Checkpoints at 2, 4 and the last step; the newest two kept.
  EXPECT_EQ(io::Checkpoint::list_steps(run.string()), (std::vector<int64_t>{4, 5}));
}

TEST(TrainerRunDir, ResumeAfterAStopAtAnyStepGivesTheUninterruptedRun) {
  const int steps = 7;
  test::TempDir d;
  ToyTTTLM ref(toy_config(), 3);
  at::manual_seed(42);
  TrainConfig tc = config(steps);
  auto full = train(ref.named_parameters(), tc, [&](int s, int mi) { return noisy_loss(ref, s, mi); },
                    (d / "full").string(), ref.config_json(), {}, false);
  const auto full_lines = lines(d / "full" / "metrics.train.jsonl");

  std::mt19937 rng(std::random_device{}());
  // The step that never finishes, any of them: before the first checkpoint the resume starts over,
  // and the trainer's own seeding (the config's `seed`) makes that the uninterrupted run too.
  const int stop = static_cast<int>(rng() % steps);
  SCOPED_TRACE("stopped during step " + std::to_string(stop + 1));
  const bool after_checkpoint = stop >= tc.ckpt_freq;
  const fs::path run = d / "resumed";
  {
    ToyTTTLM m(toy_config(), 3);
    at::manual_seed(42);
    try {
      train(m.named_parameters(), tc,
            [&](int s, int mi) {
              if (s == stop) throw std::runtime_error("killed");
              return noisy_loss(m, s, mi);
            },
            run.string(), m.config_json(), {}, false);
      FAIL() << "the stop did not happen";
    } catch (const std::runtime_error&) {
    }
  }
  // A fresh process, with another RNG state. It builds the model as the first one did (as `ttt-sweep
  // train` does, from the config); once a checkpoint exists its weights must come from the run dir,
  // so there the fresh model starts from other weights.
  ToyTTTLM m(toy_config(), after_checkpoint ? 77 : 3);
  at::manual_seed(1234);
  tc.resume = true;
  auto res = train(m.named_parameters(), tc, [&](int s, int mi) { return noisy_loss(m, s, mi); }, run.string(),
                   m.config_json(), {}, false);
  const int ckpt = (stop / tc.ckpt_freq) * tc.ckpt_freq;
  EXPECT_EQ(res.resumed_from, ckpt);
  ASSERT_EQ(res.history.size(), static_cast<size_t>(steps - ckpt));
  for (size_t i = 0; i < res.history.size(); ++i)
    EXPECT_EQ(res.history[i].loss, full.history[ckpt + i].loss) << "step " << ckpt + i + 1;
  auto pa = ref.named_parameters(), pb = m.named_parameters();
  for (size_t i = 0; i < pa.size(); ++i) EXPECT_TRUE(at::equal(pa[i].second, pb[i].second)) << pa[i].first;
  // The metrics file is the uninterrupted one: no line of the lost steps twice.
  const auto got = lines(run / "metrics.train.jsonl");
  ASSERT_EQ(got.size(), full_lines.size());
  for (size_t i = 0; i < got.size(); ++i) {
    EXPECT_EQ(got[i]["step"], full_lines[i]["step"]);
    EXPECT_EQ(got[i]["loss"], full_lines[i]["loss"]);
    EXPECT_EQ(got[i]["lr"], full_lines[i]["lr"]);
    EXPECT_EQ(got[i]["ttt_gating_alpha_raw"], full_lines[i]["ttt_gating_alpha_raw"]);
  }
}

TEST(TrainerRunDir, TheConfigsSeedDecidesTheRun) {
  // The caller's RNG state does not matter: the trainer seeds every RNG from `seed`.
  auto run = [](uint64_t seed, uint64_t caller_seed) {
    ToyTTTLM m(toy_config(), 3);
    at::manual_seed(caller_seed);
    TrainConfig tc = config(3);
    tc.seed = seed;
    std::vector<double> losses;
    for (const auto& r : train(m.named_parameters(), tc, [&](int s, int mi) { return noisy_loss(m, s, mi); }, "",
                               m.config_json(), {}, false)
                             .history)
      losses.push_back(r.loss);
    return losses;
  };
  const auto a = run(5, 1), b = run(5, 999), c = run(6, 1);
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c) << "the seed must reach the loss noise";
}

TEST(TrainerRunDir, ResumeRefusesOtherSettings) {
  test::TempDir d;
  ToyTTTLM m(toy_config(), 3);
  TrainConfig tc = config(2);
  train(m.named_parameters(), tc, [&](int s, int mi) { return noisy_loss(m, s, mi); }, (d / "run").string(),
        m.config_json(), {}, false);
  tc.resume = true;
  tc.lr = 1e-3;
  tc.max_steps = 4;
  try {
    train(m.named_parameters(), tc, [&](int s, int mi) { return noisy_loss(m, s, mi); }, (d / "run").string(),
          m.config_json(), {}, false);
    FAIL() << "resumed with another schedule";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::Usage);
    EXPECT_NE(std::string(e.what()).find("training_state.safetensors"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace mtt::experiments
