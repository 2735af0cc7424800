// In-Place TTT behaviour beyond the goldens: the official variant against a token-by-token
// reference written from docs/ttt.md §8, streaming (functional) == whole-sequence forward, the
// parameter is never written in the functional mode, the port's legacy in-place mode, causality.
#include <gtest/gtest.h>

#include "inplace_golden_util.h"
#include "ttt/inplace_ttt.h"

using namespace mtt::test;
using namespace mtt::ttt;

namespace {

void randomise(InPlaceTTT& b, double target_std) {
  at::NoGradGuard ng;
  for (auto& p : b.named_parameters(true)) p.value().normal_(0, 0.3);
  b.conv_weight.normal_(0, target_std);
  if (b.target_proj.defined()) b.target_proj.normal_(0, target_std);
  if (b.w_down_pretrained.defined()) b.w_down_pretrained.copy_(b.w_down);
}

// Loop reference of docs/ttt.md §8 (official): per chunk of C tokens, depthwise conv k with (k−1)/2 zero
// taps outside the chunk, V̂ = c·P (P contracted over its first index), Δ = Σ_c V̂_cᵀ Z_c,
// y_c = Z_c (W0 + lr Σ_{j<i} Δ_j)ᵀ. Everything in float64, one token at a time.
at::Tensor official_reference(const InPlaceTTT& b, const at::Tensor& x, const at::Tensor& t) {
  const auto& o = b.options();
  const int64_t B = x.size(0), T = x.size(1), D = o.dim, C = o.chunk_size, k = o.conv_kernel_size;
  at::Tensor xd = x.to(at::kDouble), td = t.to(at::kDouble);
  at::Tensor Wg = b.w_gate.to(at::kDouble), Wu = b.w_up.to(at::kDouble), W0 = b.w_down.to(at::kDouble);
  at::Tensor conv = b.conv_weight.to(at::kDouble).squeeze(1);  // [D, k]
  at::Tensor P = b.target_proj.to(at::kDouble);
  at::Tensor y = at::zeros({B, T, D}, at::kDouble);
  for (int64_t bi = 0; bi < B; ++bi) {
    at::Tensor W = W0.clone();
    for (int64_t start = 0; start < T; start += C) {
      at::Tensor delta = at::zeros_like(W0);
      for (int64_t c = start; c < std::min(T, start + C); ++c) {
        at::Tensor xc = xd[bi][c];
        at::Tensor z = at::silu(at::mv(Wg, xc)) * at::mv(Wu, xc);
        y[bi][c] = at::mv(W, z);
        at::Tensor cc = at::zeros({D}, at::kDouble);
        for (int64_t j = 0; j < k; ++j) {
          const int64_t src = c + j - (k - 1) / 2;
          if (src >= start && src < start + C && src < T) cc += conv.select(1, j) * td[bi][src];
        }
        at::Tensor v = at::mv(P.t(), cc);  // v_e = Σ_d c_d P[d, e]
        delta += at::outer(v, z);
      }
      W = W + o.lr * delta;
    }
  }
  return y;
}

}  // namespace

TEST(InPlaceOfficial, MatchesTokenLoopReference) {
  for (int64_t T : {1, 5, 12, 13}) {  // shorter than a chunk, partial last chunk, exact multiple
    auto o = InPlaceTTTOptions::official(12, 20);
    o.chunk_size = 4;
    o.lr = 0.5;
    InPlaceTTT b(o);
    randomise(b, 0.2);
    at::Tensor x = at::randn({2, T, 12}), t = at::randn({2, T, 12});
    at::Tensor y = b.forward(x, t).y;
    EXPECT_TRUE(close_to("official y T=" + std::to_string(T), y, official_reference(b, x, t), 1e-5));
    // The TTT path is exercised: removing the update changes the output (when there are 2+ chunks).
    if (T > 4) EXPECT_GT(rel_err(y, b.forward_no_ttt(x)), 1e-3);
  }
}

TEST(InPlaceStream, FunctionalStepEqualsForwardAndNeverWritesTheParameter) {
  for (auto variant : {InPlaceVariant::moshi_port, InPlaceVariant::official}) {
    auto o = variant == InPlaceVariant::moshi_port ? InPlaceTTTOptions::moshi_port(8, 32)
                                                   : InPlaceTTTOptions::official(8, 16);
    o.chunk_size = 3;
    o.lr = 0.5;
    o.delta_clip_fro_norm = variant == InPlaceVariant::moshi_port ? std::optional<double>(0.5) : std::nullopt;
    InPlaceTTT b(o);
    randomise(b, 0.3);
    at::Tensor w0 = b.w_down.detach().clone();
    const int64_t T = 14;
    at::Tensor x = at::randn({2, T, 8}, at::kDouble), t = at::randn({2, T, 8}, at::kDouble);
    auto full = b.forward(x, t);
    // Pieces of uneven sizes, some crossing chunk boundaries.
    for (std::vector<int64_t> pieces : {std::vector<int64_t>(T, 1), std::vector<int64_t>{2, 5, 1, 6}}) {
      InPlaceTTTState s = b.init_state(2);
      std::vector<at::Tensor> ys;
      int64_t pos = 0;
      for (int64_t n : pieces) {
        ys.push_back(b.step(x.narrow(1, pos, n), t.narrow(1, pos, n), s));
        pos += n;
      }
      EXPECT_TRUE(close_to("stream vs forward", at::cat(ys, 1), full.y, 1e-10));
      EXPECT_EQ(s.chunks_done, T / 3);
      EXPECT_EQ(s.buffered(), T % 3);
      EXPECT_TRUE(close_to("stream state vs w_final", s.w_down, full.w_final, 1e-10));
      b.reset(s);
      EXPECT_TRUE(at::equal(s.w_down[1].to(at::kFloat), w0));
    }
    EXPECT_TRUE(at::equal(b.w_down, w0)) << "functional mode wrote the parameter";
  }
}

