// The fork-exact variants reach the LM's hybrid layers (ttt.multilayer_query, ttt.streaming_state;
// the numerics themselves are checked against the fork in tests/ttt/fork_numerics_test.cpp): the
// streamed LM with fork_restart keeps every TTT state at W0 and differs from the persistent
// stream; the fork's query pass changes a 3-layer model's logits and nothing at 2 layers.
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include "moshi/hybrid.h"
#include "moshi/lm.h"
#include "moshi_test_util.h"

namespace mtt::moshi {
namespace {

LMConfig tiny_hybrid(int64_t mlp_layers) {
  LMConfig c = LMConfig::tiny();
  c.ttt.enable = true;
  c.ttt.layers = "middle";
  c.ttt.mini_batch_size = 4;
  c.ttt.initial_gating_alpha = 0.5;
  c.ttt.ttt_mlp_layers = mlp_layers;
  return c;
}

// Text logits of a teacher-forced stream, one frame per call.
at::Tensor stream_text(LMModel& m, const at::Tensor& seq, LMState* keep = nullptr) {
  at::NoGradGuard ng;
  LMState st = m.new_state(seq.size(0));
  std::vector<at::Tensor> tl;
  for (int64_t s = 0; s < seq.size(2); ++s) tl.push_back(m.forward_text(seq.narrow(2, s, 1), &st).second);
  if (keep) *keep = std::move(st);
  return at::cat(tl, 2);
}

TEST(MoshiForkNumerics, ForkRestartStreamingNeverMovesTheTTTState) {
  LMConfig c = tiny_hybrid(2);
  LMConfig cr = c;
  cr.ttt.streaming_state = ttt::StreamingState::fork_restart;
  LMModel persistent(c), restart(cr);
  persistent.init_random(3);
  restart.init_random(3);
  at::Tensor seq = delayed_with_initial(c, testing::random_codes(c, 2, 9, 1)).narrow(2, 0, 9);
  LMState st;
  at::Tensor a = stream_text(persistent, seq), b = stream_text(restart, seq, &st);
  for (int l : {1, 2}) {
    auto& hb = *restart.transformer().layers()[static_cast<size_t>(l)].hybrid;
    const auto& s = st.transformer.ttt[static_cast<size_t>(l)]->ttt;
    EXPECT_TRUE(at::equal(s.weights[0].select(0, 1), hb.ttt_layer().inner_weights()[0])) << l;
    EXPECT_EQ(s.position[0], 0);
  }
  // The first frame is the same call either way; later frames see a carried state in one of them.
  EXPECT_TRUE(at::allclose(a.narrow(2, 0, 1), b.narrow(2, 0, 1), 1e-6, 1e-6));
  EXPECT_GT(testing::max_abs(a, b), 1e-4);
}

TEST(MoshiForkNumerics, MultiLayerQueryReachesTheHybridLayers) {
  for (int64_t n : {2, 3}) {
    LMConfig c = tiny_hybrid(n), cf = c;
    cf.ttt.multilayer_query = ttt::MultiLayerQuery::fork_updated;
    LMModel dual(c), fork(cf);
    dual.init_random(4);
    fork.init_random(4);
    EXPECT_EQ(fork.transformer().layers()[1].hybrid->ttt_layer().config().multilayer_query,
              ttt::MultiLayerQuery::fork_updated);
    at::Tensor codes = testing::random_codes(c, 2, 10, 2);
    at::NoGradGuard ng;
    const double d = testing::max_abs(dual.forward(codes).text_logits, fork.forward(codes).text_logits);
    if (n == 2) EXPECT_EQ(d, 0.0);  // the fork's 2-layer op is the dual form
    else EXPECT_GT(d, 1e-5);
  }
}

}  // namespace
}  // namespace mtt::moshi
