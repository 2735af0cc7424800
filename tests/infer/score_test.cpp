// Teacher-forced scoring (lib/infer/score.h) against the PyPI moshi package: LMModel.forward's
// LMOutput, its streamed form and moshi-finetune's compute_loss_with_mask, on a tiny random
// moshiko-shaped model written by tests/ref/score/gen_score_ref.py (committed in tests/data/score_ref; the
// live test regenerates it with the reference venv). Plus the invariant that the streamed forward
// equals the full sequence for models whose streaming is exact, the stereo WAV layout, and the
// one-line errors.
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <c10/core/GradMode.h>

#include <cmath>
#include <filesystem>
#include <sstream>

#include "core/error.h"
#include "infer/models.h"
#include "infer/score.h"
#include "io/audio.h"
#include "mimi/mimi.h"
#include "moshi/moshi_test_util.h"
#include "nn/tensor_io.h"
#include "test_util.h"

namespace mtt::infer {
namespace {

namespace fs = std::filesystem;

fs::path committed_ref() { return test::source_dir() / "tests" / "data" / "score_ref"; }

// max |got - ref| over the finite entries <= rel * max |ref|, and NaN exactly where ref has NaN.
void expect_close(const at::Tensor& got_in, const at::Tensor& ref_in, double rel, const std::string& what) {
  SCOPED_TRACE(what);
  at::Tensor got = got_in.to(at::kDouble), ref = ref_in.to(at::kDouble);
  ASSERT_EQ(got.sizes(), ref.sizes());
  at::Tensor gn = got.isnan(), rn = ref.isnan();
  EXPECT_TRUE(at::equal(gn, rn)) << "NaN at other positions (" << gn.sum().item<int64_t>() << " vs "
                                 << rn.sum().item<int64_t>() << ")";
  at::Tensor fin = ~rn & ~gn;
  const double scale = ref.masked_select(fin).abs().max().item<double>();
  const double err = (got - ref).masked_select(fin).abs().max().item<double>();
  EXPECT_LE(err, rel * scale) << "max abs " << err << " vs max|ref| " << scale;
}

struct Checked {
  double text_loss = 0, audio_loss = 0;
};

// Scores dir/codes.safetensors with dir's config and weights and checks every output against
// dir/ref.safetensors (written by tests/ref/score/gen_score_ref.py).
void check_against_ref(const fs::path& dir, bool streaming) {
  SCOPED_TRACE(std::string(streaming ? "streaming" : "full") + " on " + dir.string());
  test::TempDir out;
  InferOptions o;
  o.input = (dir / "codes.safetensors").string();
  o.output = (out / "score.safetensors").string();
  o.checkpoint = (dir / "model.safetensors").string();
  o.config = (dir / "config.json").string();
  o.progress = false;
  ScoreOptions so;
  so.streaming = streaming;
  auto ref = nn::load_tensors((dir / "ref.safetensors").string());
  // The generator's loss weights (its metadata; fixed in score_ref.py).
  so.text_padding_weight = 0.5;
  so.first_codebook_weight_multiplier = 2.0;
  std::ostringstream log;
  ScoreResult r = run_score(o, so, log);
  auto got = nn::load_tensors(o.output);
  const double tol = 1e-5;
  expect_close(got.at("logits"), ref.at("logits"), tol, "logits");
  expect_close(got.at("text_logits"), ref.at("text_logits"), tol, "text_logits");
  if (streaming) {
    expect_close(got.at("logits"), ref.at("stream.logits"), tol, "logits vs upstream streamed");
    expect_close(got.at("text_logits"), ref.at("stream.text_logits"), tol, "text_logits vs upstream streamed");
  }
  EXPECT_EQ(got.at("mask").scalar_type(), at::kBool);
  EXPECT_TRUE(at::equal(got.at("mask"), ref.at("mask")));
  EXPECT_TRUE(at::equal(got.at("text_mask"), ref.at("text_mask")));
  EXPECT_EQ(got.at("logits").scalar_type(), at::kFloat);
  expect_close(got.at("text_loss"), ref.at("text_loss"), tol, "text_loss");
  expect_close(got.at("audio_loss"), ref.at("audio_loss"), tol, "audio_loss");
  expect_close(got.at("audio_loss_per_codebook"), ref.at("audio_loss_per_codebook"), tol, "audio_loss_per_codebook");
  EXPECT_TRUE(at::equal(got.at("text_weight"), ref.at("text_weight")));
  EXPECT_TRUE(at::equal(got.at("audio_weight"), ref.at("audio_weight")));
  EXPECT_TRUE(at::equal(got.at("codes"), nn::load_tensors(o.input).at("codes")));
  const double lt = ref.at("loss.text").item<double>(), la = ref.at("loss.audio").item<double>();
  EXPECT_NEAR(r.text_loss, lt, 1e-5 * std::abs(lt));
  EXPECT_NEAR(r.audio_loss, la, 1e-5 * std::abs(la));
  EXPECT_EQ(r.batch, 2);
  EXPECT_EQ(r.frames, got.at("codes").size(2));
  EXPECT_EQ(r.logits_shape, got.at("logits").sizes().vec());
}

TEST(Score, CommittedUpstreamReference) {
  ASSERT_TRUE(fs::exists(committed_ref() / "ref.safetensors")) << committed_ref();
  check_against_ref(committed_ref(), false);
  check_against_ref(committed_ref(), true);
}

TEST(Score, LiveUpstreamReference) {
  MTT_REQUIRE_MOSHI_REF();
  test::TempDir dir;
  const std::string script = (test::source_dir() / "tests" / "ref" / "score" / "gen_score_ref.py").string();
  auto r = test::run_command(std::string(MTT_REF_PYTHON) + " " + script + " " + dir.path().string());
  ASSERT_EQ(r.status, 0) << r.err;
  check_against_ref(dir.path(), false);
  check_against_ref(dir.path(), true);
}

at::Tensor random_codes(const moshi::LMConfig& c, int64_t B, int64_t T, uint64_t seed) {
  at::Tensor codes = moshi::testing::random_codes(c, B, T, seed);
  codes.select(0, 0).select(1, T - 3).fill_(-1);               // a frame of zero tokens
  codes.select(0, B - 1).select(0, 1).narrow(0, 5, 2).fill_(-1);  // Moshi's first codebook
  codes.select(0, 0).select(0, 0).narrow(0, 2, 4).fill_(c.existing_text_padding_id);
  return codes;
}

// The streamed teacher-forced forward equals LMModel::forward where streaming is exact: the base
// model and a persistent-state TTT model with mini-batch 1, across ring-cache wraps (T = 23 >
// context 4), B = 2.
TEST(Score, StreamingEqualsFullSequence) {
  c10::NoGradGuard ng;
  for (const std::string layers : {"none", "all"}) {
    SCOPED_TRACE("TTT layers: " + layers);
    moshi::LMConfig c = tiny_lm_config(mimi::MimiConfig::tiny(), layers);
    ASSERT_EQ(c.ttt.mini_batch_size, 1);
    moshi::LMModel lm(c);
    lm.init_random(7);
    at::Tensor codes = random_codes(c, 2, 23, 3);
    moshi::LMOutput full = lm.forward(codes);
    moshi::LMOutput st = streamed_forward(lm, codes);
    expect_close(st.logits, full.logits, 1e-5, "logits");
    expect_close(st.text_logits, full.text_logits, 1e-5, "text_logits");
    EXPECT_TRUE(at::equal(st.mask, full.mask));
    EXPECT_TRUE(at::equal(st.text_mask, full.text_mask));
    // And the losses built from them.
    ScoreOptions so;
    PositionLosses a = position_losses(c, full, codes, so), b = position_losses(c, st, codes, so);
    expect_close(b.audio_loss, a.audio_loss, 1e-5, "audio_loss");
    expect_close(b.text_loss, a.text_loss, 1e-5, "text_loss");
  }
}

// compute_loss_with_mask's reduction, by hand on a case where every weight matters.
TEST(Score, PositionLossesFollowComputeLossWithMask) {
  moshi::LMConfig c = moshi::LMConfig::tiny();
  const int64_t B = 1, T = 3, V = c.card, Vt = c.text_card;
  moshi::LMOutput out;
  at::Generator g = at::make_generator<at::CPUGeneratorImpl>(5);
  out.logits = at::randn({B, c.dep_q, T, V}, g, at::TensorOptions().dtype(at::kFloat));
  out.text_logits = at::randn({B, 1, T, Vt}, g, at::TensorOptions().dtype(at::kFloat));
  out.mask = at::ones({B, c.dep_q, T}, at::kBool);
  out.mask[0][1][2] = false;
  out.logits[0][1][2].fill_(std::nan(""));
  out.text_mask = at::ones({B, 1, T}, at::kBool);
  out.text_mask[0][0][2] = false;
  at::Tensor codes = moshi::testing::random_codes(c, B, T, 9);
  codes[0][0][0] = c.existing_text_padding_id;
  codes[0][0][1] = 7;
  ScoreOptions so;
  so.text_padding_weight = 0.25;
  so.first_codebook_weight_multiplier = 3.0;
  PositionLosses p = position_losses(c, out, codes, so);
  auto ce = [](const at::Tensor& logits, int64_t target) {
    return -at::log_softmax(logits.to(at::kDouble), -1)[target].item<double>();
  };
  // Text: CE where masked in, weight 0.25 on the padding target.
  EXPECT_NEAR(p.text_loss[0][0].item<double>(), ce(out.text_logits[0][0][0], codes[0][0][0].item<int64_t>()), 1e-5);
  EXPECT_TRUE(std::isnan(p.text_loss[0][2].item<double>()));
  EXPECT_DOUBLE_EQ(p.text_weight[0][0].item<double>(), 0.25);
  EXPECT_DOUBLE_EQ(p.text_weight[0][1].item<double>(), 1.0);
  EXPECT_DOUBLE_EQ(p.text_weight[0][2].item<double>(), 0.0);
  // Audio at t = 2: codebook 0 (weight 3) and codebooks 2.. (weight 1); codebook 1 masked out.
  double num = 0, den = 0;
  for (int64_t k = 0; k < c.dep_q; ++k) {
    if (k == 1) continue;
    const double w = k == 0 ? 3.0 : 1.0;
    num += w * ce(out.logits[0][k][2], codes[0][1 + k][2].item<int64_t>());
    den += w;
  }
  EXPECT_NEAR(p.audio_loss[0][2].item<double>(), num / den, 1e-5);
  EXPECT_DOUBLE_EQ(p.audio_weight[0][2].item<double>(), den);
  EXPECT_TRUE(std::isnan(p.audio_loss_per_codebook[0][1][2].item<double>()));
  // The scalar: sum(w * CE) / sum(w) over everything.
  const double tw = p.text_weight.sum().item<double>();
  const double tl = (p.text_loss.nan_to_num(0) * p.text_weight).sum().item<double>() / tw;
  EXPECT_NEAR(p.text_mean, tl, 1e-6);
}

void write_stereo(const fs::path& p, double seconds, int rate) {
  const int n = static_cast<int>(seconds * rate);
  std::vector<float> st(2 * static_cast<std::size_t>(n));
  for (int i = 0; i < n; ++i) {
    st[2 * i] = 0.3f * static_cast<float>(std::sin(i * 0.031));
    st[2 * i + 1] = 0.2f * static_cast<float>(std::sin(i * 0.113 + 0.5 * std::sin(i * 0.001)));
  }
  io::write_wav(p.string(), st, 2, rate);
}

TEST(Score, StereoWavLayouts) {
  test::TempDir dir;
  write_stereo(dir / "in.wav", 0.5, 24000);
  InferOptions o;
  o.tiny = true;
  o.input = (dir / "in.wav").string();
  o.progress = false;
  std::ostringstream log;
  ScoreOptions mu, um;
  um.channels = StereoLayout::user_moshi;
  o.output = (dir / "mu.safetensors").string();
  ScoreResult r = run_score(o, mu, log);
  o.output = (dir / "um.safetensors").string();
  run_score(o, um, log);
  at::Tensor a = nn::load_tensors((dir / "mu.safetensors").string()).at("codes");
  at::Tensor b = nn::load_tensors((dir / "um.safetensors").string()).at("codes");
  moshi::LMConfig c = tiny_lm_config(mimi::MimiConfig::tiny(), "all");
  ASSERT_EQ(a.dim(), 3);
  EXPECT_EQ(a.size(0), 1);
  EXPECT_EQ(a.size(1), c.num_codebooks());
  EXPECT_EQ(a.size(2), r.frames);
  EXPECT_GT(r.frames, 3);
  EXPECT_TRUE((a.select(1, 0) == c.existing_text_padding_id).all().item<bool>());
  const int64_t user_q = c.n_q - c.dep_q;
  // Swapping the layout swaps the streams (the codec encodes each channel the same way).
  EXPECT_TRUE(at::equal(a.narrow(1, 1, c.dep_q).narrow(1, 0, user_q), b.narrow(1, 1 + c.dep_q, user_q)));
  EXPECT_TRUE(at::equal(a.narrow(1, 1 + c.dep_q, user_q), b.narrow(1, 1, c.dep_q).narrow(1, 0, user_q)));
  EXPECT_FALSE(at::equal(a, b));
  EXPECT_TRUE(std::isfinite(r.text_loss));
  EXPECT_TRUE(std::isfinite(r.audio_loss));
}

void expect_error(const std::function<void()>& f, const std::string& file, const std::string& key,
                  const std::string& reason_part) {
  try {
    f();
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::Input) << e.what();
    EXPECT_EQ(e.file(), file) << e.what();
    EXPECT_EQ(e.key(), key) << e.what();
    EXPECT_NE(e.reason().find(reason_part), std::string::npos) << e.what();
    EXPECT_EQ(std::string(e.what()).find('\n'), std::string::npos);
  }
}

TEST(Score, BadInputsAreOneLineErrors) {
  test::TempDir dir;
  moshi::LMConfig c = tiny_lm_config(mimi::MimiConfig::tiny(), "all");
  const std::string wrong_key = (dir / "wrong_key.safetensors").string();
  nn::save_tensors(wrong_key, {{"tokens", at::zeros({1, c.num_codebooks(), 4}, at::kLong)}});
  expect_error([&] { read_codes(wrong_key, c); }, wrong_key, "codes", "no tensor named 'codes'");
  const std::string wrong_k = (dir / "wrong_k.safetensors").string();
  nn::save_tensors(wrong_k, {{"codes", at::zeros({1, c.num_codebooks() - 1, 4}, at::kLong)}});
  expect_error([&] { read_codes(wrong_k, c); }, wrong_k, "codes", "expected [B, 1 + n_q = 7, T]");
  const std::string floats = (dir / "floats.safetensors").string();
  nn::save_tensors(floats, {{"codes", at::zeros({1, c.num_codebooks(), 4}, at::kFloat)}});
  expect_error([&] { read_codes(floats, c); }, floats, "codes", "integer");
  const std::string range = (dir / "range.safetensors").string();
  at::Tensor codes = at::zeros({2, c.num_codebooks(), 4}, at::kLong);
  codes[1][2][3] = c.card;  // the initial token id is not a token of the data
  nn::save_tensors(range, {{"codes", codes}});
  expect_error([&] { read_codes(range, c); }, range, "codes", "at [1, 2, 3] is outside [-1, " + std::to_string(c.card));
  // A mono WAV has no Moshi stream.
  const std::string mono = (dir / "mono.wav").string();
  io::write_wav(mono, std::vector<float>(24000, 0.1f), 1, 24000);
  InferOptions o;
  o.tiny = true;
  o.input = mono;
  o.output = (dir / "out.safetensors").string();
  o.progress = false;
  std::ostringstream log;
  expect_error([&] { run_score(o, {}, log); }, mono, "", "expected a stereo file");
  EXPECT_FALSE(fs::exists(o.output));
}

}  // namespace
}  // namespace mtt::infer
