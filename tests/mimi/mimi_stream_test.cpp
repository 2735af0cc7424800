// Mimi streaming (frame by frame, carried state) against offline on random weights (no Python
// needed): KvMode::Exact must equal offline for >= 12 s of audio, i.e. past the 250-step
// attention window; KvMode::UpstreamRing must visibly deviate there (spec §2.6 quirk), which
// also shows the comparison is sensitive. Plus loader strictness and input errors.
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>
#include <ATen/core/grad_mode.h>

#include <chrono>
#include <cmath>
#include <cstdio>

#include "core/error.h"
#include "mimi/mimi.h"
#include "nn/tensor_io.h"
#include "test_util.h"

namespace {

using mtt::mimi::KvMode;
using mtt::mimi::MimiConfig;
using mtt::mimi::MimiModel;
using mtt::mimi::MimiStreamer;

double max_err(const at::Tensor& a, const at::Tensor& b) {
  EXPECT_EQ(a.sizes(), b.sizes());
  if (a.sizes() != b.sizes()) return 1e9;
  return (a.to(at::kDouble) - b.to(at::kDouble)).abs().max().item<double>();
}

at::Tensor test_audio(int64_t B, int64_t N, uint64_t seed) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  at::Tensor t = at::arange(N, at::kDouble).div(24000.0);
  std::vector<at::Tensor> rows;
  for (int64_t b = 0; b < B; ++b) {
    at::Tensor f = at::sin(t * (2 * M_PI * 150.0 * (b + 1))) * 0.3 + at::sin(t * (2 * M_PI * 1234.0)) * 0.1;
    // slow amplitude modulation so the latent keeps changing over the whole clip
    f = f * (0.6 + 0.4 * at::sin(t * (2 * M_PI * 0.37)));
    rows.push_back(f + at::empty({N}, at::kDouble).normal_(0, 0.03, gen));
  }
  return at::stack(rows).unsqueeze(1).to(at::kFloat);
}

struct StreamResult {
  at::Tensor codes, audio;
};

// Streams x through the encoder (when defined) and codes_to_decode through the decoder.
StreamResult stream(const MimiModel& m, const at::Tensor& x, KvMode mode, int64_t frames_per_call,
                    const at::Tensor& codes_to_decode) {
  mtt::mimi::StreamOptions o;
  o.kv_mode = mode;
  MimiStreamer s(m, o);
  const int64_t fs = m.frame_size(), F = x.defined() ? x.size(-1) / fs : 0;
  std::vector<at::Tensor> c, y;
  for (int64_t f = 0; f < F; f += frames_per_call) {
    int64_t n = std::min(frames_per_call, F - f);
    c.push_back(s.encode_step(x.narrow(-1, f * fs, n * fs)));
  }
  for (int64_t f = 0; f < codes_to_decode.size(-1); f += frames_per_call) {
    int64_t n = std::min(frames_per_call, codes_to_decode.size(-1) - f);
    y.push_back(s.decode_step(codes_to_decode.narrow(-1, f, n)));
  }
  return {c.empty() ? at::Tensor() : at::cat(c, -1), at::cat(y, -1)};
}

