// Exec masks (upstream StreamingModule.set_exec_mask): a row whose mask is false takes part in a
// step but its state does not move, so its later outputs equal a run in which the paused steps
// never happened; for the plain LM, fork hybrid TTT and In-Place TTT, and token for token against
// the PyPI moshi package's LMGen.
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include "moshi/config.h"
#include "moshi/lm.h"
#include "moshi/lmgen.h"
#include "moshi_test_util.h"

namespace mtt::moshi {
namespace {

using testing::max_abs;
using testing::random_codes;

std::vector<std::pair<const char*, LMConfig>> cases() {
  LMConfig hybrid = LMConfig::tiny();
  hybrid.ttt.enable = true;
  hybrid.ttt.layers = "middle";
  hybrid.ttt.mini_batch_size = 4;
  LMConfig inplace = LMConfig::tiny();
  inplace.ttt = ttt_settings_from_yaml("ttt:\n  enable: true\n  variant: inplace\n  start_layer: 1\n"
                                       "  layer_frequency: 2\n  chunk_size: 3\n  ttt_lr: 0.5\n"
                                       "  delta_clip_fro_norm: 0\n");
  return {{"plain", LMConfig::tiny()}, {"fork_hybrid", hybrid}, {"inplace", inplace}};
}

// exec[s][b]: row b executes at step s.
std::vector<std::vector<bool>> pattern(int64_t S) {
  std::vector<std::vector<bool>> e(static_cast<size_t>(S), std::vector<bool>{true, true, true});
  for (int64_t s : {3, 4, 8}) e[static_cast<size_t>(s)][1] = false;
  for (int64_t s : {5, 6, 7}) e[static_cast<size_t>(s)][2] = false;
  return e;
}

at::Tensor to_mask(const std::vector<bool>& v) {
  at::Tensor m = at::zeros({static_cast<int64_t>(v.size())}, at::kBool);
  for (size_t i = 0; i < v.size(); ++i) m[static_cast<int64_t>(i)] = static_cast<bool>(v[i]);
  return m;
}

TEST(MoshiExecMask, PausedStepsLeaveTheRowStateUntouched) {
  at::NoGradGuard ng;
  const int64_t B = 3, S = 14;
  auto ex = pattern(S);
  for (auto& [name, c] : cases()) {
    SCOPED_TRACE(name);
    LMModel m(c);
    m.init_random(61);
    at::Tensor seq = random_codes(c, B, S, 62);
    LMState st = m.new_state(B);
    std::vector<at::Tensor> tl;
    for (int64_t s = 0; s < S; ++s) {
      st.set_exec_mask(to_mask(ex[static_cast<size_t>(s)]));
      tl.push_back(m.forward_text(seq.narrow(2, s, 1), &st).second.select(1, 0));
    }
    at::Tensor text = at::cat(tl, 1);  // [B, S, V]
    for (int64_t b = 0; b < B; ++b) {
      // The row's executed steps, streamed alone.
      std::vector<int64_t> steps;
      for (int64_t s = 0; s < S; ++s)
        if (ex[static_cast<size_t>(s)][static_cast<size_t>(b)]) steps.push_back(s);
      at::Tensor idx = at::tensor(steps, at::kLong);
      at::Tensor own = seq.narrow(0, b, 1).index_select(2, idx);
      LMState one = m.new_state(1);
      std::vector<at::Tensor> ol;
      for (int64_t i = 0; i < own.size(2); ++i) ol.push_back(m.forward_text(own.narrow(2, i, 1), &one).second.select(1, 0));
      EXPECT_LE(max_abs(text.select(0, b).index_select(0, idx), at::cat(ol, 1).select(0, 0)), 1e-5) << "row " << b;
    }
    EXPECT_EQ(st.transformer.offsets, (std::vector<int64_t>{S, S - 3, S - 3}));
  }
}

TEST(MoshiExecMask, MatchesUpstreamSetExecMask) {
  MTT_REQUIRE_MOSHI_REF();
  const LMConfig c = LMConfig::tiny();
  LMModel m(c);
  m.init_random(63);
  testing::RefRun run;
  testing::write_model(m, run);
  const int64_t B = 3, N = 14, nu = c.n_q - c.dep_q;
  auto ex = pattern(N);
  at::Tensor exec = at::zeros({N, B}, at::kLong);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t b = 0; b < B; ++b) exec[n][b] = ex[static_cast<size_t>(n)][static_cast<size_t>(b)] ? 1 : 0;
  // A reset of row 2 at step 10 as well (it makes the row execute again, State.reset).
  at::Tensor reset_at = at::tensor({10L}, at::kLong);
  at::Tensor reset_mask = at::tensor({0L, 0L, 1L}, at::kLong).view({1, B});
  at::Tensor seq = random_codes(c, B, N, 64);
  auto ref = testing::run_ref(run, "stream",
                              {{"seq", seq}, {"exec_mask", exec}, {"reset_at", reset_at}, {"reset_mask", reset_mask}});
  ASSERT_FALSE(ref.empty());
  {
    at::NoGradGuard ng;
    LMState st = m.new_state(B);
    std::vector<at::Tensor> tl;
    for (int64_t n = 0; n < N; ++n) {
      if (n == 10) st.reset(reset_mask[0].to(at::kBool));
      st.set_exec_mask(exec[n].to(at::kBool));
      tl.push_back(m.forward_text(seq.narrow(2, n, 1), &st).second.select(1, 0));
    }
    EXPECT_LE(max_abs(at::cat(tl, 1), ref.at("text_logits").select(1, 0)), 1e-4);
  }
  at::Tensor user = random_codes(c, B, N, 65).narrow(1, 1 + c.dep_q, nu).contiguous();
  auto r = testing::run_ref(run, "generate",
                            {{"user", user}, {"exec_mask", exec}, {"reset_at", reset_at}, {"reset_mask", reset_mask}},
                            "--seed 5 --top-k 10 --top-k-text 5 --out-of-sync");
  ASSERT_FALSE(r.empty());
  SamplingOptions so;
  so.top_k = 10;
  so.top_k_text = 5;
  LMGen gen(m, so, 5);
  gen.set_support_out_of_sync(true);
  gen.reset(B);
  std::vector<at::Tensor> toks;
  for (int64_t n = 0; n < N; ++n) {
    if (n == 10) gen.reset(reset_mask[0].to(at::kBool));
    gen.set_exec_mask(exec[n].to(at::kBool));
    toks.push_back(gen.step(user.narrow(2, n, 1)).select(2, 0));
  }
  at::Tensor tokens = at::stack(toks, 0);
  EXPECT_TRUE(at::equal(tokens, r.at("tokens"))) << "C++:\n" << tokens << "\nupstream:\n" << r.at("tokens");
}

}  // namespace
}  // namespace mtt::moshi
