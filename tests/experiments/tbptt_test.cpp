// Truncated BPTT: one chunk is the plain trainer step; several chunks carry the forward state
// exactly (the loss equals the full-sequence loss) while no gradient crosses a chunk boundary;
// the scan's checkpoint groups change neither loss nor gradients (float64); the Moshi LM loss
// over chunks equals moshi-finetune's loss on LMModel::forward, and that loss (moshi_output_loss) equals
// the forks' own compute_loss_with_mask on their committed logits and codes.
#include "experiments/tbptt.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include <c10/core/GradMode.h>

#include "experiments/chunked_loss.h"
#include "experiments/synthetic_data.h"
#include "experiments/toy_lm.h"
#include "moshi/hybrid.h"
#include "moshi/lm.h"
#include "nn/tensor_io.h"
#include "test_util.h"

namespace mtt::experiments {
namespace {

double max_abs(const at::Tensor& a) { return a.defined() ? a.abs().max().item<double>() : 0.0; }

ToyLMConfig toy_config() {
  ToyLMConfig c;
  c.vocab = 16;
  c.ttt = ttt::TTTConfig::moshi(16, 2, 4);
  return c;
}

TEST(Tbptt, ChunkSpans) {
  using V = std::vector<std::pair<int64_t, int64_t>>;
  EXPECT_EQ(chunk_spans(10, 4), (V{{0, 4}, {4, 4}, {8, 2}}));
  EXPECT_EQ(chunk_spans(8, 4), (V{{0, 4}, {4, 4}}));
  EXPECT_EQ(chunk_spans(8, 0), (V{{0, 8}}));
  EXPECT_EQ(chunk_spans(8, 9), (V{{0, 8}}));
  EXPECT_TRUE(chunk_spans(0, 4).empty());
}

TEST(Tbptt, OneChunkIsThePlainTrainerStep) {
  TrainConfig tc;
  tc.max_steps = 3;
  tc.num_microbatches = 2;
  tc.lr = 3e-3;
  tc.pct_start = 0.3;
  auto batch = [](int step, int micro) { return make_permutation_chain_batch(2, 16, 16, 0.9, 100 + 7 * step + micro); };
  ToyTTTLM a(toy_config(), 5), b(toy_config(), 5);
  auto ra = train(a.named_parameters(), tc, [&](int s, int m) { at::Tensor t = batch(s, m); return StepLoss{a.lm_loss(t, nullptr), t.numel()}; },
                  "", {}, {}, false);
  tc.tbptt_chunk = 16;  // = the sequence
  auto rb = train_tbptt(b.named_parameters(), tc,
                        [&](int s, int m) { return toy_lm_sequence(b, batch(s, m), std::make_shared<ttt::TTTState>()); },
                        "", {}, {}, false);
  ASSERT_EQ(ra.history.size(), rb.history.size());
  for (size_t i = 0; i < ra.history.size(); ++i) {
    EXPECT_EQ(ra.history[i].loss, rb.history[i].loss) << "step " << i;
    EXPECT_EQ(ra.history[i].grad_norm, rb.history[i].grad_norm) << "step " << i;
  }
  auto pa = a.named_parameters(), pb = b.named_parameters();
  for (size_t i = 0; i < pa.size(); ++i) EXPECT_TRUE(at::equal(pa[i].second, pb[i].second)) << pa[i].first;
}

TEST(Tbptt, ChunksCarryTheStateButNotTheGradient) {
  ToyTTTLM m(toy_config(), 9);
  at::Tensor tokens = make_permutation_chain_batch(2, 16, 16, 0.9, 3);
  auto grads = [&](int64_t chunk, double* loss) {
    for (auto& [n, p] : m.named_parameters()) p.mutable_grad() = at::Tensor();
    *loss = backward_in_chunks(toy_lm_sequence(m, tokens, std::make_shared<ttt::TTTState>()), chunk, 1.0).loss;
    std::vector<at::Tensor> g;
    for (auto& [n, p] : m.named_parameters()) g.push_back(p.grad().defined() ? p.grad().clone() : at::zeros_like(p));
    return g;
  };
  double full_loss = 0, tbptt_loss = 0;
  auto gf = grads(0, &full_loss), gt = grads(4, &tbptt_loss);
  // The forward state carries exactly (chunks are whole mini-batches): same loss value.
  EXPECT_NEAR(tbptt_loss, full_loss, 1e-5 * std::abs(full_loss));
  // The gradient is truncated: the W0 gradient differs from full BPTT.
  double diff = 0;
  for (size_t i = 0; i < gf.size(); ++i) diff = std::max(diff, max_abs(gf[i] - gt[i]));
  EXPECT_GT(diff, 1e-6);
}

// The TTT layer alone, in float64: the first chunk's inputs get no gradient from the second
// chunk's loss; the second chunk's output is the full-sequence output, not the reset one.
TEST(Tbptt, NoGradientCrossesAChunkBoundary) {
  ttt::TTTConfig c = ttt::TTTConfig::moshi(16, 2, 2);
  ttt::TTTLayer layer(c, 4);
  layer.to(at::kDouble);
  {
    c10::NoGradGuard ng;
    at::manual_seed(1);
    for (auto& [n, p] : layer.named_parameters()) p.add_(at::randn_like(p) * 0.05);
  }
  at::manual_seed(2);
  const int64_t L = 8, C = 4;
  at::Tensor x = at::randn({2, L, 16}, at::kDouble).requires_grad_(true);
  at::Tensor w = at::randn({2, L, 16}, at::kDouble);
  w.narrow(1, 0, C).zero_();  // only the second chunk has a loss
  auto run = [&](int64_t chunk) {
    x.mutable_grad() = at::Tensor();
    auto st = std::make_shared<ttt::TTTState>();
    ChunkedSequence seq;
    seq.length = L;
    seq.chunk_loss = [&](int64_t s, int64_t n) {
      at::Tensor y = layer.forward(x.narrow(1, s, n), st.get());
      return StepLoss{(y * w.narrow(1, s, n)).sum(), n};
    };
    seq.detach_state = [st] { st->detach_(); };
    return backward_in_chunks(seq, chunk, 1.0).loss;
  };
  const double full = run(0);
  const double g_full = max_abs(x.grad().narrow(1, 0, C));
  const double tbptt = run(C);
  EXPECT_GT(g_full, 1e-6);                                // full BPTT reaches chunk 1 through the state
  EXPECT_EQ(max_abs(x.grad().narrow(1, 0, C)), 0.0);     // TBPTT does not
  EXPECT_GT(max_abs(x.grad().narrow(1, C, C)), 1e-6);
  EXPECT_NEAR(tbptt, full, 1e-10 * std::abs(full));       // same forward
  // A reset before chunk 2 changes its output: the state does carry.
  c10::NoGradGuard ng;
  at::Tensor reset = layer.forward(x.narrow(1, C, C), nullptr);
  at::Tensor whole = layer.forward(x, nullptr).narrow(1, C, C);
  EXPECT_GT(max_abs(reset - whole), 1e-6);
}

TEST(Tbptt, CheckpointGroupKeepsLossAndGradientsFloat64) {
  ttt::TTTConfig c = ttt::TTTConfig::moshi(16, 2, 2);
  ttt::TTTLayer layer(c, 6);
  layer.to(at::kDouble);
  {
    c10::NoGradGuard ng;
    at::manual_seed(3);
    for (auto& [n, p] : layer.named_parameters()) p.add_(at::randn_like(p) * 0.05);
  }
  at::manual_seed(4);
  at::Tensor x = at::randn({2, 16, 16}, at::kDouble).requires_grad_(true);
  auto run = [&](int64_t group, std::vector<at::Tensor>& g) {
    for (auto& [n, p] : layer.named_parameters()) p.mutable_grad() = at::Tensor();
    x.mutable_grad() = at::Tensor();
    ttt::Options o;
    o.checkpoint_group_override = group;
    auto st = std::make_shared<ttt::TTTState>();
    ChunkedSequence seq;
    seq.length = 16;
    seq.chunk_loss = [&, o](int64_t s, int64_t n) {
      at::Tensor y = layer.forward(x.narrow(1, s, n), st.get(), o);
      return StepLoss{(y * at::cos(y)).sum(), n};
    };
    seq.detach_state = [st] { st->detach_(); };
    const double loss = backward_in_chunks(seq, 8, 1.0).loss;  // 2 chunks of 4 mini-batches
    for (auto& [n, p] : layer.named_parameters()) g.push_back(p.grad().clone());
    g.push_back(x.grad().clone());
    return loss;
  };
  std::vector<at::Tensor> g0, g2, g3;
  const double l0 = run(0, g0), l2 = run(2, g2), l3 = run(3, g3);
  EXPECT_NEAR(l2, l0, 1e-12 * std::abs(l0));
  EXPECT_NEAR(l3, l0, 1e-12 * std::abs(l0));
  for (size_t i = 0; i < g0.size(); ++i) {
    const double scale = std::max(1.0, max_abs(g0[i]));
    EXPECT_LE(max_abs(g2[i] - g0[i]), 1e-12 * scale) << "tensor " << i;
    EXPECT_LE(max_abs(g3[i] - g0[i]), 1e-12 * scale) << "tensor " << i;
  }
}

moshi::LMConfig tiny_ttt_lm() {
  moshi::LMConfig c = moshi::LMConfig::tiny();
  c.ttt.enable = true;
  c.ttt.layers = "all";
  c.ttt.mini_batch_size = 2;
  return c;
}

at::Tensor tiny_codes(const moshi::LMConfig& c, int64_t B, int64_t T, uint64_t seed) {
  at::manual_seed(seed);
  at::Tensor codes = at::randint(0, c.card, {B, c.num_codebooks(), T}, at::kLong);
  codes.select(1, 0).copy_(at::randint(0, c.text_card, {B, T}, at::kLong));
  codes.select(1, 0).narrow(1, 0, 3).fill_(c.existing_text_padding_id);  // weighted text padding
  if (B > 1) codes.select(0, 1).narrow(1, T - 2, 2).fill_(-1);           // a padded tail: no target
  return codes;
}

TEST(Tbptt, MoshiChunkedLossEqualsFinetuneLossOnLMForward) {
  moshi::LMModel lm(tiny_ttt_lm());
  lm.init_random(11);
  lm.set_requires_grad(true);
  const moshi::LMConfig& c = lm.config();
  at::Tensor codes = tiny_codes(c, 2, 12, 12);
  MoshiLossOptions lo;
  lo.first_codebook_weight_multiplier = 3.0;
  lo.text_padding_weight = 0.5;
  // Reference: LMModel::forward (undelayed logits) + compute_loss_with_mask, full BPTT.
  auto params = lm.named_parameters();
  auto zero = [&] { for (auto& [n, p] : params) p->mutable_grad() = at::Tensor(); };
  auto grads = [&] {
    std::vector<at::Tensor> g;
    for (auto& [n, p] : params) g.push_back(p->grad().defined() ? p->grad().clone() : at::zeros_like(*p));
    return g;
  };
  zero();
  MoshiLoss ref = moshi_lm_loss(lm, codes, lo);
  ref.total().backward();
  const double ref_loss = ref.total().item<double>();
  auto g_ref = grads();
  // Chunked, one chunk (context 4 < 12: the widened KV ring keeps every query's window).
  zero();
  const double one = backward_in_chunks(moshi_lm_sequence(lm, codes, moshi_tbptt_state(lm, 2, 12), lo), 12, 1.0).loss;
  auto g_one = grads();
  EXPECT_NEAR(one, ref_loss, 1e-5 * ref_loss);
  double worst = 0;
  for (size_t i = 0; i < g_ref.size(); ++i)
    worst = std::max(worst, max_abs(g_one[i] - g_ref[i]) / std::max(1e-3, max_abs(g_ref[i])));
  EXPECT_LT(worst, 1e-3);
  // Three chunks of 4 frames (whole TTT mini-batches): same loss, truncated gradients.
  zero();
  auto st = moshi_tbptt_state(lm, 2, 4);
  const double three = backward_in_chunks(moshi_lm_sequence(lm, codes, st, lo), 4, 1.0).loss;
  auto g_three = grads();
  EXPECT_NEAR(three, ref_loss, 1e-5 * ref_loss);
  double diff = 0;
  for (size_t i = 0; i < g_ref.size(); ++i) diff = std::max(diff, max_abs(g_three[i] - g_ref[i]));
  EXPECT_GT(diff, 1e-5);
  // After the run the carried state holds values but no graph.
  for (const auto& kv : st->transformer.kv) EXPECT_FALSE(kv.keys.requires_grad());
  for (const auto& t : st->transformer.ttt) {
    ASSERT_TRUE(t);
    for (const auto& wt : t->ttt.weights) EXPECT_FALSE(wt.requires_grad());
  }
}

// Our loss against moshi-finetune's own: the forks' finetune/loss.py compute_loss_with_mask, run by
// their generators (tests/ref/fork, tests/ref/inplace) on LMModel.forward's outputs as train.py
// calls it, committed in tests/data/{fork_runs,inplace_runs}/*/ref.safetensors. On the same logits
// and codes, our weights must be theirs exactly and our cross-entropies and losses theirs to
// float32 rounding.
std::string read_text(const std::filesystem::path& p) {
  std::ifstream f(p);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

TEST(Tbptt, MoshiLossEqualsTheForksComputeLossWithMask) {
  c10::NoGradGuard ng;
  int cases = 0;
  for (const char* family : {"fork_runs", "inplace_runs"}) {
    const auto root = test::source_dir() / "tests" / "data" / family;
    const moshi::LMConfig c = moshi::LMConfig::from_json_file((root / "base" / "config.json").string());
    for (const auto& e : std::filesystem::directory_iterator(root)) {
      if (!std::filesystem::is_regular_file(e.path() / "ref.safetensors")) continue;
      SCOPED_TRACE(e.path().string());
      ++cases;
      // The loss weights the run trained with (its args.yaml, as train.py passes them).
      const std::string args = read_text(e.path() / "run" / "args.yaml");
      ASSERT_NE(args.find("text_padding_weight: 0.5\n"), std::string::npos);
      ASSERT_NE(args.find("first_codebook_weight_multiplier: 1.0\n"), std::string::npos);
      MoshiLossOptions lo;
      lo.text_padding_weight = 0.5;
      lo.first_codebook_weight_multiplier = 1.0;
      auto ref = nn::load_tensors((e.path() / "ref.safetensors").string());
      moshi::LMOutput out{ref.at("logits"), ref.at("mask").to(at::kBool), ref.at("text_logits"),
                          ref.at("text_mask").to(at::kBool)};
      const MoshiLossTerms t = moshi_output_loss(c, out, ref.at("codes"), lo);
      const double lt = ref.at("loss.text").item<double>(), la = ref.at("loss.audio").item<double>();
      EXPECT_NEAR(t.loss.text.item<double>(), lt, 2e-6 * lt);
      EXPECT_NEAR(t.loss.audio.item<double>(), la, 2e-6 * la);
      if (!ref.count("loss.text_weight")) continue;  // the In-Place generator keeps only the scalars
      EXPECT_TRUE(at::equal(t.text_w, ref.at("loss.text_weight")));
      EXPECT_TRUE(at::equal(t.audio_w, ref.at("loss.audio_weight")));
      // Both weights have padding (x0.5) and masked (0) positions, so the weighting is exercised.
      EXPECT_GT((ref.at("loss.text_weight") == 0.5).sum().item<int64_t>(), 0);
      EXPECT_GT((ref.at("loss.audio_weight") == 0).sum().item<int64_t>(), 0);
      EXPECT_LE(max_abs(t.text_ce - ref.at("loss.text_ce")), 1e-5);
      EXPECT_LE(max_abs(t.audio_ce - ref.at("loss.audio_ce")), 1e-5);
      EXPECT_NEAR((t.loss.text + t.loss.audio).item<double>(), ref.at("loss.total").item<double>(),
                  2e-6 * ref.at("loss.total").item<double>());
    }
  }
  EXPECT_EQ(cases, 9);  // five fork runs, four In-Place runs
}

// The same on tests/data/score_ref (PyPI moshi's LMModel.forward, compute_loss_with_mask as copied
// into tests/ref/score/gen_score_ref.py): the one reference with the first codebook weighted x2.
TEST(Tbptt, MoshiLossEqualsComputeLossWithMaskWithAWeightedFirstCodebook) {
  c10::NoGradGuard ng;
  const auto dir = test::source_dir() / "tests" / "data" / "score_ref";
  const moshi::LMConfig c = moshi::LMConfig::from_json_file((dir / "config.json").string());
  auto ref = nn::load_tensors((dir / "ref.safetensors").string());
  const at::Tensor codes = nn::load_tensors((dir / "codes.safetensors").string()).at("codes");
  MoshiLossOptions lo;
  lo.text_padding_weight = 0.5;               // the generator's metadata
  lo.first_codebook_weight_multiplier = 2.0;  // idem
  moshi::LMOutput out{ref.at("logits"), ref.at("mask").to(at::kBool), ref.at("text_logits"),
                      ref.at("text_mask").to(at::kBool)};
  const MoshiLossTerms t = moshi_output_loss(c, out, codes, lo);
  const double lt = ref.at("loss.text").item<double>(), la = ref.at("loss.audio").item<double>();
  EXPECT_NEAR(t.loss.text.item<double>(), lt, 2e-6 * lt);
  EXPECT_NEAR(t.loss.audio.item<double>(), la, 2e-6 * la);
  EXPECT_TRUE(at::equal(t.text_w.select(1, 0), ref.at("text_weight")));
  // With codebook 0 at x1 the audio loss is another number: the multiplier is in effect.
  lo.first_codebook_weight_multiplier = 1.0;
  EXPECT_GT(std::abs(moshi_output_loss(c, out, codes, lo).loss.audio.item<double>() - la), 1e-4 * la);
}

TEST(Tbptt, MoshiStateCarriesAcrossChunks) {
  c10::NoGradGuard ng;
  moshi::LMModel lm(tiny_ttt_lm());
  lm.init_random(13);
  at::Tensor codes = tiny_codes(lm.config(), 1, 8, 14);
  // Chunk 2's share with the state carried from chunk 1, vs from a fresh state.
  auto carried = moshi_lm_sequence(lm, codes, moshi_tbptt_state(lm, 1, 4));
  carried.chunk_loss(0, 4);
  const double with_state = carried.chunk_loss(4, 4).loss.item<double>();
  auto fresh = moshi_lm_sequence(lm, codes, moshi_tbptt_state(lm, 1, 4));
  const double reset = fresh.chunk_loss(4, 4).loss.item<double>();
  EXPECT_GT(std::abs(with_state - reset), 1e-6);
}

}  // namespace
}  // namespace mtt::experiments