TEST(InPlaceStream, BatchElementsKeepSeparateFastWeights) {
  auto o = InPlaceTTTOptions::moshi_port(8, 32);
  o.chunk_size = 2;
  o.lr = 1.0;
  o.delta_clip_fro_norm = std::nullopt;
  InPlaceTTT b(o);
  randomise(b, 0.3);
  at::Tensor x = at::randn({2, 6, 8}), t = at::randn({2, 6, 8});
  at::Tensor y_pair = b.forward(x, t).y;
  at::Tensor y0 = b.forward(x.narrow(0, 0, 1), t.narrow(0, 0, 1)).y;
  at::Tensor y1 = b.forward(x.narrow(0, 1, 1), t.narrow(0, 1, 1)).y;
  EXPECT_TRUE(close_to("element 0", y_pair.narrow(0, 0, 1), y0, 1e-6));
  EXPECT_TRUE(close_to("element 1", y_pair.narrow(0, 1, 1), y1, 1e-6));
}

TEST(InPlaceStream, CausalAcrossChunks) {
  // Changing the target source inside chunk k changes no output of chunks ≤ k (apply, then update;
  // the conv never crosses a chunk boundary), but does change later chunks.
  auto o = InPlaceTTTOptions::moshi_port(8, 32);
  o.chunk_size = 4;
  o.lr = 1.0;
  o.delta_clip_fro_norm = std::nullopt;
  InPlaceTTT b(o);
  randomise(b, 0.3);
  at::Tensor x = at::randn({1, 12, 8}, at::kDouble), t = at::randn({1, 12, 8}, at::kDouble);
  at::Tensor y = b.forward(x, t).y;
  at::Tensor t2 = t.clone();
  t2[0][4] += 1.0;  // first token of chunk 1 (the conv of chunk 0's last token must not see it)
  at::Tensor y2 = b.forward(x, t2).y;
  EXPECT_EQ((y2.narrow(1, 0, 8) - y.narrow(1, 0, 8)).abs().max().item<double>(), 0.0);
  EXPECT_GT((y2.narrow(1, 8, 4) - y.narrow(1, 8, 4)).abs().max().item<double>(), 1e-6);
}

TEST(InPlaceLegacy, PortInPlaceModeWritesWDownAndDiffersFromTraining) {
  auto o = InPlaceTTTOptions::moshi_port(8, 32);
  o.chunk_size = 3;
  o.lr = 0.5;
  o.delta_clip_fro_norm = std::nullopt;
  o.fast_weight_mode = FastWeightMode::legacy_in_place;
  InPlaceTTT b(o);
  randomise(b, 0.3);
  at::Tensor w0 = b.w_down.detach().clone();
  at::Tensor x = at::randn({1, 3, 8}), t = at::randn({1, 3, 8});
  InPlaceTTTState s = b.init_state(1);
  std::vector<at::Tensor> ys;
  for (int64_t i = 0; i < 3; ++i) ys.push_back(b.step(x.narrow(1, i, 1), t.narrow(1, i, 1), s).detach());
  at::Tensor z = b.gated_hidden(x).detach();
  // Each token used the parameter as it was (no update inside the chunk) ...
  EXPECT_TRUE(close_to("legacy outputs", at::cat(ys, 1), at::matmul(z, w0.t()), 1e-6));
  EXPECT_FALSE(at::equal(b.w_down, w0)) << "legacy mode must write the update into w_down";
  // ... and the completed chunk was written into w_down with V̂ computed per call (the next token
  // is a zero pad in streaming: the port's train/test mismatch, docs/ttt.md §8).
  std::vector<at::Tensor> vs;
  for (int64_t i = 0; i < 3; ++i) vs.push_back(b.target(t.narrow(1, i, 1)).detach());
  at::Tensor expect = w0 + 0.5 * b.chunk_delta(at::cat(vs, 1), z).squeeze(0).detach();
  EXPECT_TRUE(close_to("legacy w_down", b.w_down.detach(), expect, 1e-6));
  at::Tensor w_train = w0 + 0.5 * b.chunk_delta(b.target(t), z).squeeze(0).detach();
  EXPECT_GT(rel_err(b.w_down.detach(), w_train), 1e-4) << "streaming V̂ should differ from training V̂";
  EXPECT_THROW(b.step(at::randn({2, 1, 8}), at::randn({2, 1, 8}), s), mtt::Error);
  b.reset(s);
  EXPECT_TRUE(at::equal(b.w_down, w0));
}

TEST(InPlaceStream, StateCarriesTheGraphUntilDetached) {
  auto o = InPlaceTTTOptions::moshi_port(8, 32);
  o.chunk_size = 2;
  o.lr = 1.0;
  o.delta_clip_fro_norm = std::nullopt;
  InPlaceTTT b(o);
  randomise(b, 0.3);
  at::Tensor x = at::randn({1, 4, 8}), t = at::randn({1, 4, 8});
  InPlaceTTTState s = b.init_state(1);
  b.step(x.narrow(1, 0, 2), t.narrow(1, 0, 2), s);  // completes chunk 0: state depends on the conv
  EXPECT_TRUE(s.w_down.requires_grad());
  at::Tensor y1 = b.step(x.narrow(1, 2, 2), t.narrow(1, 2, 2), s);
  y1.sum().backward();
  EXPECT_GT(b.conv_weight.grad().norm().item<double>(), 0.0);  // gradient flowed through the state
  EXPECT_GT(b.w_down.grad().norm().item<double>(), 0.0);       // and back to W0
  s.detach_();
  EXPECT_FALSE(s.w_down.requires_grad());
}
