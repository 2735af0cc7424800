// Live parity against the PyPI moshi package (MTT_REF_PYTHON venv, test dependency only) on tiny
// random configurations covering the moshiko paths (RMSNorm f32, RoPE, SiLU gating, depformer
// per-step weights with and without a schedule, low-rank embeddings, delays, ring KV wrap), plus
// the upstream-default paths (LayerNorm, sinusoidal embeddings, GELU FFN).
// Reference script: tests/moshi/ref/moshi_ref.py.
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <ATen/CPUGeneratorImpl.h>
#include <filesystem>
#include <fstream>

#include "core/error.h"
#include "moshi/config.h"
#include "moshi/lm.h"
#include "moshi/lmgen.h"
#include "nn/tensor_io.h"
#include "moshi_test_util.h"
#include "test_util.h"

namespace mtt::moshi {
namespace {

namespace fs = std::filesystem;

using testing::RefRun;
using testing::run_ref;
using testing::write_model;
#define REQUIRE_REF() MTT_REQUIRE_MOSHI_REF()

at::Tensor random_codes(const LMConfig& c, int64_t B, int64_t T, uint64_t seed, bool with_zero_tokens) {
  at::Generator g = at::make_generator<at::CPUGeneratorImpl>(seed);
  at::Tensor codes = at::empty({B, c.num_codebooks(), T}, at::TensorOptions().dtype(at::kLong));
  codes.select(1, 0).random_(0, c.text_card, g);
  codes.narrow(1, 1, c.n_q).random_(0, c.card, g);
  if (with_zero_tokens) {
    codes.select(0, 0).select(1, T - 1).fill_(-1);  // zero_token_id: masked out, zero embedding
    codes.select(0, B - 1).select(0, 2).select(0, 1).fill_(-1);
  }
  return codes;
}

LMConfig tiny_schedule() {
  LMConfig c = LMConfig::tiny(8);
  c.depformer_weights_per_step_schedule = {0, 1, 1};
  return c;
}

LMConfig tiny_defaults_paths() {
  // LayerNorm, sinusoidal embeddings in both transformers, plain GELU FFN in the main one.
  LMConfig c = LMConfig::golden_test();
  c.num_heads = 2;
  c.depformer_num_heads = 2;
  c.dim = 32;
  c.hidden_scale = 2;
  return c;
}

struct Case {
  const char* name;
  LMConfig cfg;
};

std::vector<Case> cases() {
  return {{"tiny", LMConfig::tiny()}, {"tiny_lowrank_schedule", tiny_schedule()}, {"defaults_paths", tiny_defaults_paths()}};
}

TEST(MoshiParity, FullForwardLogitsMatchUpstream) {
  REQUIRE_REF();
  for (auto& cs : cases()) {
    SCOPED_TRACE(cs.name);
    LMModel m(cs.cfg);
    m.init_random(11);
    RefRun run;
    write_model(m, run);
    at::Tensor codes = random_codes(cs.cfg, 2, 10, 5, true);
    auto ref = run_ref(run, "forward", {{"codes", codes}});
    ASSERT_FALSE(ref.empty());
    at::NoGradGuard ng;
    LMOutput out = m.forward(codes);
    EXPECT_TRUE(at::equal(out.mask, ref.at("mask")));
    EXPECT_TRUE(at::equal(out.text_mask, ref.at("text_mask")));
    at::Tensor mk = out.mask.unsqueeze(-1).expand_as(out.logits);
    double d = (out.logits.index({mk}) - ref.at("logits").index({mk})).abs().max().item<double>();
    EXPECT_LE(d, 1e-4) << "audio logits max diff";
    at::Tensor tk = out.text_mask.unsqueeze(-1).expand_as(out.text_logits);
    double dt = (out.text_logits.index({tk}) - ref.at("text_logits").index({tk})).abs().max().item<double>();
    EXPECT_LE(dt, 1e-4) << "text logits max diff";
  }
}

TEST(MoshiParity, StreamingForwardTextMatchesUpstreamAndFullSequence) {
  REQUIRE_REF();
  for (auto& cs : cases()) {
    SCOPED_TRACE(cs.name);
    LMModel m(cs.cfg);
    m.init_random(12);
    RefRun run;
    write_model(m, run);
    const int64_t S = 11;  // > context 4: the ring wraps
    at::Tensor seq = random_codes(cs.cfg, 2, S, 6, false);
    auto ref = run_ref(run, "stream", {{"seq", seq}});
    ASSERT_FALSE(ref.empty());
    at::NoGradGuard ng;
    LMState st = m.new_state(2);
    std::vector<at::Tensor> tl, hs;
    for (int64_t s = 0; s < S; ++s) {
      auto [h, t] = m.forward_text(seq.narrow(2, s, 1), &st);
      tl.push_back(t);
      hs.push_back(h);
    }
    at::Tensor text = at::cat(tl, 2), h = at::cat(hs, 1);
    EXPECT_LE((text - ref.at("text_logits")).abs().max().item<double>(), 1e-4);
    EXPECT_LE((h - ref.at("h")).abs().max().item<double>(), 1e-4);
    // T = 1 streaming through the ring equals the full-sequence pass with the context mask (§2.6).
    auto [hf, tf] = m.forward_text(seq, nullptr);
    EXPECT_LE((tf - text).abs().max().item<double>(), 1e-5);
  }
}

void generation_parity(bool greedy, uint64_t seed) {
  for (auto& cs : cases()) {
    SCOPED_TRACE(cs.name);
    LMModel m(cs.cfg);
    m.init_random(13);
    RefRun run;
    write_model(m, run);
    const int64_t B = 2, N = 12;  // 12 steps > KV capacity 4
    const int64_t nu = cs.cfg.n_q - cs.cfg.dep_q;
    at::Tensor user = random_codes(cs.cfg, B, N, 7, false).narrow(1, 1 + cs.cfg.dep_q, nu).contiguous();
    SamplingOptions so;
    so.use_sampling = !greedy;
    so.temp = 0.8;
    so.temp_text = 0.7;
    so.top_k = 10;
    so.top_k_text = 5;
    std::string extra = "--seed " + std::to_string(seed) + " --top-k 10 --top-k-text 5" + (greedy ? " --greedy" : "");
    auto ref = run_ref(run, "generate", {{"user", user}}, extra);
    ASSERT_FALSE(ref.empty());
    LMGen gen(m, so, seed);
    gen.reset(B);
    std::vector<at::Tensor> toks, tls;
    for (int64_t n = 0; n < N; ++n) {
      at::Tensor r = gen.step(user.narrow(2, n, 1));
      if (!r.defined()) r = at::full({B, 1 + cs.cfg.dep_q, 1}, -2, at::TensorOptions().dtype(at::kLong));
      toks.push_back(r.select(2, 0));
      tls.push_back(gen.last_text_logits());
    }
    at::Tensor tokens = at::stack(toks, 0);
    EXPECT_TRUE(at::equal(tokens, ref.at("tokens"))) << "C++:\n" << tokens << "\nupstream:\n" << ref.at("tokens");
    EXPECT_LE((at::stack(tls, 0) - ref.at("text_logits")).abs().max().item<double>(), 1e-4);
  }
}

TEST(MoshiParity, GreedyGenerationMatchesUpstreamLMGen) {
  REQUIRE_REF();
  generation_parity(true, 0);
}

TEST(MoshiParity, SampledGenerationWithSameSeedMatchesUpstreamLMGen) {
  REQUIRE_REF();
  generation_parity(false, 1234);
}

TEST(MoshiSampling, TopKDistributionMatchesSoftmax) {
  // Mathematical check of sample_token independent of upstream: with temp t and top-k, token i
  // is drawn with probability softmax(l/t)_i / sum_topk (exponential race), never outside top-k.
  at::Tensor logits = at::tensor({2.0f, 1.0f, 0.5f, 0.0f, -1.0f, -3.0f}).view({1, 6});
  const double temp = 0.8;
  const int64_t k = 4, n = 40000;
  at::Generator g = at::make_generator<at::CPUGeneratorImpl>(7);
  std::vector<int64_t> counts(6, 0);
  at::Tensor rows = logits.expand({n, 6}).contiguous();
  at::Tensor s = sample_token(rows, true, temp, k, g);
  for (int64_t i = 0; i < n; ++i) counts[static_cast<size_t>(s[i].item<int64_t>())]++;
  at::Tensor p = at::softmax(logits / temp, -1)[0];
  double z = p.narrow(0, 0, k).sum().item<double>();
  for (int64_t i = 0; i < 6; ++i) {
    double expect = i < k ? p[i].item<double>() / z : 0.0;
    double got = static_cast<double>(counts[static_cast<size_t>(i)]) / n;
    double sd = std::sqrt(expect * (1 - expect) / n);
    EXPECT_NEAR(got, expect, 5 * sd + 1e-12) << "token " << i;
  }
  // Greedy = argmax; temp <= 0 also greedy.
  EXPECT_EQ(sample_token(logits, false, temp, k, g).item<int64_t>(), 0);
  EXPECT_EQ(sample_token(logits, true, 0.0, k, g).item<int64_t>(), 0);
}

}  // namespace
}  // namespace mtt::moshi
