// Fork hybrid options that reach the TTT layer through the ttt: section (moshi_ttt/config.py):
// scan_checkpoint_group_size recomputes the scan in groups (docs/ttt.md §3: memory, not values) and
// use_rope switches on the fork's audio RoPE (ttt::Rope::fork_audio).
#include "moshi_test_util.h"

namespace mtt::moshi {
namespace {

LMConfig hybrid_config(int64_t group, bool rope) {
  LMConfig c = LMConfig::tiny();
  c.ttt.enable = true;
  c.ttt.layers = "all";
  c.ttt.mini_batch_size = 4;
  c.ttt.scan_checkpoint_group_size = group;
  c.ttt.use_rope = rope;
  return c;
}

struct LossAndGrads {
  double loss = 0;
  std::map<std::string, at::Tensor> grads;
  at::Tensor logits;
};

LossAndGrads run(const LMConfig& c, const at::Tensor& codes) {
  LMModel m(c);
  m.init_random(3);
  m.set_requires_grad(true);
  LMOutput out = m.forward(codes);
  at::Tensor loss = at::nan_to_num(out.logits, 0.0).pow(2).mean() + at::nan_to_num(out.text_logits, 0.0).pow(2).mean();
  loss.backward();
  LossAndGrads r;
  r.loss = loss.item<double>();
  r.logits = out.logits.detach();
  for (auto& [n, t] : m.named_parameters())
    if (t->grad().defined()) r.grads[n] = t->grad().clone();
  return r;
}

TEST(MoshiHybridOptions, ScanCheckpointGroupsChangeMemoryNotValues) {
  const at::Tensor codes = testing::random_codes(hybrid_config(0, false), 2, 14, 9);  // 14 = 3.5 mini-batches
  LossAndGrads a = run(hybrid_config(0, false), codes), b = run(hybrid_config(2, false), codes);
  EXPECT_NEAR(a.loss, b.loss, 1e-6 * std::abs(a.loss));
  ASSERT_EQ(a.grads.size(), b.grads.size());
  int ttt_grads = 0;
  for (auto& [n, g] : a.grads) {
    ASSERT_TRUE(b.grads.count(n)) << n;
    const double scale = std::max(1e-6, g.abs().max().item<double>());
    EXPECT_LT(testing::max_abs(g, b.grads[n]) / scale, 1e-4) << n;
    if (n.find("seq_modeling_block.ttt_layer.") != std::string::npos && g.abs().max().item<double>() > 0) ++ttt_grads;
  }
  EXPECT_GT(ttt_grads, 0) << "the TTT parameters take part";
}

TEST(MoshiHybridOptions, UseRopeReachesTheTTTLayerAndRoundTrips) {
  const at::Tensor codes = testing::random_codes(hybrid_config(0, false), 1, 12, 4);
  LossAndGrads plain = run(hybrid_config(0, false), codes), rope = run(hybrid_config(0, true), codes);
  EXPECT_GT(testing::max_abs(at::nan_to_num(plain.logits, 0.0), at::nan_to_num(rope.logits, 0.0)), 1e-5);
  const LMConfig back = LMConfig::from_json(hybrid_config(3, true).to_json());
  EXPECT_TRUE(back.ttt.use_rope);
  EXPECT_EQ(back.ttt.scan_checkpoint_group_size, 3);
  const TTTSettings y = ttt_settings_from_yaml("ttt:\n  enable: true\n  use_rope: true\n  rope_theta: 500\n"
                                               "  scan_checkpoint_group_size: 16\n");
  EXPECT_TRUE(y.use_rope);
  EXPECT_EQ(y.rope_theta, 500);
  EXPECT_EQ(y.scan_checkpoint_group_size, 16);
}

}  // namespace
}  // namespace mtt::moshi