TEST(MimiStream, FullSizeExactStreamingEqualsOfflineFor12Seconds) {
  at::NoGradGuard ng;
  MimiModel m = MimiModel::random(MimiConfig::v0_1(), 42);
  const int64_t frames = 160;  // 12.8 s = 320 encoder-transformer steps > context 250
  at::Tensor x = test_audio(1, frames * m.frame_size(), 7);
  auto t0 = std::chrono::steady_clock::now();
  at::Tensor codes = m.encode(x);
  at::Tensor y = m.decode(codes);
  auto t1 = std::chrono::steady_clock::now();
  StreamResult ex = stream(m, x, KvMode::Exact, 1, codes);
  auto t2 = std::chrono::steady_clock::now();
  // The quirk only needs the decoder side to show (same transformer code on both sides).
  StreamResult up = stream(m, at::Tensor(), KvMode::UpstreamRing, 1, codes);

  const double scale = std::max(1.0, y.abs().max().item<double>());
  const int64_t bad = (ex.codes != codes).sum().item<int64_t>();
  const double e_exact = max_err(ex.audio, y) / scale;
  // Upstream ring: identical until the ring wraps (250 steps = 125 frames), then it deviates.
  const int64_t wrap = 250 / 2 * m.frame_size();
  const double e_up_head = max_err(up.audio.narrow(-1, 0, wrap), y.narrow(-1, 0, wrap)) / scale;
  const double e_up = max_err(up.audio, y) / scale;
  std::printf("  12.8 s full size: offline %.1f s, streaming %.1f s; exact: %lld/%lld codes differ, decode err %.3g;"
              " upstream ring: decode err %.3g (first 10 s %.3g)\n",
              std::chrono::duration<double>(t1 - t0).count(), std::chrono::duration<double>(t2 - t1).count(),
              (long long)bad, (long long)codes.numel(), e_exact, e_up, e_up_head);
  EXPECT_EQ(bad, 0);
  EXPECT_LT(e_exact, 1e-4);
  EXPECT_LT(e_up_head, 1e-4);
  EXPECT_GT(e_up, 10 * std::max(e_exact, 1e-7)) << "the upstream ring quirk should show after 250 steps";
}

TEST(MimiStream, TinyStreamingChunkSizesBatchAndReset) {
  at::NoGradGuard ng;
  MimiModel m = MimiModel::random(MimiConfig::tiny(), 3);
  const int64_t frames = 24;  // 48 steps >> context 5
  at::Tensor x = test_audio(2, frames * m.frame_size(), 11);
  at::Tensor codes = m.encode(x);
  at::Tensor y = m.decode(codes);
  EXPECT_EQ(codes.sizes(), (std::vector<int64_t>{2, 3, frames}));
  EXPECT_EQ(y.sizes(), (std::vector<int64_t>{2, 1, frames * 1920}));
  EXPECT_EQ(codes.scalar_type(), at::kLong);
  for (int64_t chunk : {1, 2, 5}) {
    SCOPED_TRACE(chunk);
    StreamResult r = stream(m, x, KvMode::Exact, chunk, codes);
    EXPECT_TRUE(at::equal(r.codes, codes));
    EXPECT_LT(max_err(r.audio, y), 1e-5);
    StreamResult u = stream(m, x, KvMode::UpstreamRing, chunk, codes);
    EXPECT_GT(max_err(u.audio, y), 1e-4) << "ring quirk must differ once it wraps";
  }
  // reset(): a second utterance through the same streamer equals a fresh one.
  MimiStreamer s(m);
  for (int f = 0; f < 3; ++f) s.encode_step(x.narrow(-1, f * 1920, 1920));
  s.reset();
  at::Tensor c0 = s.encode_step(x.narrow(-1, 0, 3840));
  EXPECT_TRUE(at::equal(c0, codes.narrow(-1, 0, 2)));
  // Offline pads a partial last frame with zeros (pad_for_conv1d).
  at::Tensor xp = x.narrow(-1, 0, 5 * 1920 - 333);
  at::Tensor cp = m.encode(xp);
  EXPECT_EQ(cp.size(-1), 5);
  EXPECT_TRUE(at::equal(cp.narrow(-1, 0, 4), codes.narrow(-1, 0, 4)));
}

TEST(MimiStream, BadInputsAreErrors) {
  at::NoGradGuard ng;
  MimiModel m = MimiModel::random(MimiConfig::tiny(), 3);
  MimiStreamer s(m);
  EXPECT_THROW(s.encode_step(at::zeros({1, 1, 1000})), mtt::Error);
  EXPECT_THROW(s.encode_step(at::zeros({1, 2, 1920})), mtt::Error);
  EXPECT_THROW(m.encode(at::zeros({1, 1, 0})), mtt::Error);
  EXPECT_THROW(m.decode(at::full({1, 3, 2}, 40, at::kLong)), mtt::Error);  // bins = 40
  EXPECT_THROW(m.decode(at::zeros({1, 5, 2}, at::kLong)), mtt::Error);     // n_q = 4
  EXPECT_THROW(m.set_num_codebooks(0), mtt::Error);
}

