// RoPE variants of the TTT wrapper (docs/ttt.md §1.2, §6): the fork's optional "audio" RoPE against
// its formula evaluated independently in double precision, and chunked application == one shot.
#include <ATen/core/grad_mode.h>
#include <gtest/gtest.h>

#include <cmath>
#include <complex>

#include "ttt/ttt_inputs.h"
#include "ttt/ttt_layer.h"

namespace {

using mtt::ttt::apply_rope;
using mtt::ttt::Rope;

TEST(Rope, ForkAudioMatchesItsFormula) {
  const int64_t B = 2, L = 11, H = 3, d = 8, b = 4;
  const double theta = 10000.0;
  at::manual_seed(5);
  at::Tensor x = at::randn({B, L, H, d}, at::kDouble);
  const int64_t start = 6;  // a streamed call that starts inside a mini-batch
  at::Tensor y = apply_rope(x, Rope::fork_audio, start, b, theta);
  auto xa = x.accessor<double, 4>();
  auto ya = y.accessor<double, 4>();
  double worst = 0;
  for (int64_t bb = 0; bb < B; ++bb)
    for (int64_t t = 0; t < L; ++t)
      for (int64_t h = 0; h < H; ++h)
        for (int64_t i = 0; i < d / 2; ++i) {
          // utils.py: freqs = 1 / base^(2i/d) * (0.5 + 1.5 exp(-2i / (2d))), angle = (pos % b) * freq,
          // (x_2i + i x_2i+1) * e^{i angle}.
          const double f = 1.0 / std::pow(theta, 2.0 * i / d) * (0.5 + 1.5 * std::exp(-2.0 * i / (2.0 * d)));
          const double ang = static_cast<double>((start + t) % b) * f;
          const std::complex<double> z(xa[bb][t][h][2 * i], xa[bb][t][h][2 * i + 1]);
          const std::complex<double> r = z * std::polar(1.0, ang);
          worst = std::max({worst, std::abs(r.real() - ya[bb][t][h][2 * i]), std::abs(r.imag() - ya[bb][t][h][2 * i + 1])});
        }
  // cos/sin are computed in fp32 (§1.2) whatever the input dtype: fp32 angle precision.
  EXPECT_LT(worst, 1e-6);
  // A rotation: per-pair norms are kept.
  EXPECT_TRUE(at::allclose(x.norm(2, {-1}), y.norm(2, {-1}), 1e-6, 1e-6));
  // The damping makes it differ from the plain LMPT frequencies beyond the first pair.
  EXPECT_GT((y - apply_rope(x, Rope::minibatch_1d, start, b, theta)).abs().max().item<double>(), 1e-3);
}

TEST(Rope, ChunkedApplicationEqualsOneShot) {
  at::manual_seed(6);
  at::Tensor x = at::randn({1, 13, 2, 8});
  for (Rope r : {Rope::minibatch_1d, Rope::fork_audio, Rope::vdit_frames}) {
    at::Tensor full = apply_rope(x, r, 0, 4, 10000.0);
    at::Tensor parts = at::cat({apply_rope(x.narrow(1, 0, 5), r, 0, 4, 10000.0),
                                apply_rope(x.narrow(1, 5, 8), r, 5, 4, 10000.0)}, 1);
    EXPECT_TRUE(at::equal(full, parts)) << static_cast<int>(r);
  }
}

TEST(Rope, ForkAudioLayerStreamsLikeOneShot) {
  auto cfg = mtt::ttt::TTTConfig::vdit(16, 2, 4, mtt::ttt::InnerModel::mlp);
  cfg.rope = Rope::fork_audio;
  cfg.eta = mtt::ttt::Eta::causal;  // streaming of partial mini-batches needs the causal eta
  mtt::ttt::TTTLayer layer(cfg, 7);
  layer.train(false);
  at::manual_seed(7);
  at::Tensor x = at::randn({2, 10, 16});
  at::NoGradGuard ng;
  mtt::ttt::TTTState s1, s2;
  at::Tensor one = layer.forward(x, &s1);
  at::Tensor a = layer.forward(x.narrow(1, 0, 3), &s2), b = layer.forward(x.narrow(1, 3, 7), &s2);
  EXPECT_TRUE(at::allclose(one, at::cat({a, b}, 1), 1e-5, 1e-5));
}

}  // namespace
