// Per-row resets of the streaming state (batched serving): after resetting row i, row i's outputs
// equal a fresh run of that row alone and the other rows are unaffected, for the plain LM, the fork
// hybrid TTT layers and In-Place TTT (whose rows then sit at different places inside their
// chunks); LMGen's per-row reset follows upstream's reset_streaming(reset_mask) token for token.
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include "core/error.h"
#include "moshi/config.h"
#include "moshi/lm.h"
#include "moshi/lmgen.h"
#include "moshi_test_util.h"

namespace mtt::moshi {
namespace {

using testing::max_abs;
using testing::random_codes;

struct Case {
  const char* name;
  LMConfig cfg;
};

std::vector<Case> cases() {
  LMConfig hybrid = LMConfig::tiny();
  hybrid.ttt.enable = true;
  hybrid.ttt.layers = "middle";
  hybrid.ttt.mini_batch_size = 4;
  hybrid.ttt.initial_gating_alpha = 0.3;
  LMConfig inplace = LMConfig::tiny();
  inplace.ttt = ttt_settings_from_yaml("ttt:\n  enable: true\n  variant: inplace\n  start_layer: 1\n"
                                       "  layer_frequency: 2\n  chunk_size: 3\n  ttt_lr: 0.5\n"
                                       "  delta_clip_fro_norm: 0\n");
  return {{"plain", LMConfig::tiny()}, {"fork_hybrid", hybrid}, {"inplace", inplace}, {"sin_layernorm", LMConfig::golden_test()}};
}

at::Tensor mask_of(std::vector<int64_t> rows, int64_t B) {
  at::Tensor m = at::zeros({B}, at::kBool);
  for (auto r : rows) m[r] = true;
  return m;
}

// Streams seq [B, K, S] one step at a time, resetting rows before the listed steps; returns
// text logits [B, S, V] and hidden states [B, S, D].
std::pair<at::Tensor, at::Tensor> stream(LMModel& m, const at::Tensor& seq,
                                         const std::vector<std::pair<int64_t, at::Tensor>>& resets) {
  const int64_t B = seq.size(0), S = seq.size(2);
  LMState st = m.new_state(B);
  std::vector<at::Tensor> tl, hs;
  for (int64_t s = 0; s < S; ++s) {
    for (auto& [at_step, mask] : resets)
      if (at_step == s) st.reset(mask);
    auto [h, t] = m.forward_text(seq.narrow(2, s, 1), &st);
    tl.push_back(t.select(1, 0));
    hs.push_back(h);
  }
  return {at::cat(tl, 1), at::cat(hs, 1)};
}

TEST(MoshiReset, ResetRowEqualsFreshRunOthersUnaffected) {
  at::NoGradGuard ng;
  const int64_t B = 3, S = 17;
  // Row 1 reset at step 6 (every In-Place row at the start of a chunk: the groups merge again),
  // row 2 at step 10 (its chunk position now differs from rows 0 and 1), row 1 again at 15.
  const std::vector<std::pair<int64_t, at::Tensor>> resets = {
      {6, mask_of({1}, B)}, {10, mask_of({2}, B)}, {15, mask_of({1}, B)}};
  std::vector<int64_t> last_reset = {0, 15, 10};
  for (auto& cs : cases()) {
    SCOPED_TRACE(cs.name);
    LMModel m(cs.cfg);
    m.init_random(41);
    at::Tensor seq = random_codes(cs.cfg, B, S, 42);
    auto [text, h] = stream(m, seq, resets);
    auto [text_nr, h_nr] = stream(m, seq, {});
    // Row 0 is never reset: identical to the run without resets.
    EXPECT_LE(max_abs(text.select(0, 0), text_nr.select(0, 0)), 1e-5);
    EXPECT_LE(max_abs(h.select(0, 0), h_nr.select(0, 0)), 1e-5);
    // Rows 1 and 2 before their first reset are unaffected too.
    EXPECT_LE(max_abs(text.select(0, 1).narrow(0, 0, 6), text_nr.select(0, 1).narrow(0, 0, 6)), 1e-5);
    EXPECT_LE(max_abs(text.select(0, 2).narrow(0, 0, 10), text_nr.select(0, 2).narrow(0, 0, 10)), 1e-5);
    // After a reset a row equals a fresh run of that row alone from the reset step on.
    for (int64_t b = 0; b < B; ++b) {
      const int64_t r0 = last_reset[static_cast<size_t>(b)];
      auto [tf, hf] = stream(m, seq.narrow(0, b, 1).narrow(2, r0, S - r0), {});
      EXPECT_LE(max_abs(text.select(0, b).narrow(0, r0, S - r0), tf.select(0, 0)), 1e-5) << "row " << b;
      EXPECT_LE(max_abs(h.select(0, b).narrow(0, r0, S - r0), hf.select(0, 0)), 1e-5) << "row " << b;
    }
    // The middle segment of row 1 (steps 6..14) equals a fresh run too.
    auto [tm, hm] = stream(m, seq.narrow(0, 1, 1).narrow(2, 6, 9), {});
    EXPECT_LE(max_abs(text.select(0, 1).narrow(0, 6, 9), tm.select(0, 0)), 1e-5);
    // A reset that does not restart the row would not match: the test can fail.
    EXPECT_GT(max_abs(text.select(0, 2).narrow(0, 10, S - 10), text_nr.select(0, 2).narrow(0, 10, S - 10)), 1e-3);
  }
}

TEST(MoshiReset, BadMaskIsAUsageError) {
  LMModel m(LMConfig::tiny());
  m.init_random(1);
  LMState st = m.new_state(3);
  EXPECT_THROW(st.reset(at::zeros({2}, at::kBool)), Error);
  LMGen gen(m, SamplingOptions::greedy());
  EXPECT_THROW(gen.reset(at::zeros({3}, at::kBool)), Error);  // before reset(batch)
}

TEST(MoshiReset, LMGenResetRowEqualsFreshGeneration) {
  const LMConfig c = LMConfig::tiny();
  LMModel m(c);
  m.init_random(43);
  const int64_t B = 3, N = 14, r0 = 5, nu = c.n_q - c.dep_q;
  at::Tensor user = random_codes(c, B, N, 44).narrow(1, 1 + c.dep_q, nu).contiguous();
  LMGen gen(m, SamplingOptions::greedy());
  gen.set_support_out_of_sync(true);
  gen.reset(B);
  std::vector<at::Tensor> toks;
  for (int64_t n = 0; n < N; ++n) {
    if (n == r0) gen.reset(mask_of({1}, B));
    toks.push_back(gen.step(user.narrow(2, n, 1)).select(2, 0));
  }
  LMGen fresh(m, SamplingOptions::greedy());
  fresh.set_support_out_of_sync(true);
  fresh.reset(1);
  LMGen whole(m, SamplingOptions::greedy());
  whole.set_support_out_of_sync(true);
  whole.reset(B);
  for (int64_t n = 0; n < N; ++n) {
    at::Tensor w = whole.step(user.narrow(2, n, 1)).select(2, 0);
    EXPECT_TRUE(at::equal(toks[n].select(0, 0), w.select(0, 0))) << "row 0 changed at step " << n;
    if (n >= r0) {
      at::Tensor f = fresh.step(user.narrow(0, 1, 1).narrow(2, n, 1)).select(2, 0);
      EXPECT_TRUE(at::equal(toks[n].select(0, 1), f.select(0, 0))) << "row 1 at step " << n;
    }
  }
  // Rows still priming after their reset hold -2 (max_delay = 1 for the tiny delays).
  EXPECT_TRUE((toks[r0].select(0, 1) == -2).all().item<bool>());
  EXPECT_TRUE((toks[r0 + 1].select(0, 1) != -2).all().item<bool>());
}

// Upstream LMGen.reset_streaming(reset_mask) and LMModel.reset_streaming on the same weights.
TEST(MoshiReset, MatchesUpstreamResetStreaming) {
  MTT_REQUIRE_MOSHI_REF();
  for (const LMConfig& c : {LMConfig::tiny(), LMConfig::golden_test()}) {
    LMModel m(c);
    m.init_random(45);
    testing::RefRun run;
    testing::write_model(m, run);
    const int64_t B = 3, N = 13, nu = c.n_q - c.dep_q;
    at::Tensor reset_at = at::tensor({4L, 9L}, at::kLong);
    at::Tensor reset_mask = at::tensor({0L, 1L, 0L, 1L, 0L, 1L}, at::kLong).view({2, B});
    // Streaming forward_text with resets.
    at::Tensor seq = random_codes(c, B, N, 46);
    auto ref = testing::run_ref(run, "stream", {{"seq", seq}, {"reset_at", reset_at}, {"reset_mask", reset_mask}});
    ASSERT_FALSE(ref.empty());
    {
      at::NoGradGuard ng;
      auto [text, h] = stream(m, seq, {{4, reset_mask[0].to(at::kBool)}, {9, reset_mask[1].to(at::kBool)}});
      EXPECT_LE(max_abs(text, ref.at("text_logits").select(1, 0)), 1e-4);
      EXPECT_LE(max_abs(h, ref.at("h")), 1e-4);
    }
    // Generation, greedy and sampled, with and without support_out_of_sync.
    at::Tensor user = random_codes(c, B, N, 47).narrow(1, 1 + c.dep_q, nu).contiguous();
    // Greedy with upstream's default (None while priming), sampled with support_out_of_sync.
    for (bool greedy : {true, false}) {
      for (bool oos : {!greedy}) {
        SCOPED_TRACE(std::string(greedy ? "greedy" : "sampled") + (oos ? " out-of-sync" : ""));
        const uint64_t seed = 77;
        std::string extra = "--seed " + std::to_string(seed) + " --top-k 10 --top-k-text 5" +
                            (greedy ? " --greedy" : "") + (oos ? " --out-of-sync" : "");
        auto r = testing::run_ref(run, "generate", {{"user", user}, {"reset_at", reset_at}, {"reset_mask", reset_mask}},
                                  extra);
        ASSERT_FALSE(r.empty());
        SamplingOptions so;
        so.use_sampling = !greedy;
        so.top_k = 10;
        so.top_k_text = 5;
        LMGen gen(m, so, seed);
        gen.set_support_out_of_sync(oos);
        gen.reset(B);
        std::vector<at::Tensor> toks;
        for (int64_t n = 0; n < N; ++n) {
          if (n == 4) gen.reset(reset_mask[0].to(at::kBool));
          if (n == 9) gen.reset(reset_mask[1].to(at::kBool));
          at::Tensor t = gen.step(user.narrow(2, n, 1));
          if (!t.defined()) t = at::full({B, 1 + c.dep_q, 1}, -2, at::TensorOptions().dtype(at::kLong));
          toks.push_back(t.select(2, 0));
        }
        at::Tensor tokens = at::stack(toks, 0);
        EXPECT_TRUE(at::equal(tokens, r.at("tokens"))) << "C++:\n" << tokens << "\nupstream:\n" << r.at("tokens");
      }
    }
  }
}

}  // namespace
}  // namespace mtt::moshi