TEST(MimiLoad, StrictNamesShapesAndLegacyAliases) {
  at::NoGradGuard ng;
  std::map<std::string, at::Tensor> w;
  MimiModel ref = MimiModel::random(MimiConfig::tiny(), 5, &w);
  EXPECT_EQ(w.size(), 114u);  // tiny: 318-key layout minus layers (2 per transformer) and codebooks (4)
  mtt::test::TempDir dir;
  const std::string path = (dir / "mimi.safetensors").string();
  at::Tensor x = test_audio(1, 4 * 1920, 2);
  at::Tensor codes = ref.encode(x);

  // Saved and reloaded by name: same outputs.
  mtt::nn::save_tensors(path, w);
  MimiModel back = MimiModel::load(path, MimiConfig::tiny());
  EXPECT_TRUE(at::equal(back.encode(x), codes));

  auto expect_error = [&](std::map<std::string, at::Tensor> ww, const std::string& key, const char* what,
                          const MimiConfig& cfg = MimiConfig::tiny()) {
    SCOPED_TRACE(what);
    mtt::nn::save_tensors(path, ww);
    try {
      MimiModel::load(path, cfg);
      ADD_FAILURE() << "no error";
    } catch (const mtt::Error& e) {
      std::string msg = e.what();
      EXPECT_NE(msg.find(path), std::string::npos) << msg;
      EXPECT_NE(msg.find(key), std::string::npos) << msg;
      std::printf("  %s -> %s\n", what, msg.c_str());
    }
  };
  auto missing = w;
  missing.erase("decoder.model.5.convtr.convtr.weight");
  expect_error(missing, "decoder.model.5.convtr.convtr.weight", "missing key");
  auto shaped = w;
  shaped["encoder_transformer.transformer.layers.1.linear1.weight"] = at::zeros({65, 32});
  expect_error(shaped, "encoder_transformer.transformer.layers.1.linear1.weight", "wrong shape");
  auto extra = w;
  extra["quantizer.rvq_rest.vq.layers.9._codebook.embedding_sum"] = at::zeros({40, 16});
  expect_error(extra, "quantizer.rvq_rest.vq.layers.9._codebook.embedding_sum", "unknown key");
  // A tiny file with the full-size config is a shape error naming the first key, not a crash.
  expect_error(w, "encoder.model.0.conv.conv.weight", "config mismatch", MimiConfig::v0_1());
}

TEST(MimiLoad, AcceptsLegacyCodebookNamesModuleAttentionNamesAndWeightNorm) {
  at::NoGradGuard ng;
  std::map<std::string, at::Tensor> w;
  MimiModel ref = MimiModel::random(MimiConfig::tiny(), 9, &w);
  at::Tensor x = test_audio(1, 3 * 1920, 4);
  at::Tensor codes = ref.encode(x);
  at::Tensor y = ref.decode(codes);

  std::map<std::string, at::Tensor> alt;
  for (auto& [k, v] : w) {
    std::string k2 = k;
    auto rep = [&](const std::string& a, const std::string& b) {
      auto p = k2.find(a);
      if (p != std::string::npos) k2.replace(p, a.size(), b);
    };
    rep("self_attn.in_proj_weight", "self_attn.in_projs.0.weight");
    rep("self_attn.out_proj.weight", "self_attn.out_projs.0.weight");
    rep("_codebook.embedding_sum", "_codebook.embed_avg");
    rep("_codebook.cluster_usage", "_codebook.cluster_size");
    rep("_codebook._initialized", "_codebook.inited");
    if (k2 == "encoder.model.0.conv.conv.weight" || k2 == "decoder.model.2.convtr.convtr.weight") {
      // weight-norm pair with the same effective weight: g = ||w|| per output row, v = 3 w
      std::vector<int64_t> dims;
      for (int64_t d = 1; d < v.dim(); ++d) dims.push_back(d);
      at::Tensor g = v.pow(2).sum(dims, true).sqrt();
      alt[k2 + "_g"] = g;
      alt[k2 + "_v"] = v * 3;
      continue;
    }
    alt[k2] = v;
  }
  MimiModel m = MimiModel::from_tensors(alt, MimiConfig::tiny(), "alt");
  EXPECT_TRUE(at::equal(m.encode(x), codes));
  EXPECT_LT(max_err(m.decode(codes), y), 1e-5);
}

}  // namespace
