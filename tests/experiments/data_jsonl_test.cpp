// moshi-finetune jsonl data: parse errors name file and line, a missing WAV names the WAV, codes
// equal Mimi's own encoding of each channel (through lib/io's independent mono loader), windows
// are padded with -1, the code cache is reused and invalidated when the WAV changes.
#include "experiments/data_jsonl.h"

#include <gtest/gtest.h>

#include <c10/core/GradMode.h>

#include <algorithm>
#include <cmath>
#include <fstream>

#include "core/atomic_file.h"
#include "core/error.h"
#include "experiments/speech_set.h"
#include "io/audio.h"
#include "test_util.h"

namespace mtt::experiments {
namespace {

namespace fs = std::filesystem;

void write_text(const fs::path& p, const std::string& s) {
  std::ofstream f(p);
  f << s;
}

// A stereo 16 kHz file (resampled to 24 kHz by the loader): a chirp on channel 0, a different
// tone mix on channel 1, so the two channels encode differently.
void write_stereo(const fs::path& p, double seconds, int rate, double f0) {
  const int64_t n = static_cast<int64_t>(seconds * rate);
  std::vector<float> x(static_cast<size_t>(2 * n));
  for (int64_t t = 0; t < n; ++t) {
    const double s = static_cast<double>(t) / rate;
    x[2 * t] = static_cast<float>(0.4 * std::sin(2 * M_PI * (f0 + 300 * s) * s));
    x[2 * t + 1] = static_cast<float>(0.3 * std::sin(2 * M_PI * 330 * s) + 0.2 * std::sin(2 * M_PI * 1250 * s));
  }
  io::write_wav(p.string(), x, 2, rate);
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(DataJsonl, ParseErrorsNameFileAndLine) {
  test::TempDir dir;
  const auto p = (dir / "data.jsonl").string();
  const std::vector<std::pair<std::string, std::string>> bad = {
      {"{\"path\": \"a.wav\"}", "duration"},
      {"{\"duration\": 2.0}", "path"},
      {"{\"path\": \"a.wav\", \"duration\": -1}", "a number of seconds in (0, "},
      {"{\"path\": \"a.wav\", \"duration\": \"2\"}", "duration"},
      {"[1, 2]", "object"},
      {"{\"path\": \"a.wav\", \"duration\": 2", "not valid JSON"}};
  for (const auto& [line, why] : bad) {
    // line 1 fine, line 2 blank (skipped), line 3 bad.
    write_text(p, "{\"path\": \"ok.wav\", \"duration\": 1.5}\n\n" + line + "\n");
    const std::string e = error_of([&] { read_finetune_jsonl(p); });
    EXPECT_NE(e.find(p + ": line 3: "), std::string::npos) << e;
    EXPECT_NE(e.find(why), std::string::npos) << e;
    EXPECT_EQ(e.find('\n'), std::string::npos);
  }
  write_text(p, "{\"path\": \"sub/a.wav\", \"duration\": 1.5}\n{\"path\": \"/abs/b.wav\", \"duration\": 2}\n");
  auto entries = read_finetune_jsonl(p);
  ASSERT_EQ(entries.size(), 2u);
  EXPECT_EQ(entries[0].path, (dir.path() / "sub/a.wav").string());  // relative to the jsonl's folder
  EXPECT_EQ(entries[1].path, "/abs/b.wav");
  EXPECT_EQ(entries[1].line, 2);
  write_text(p, "\n");
  EXPECT_NE(error_of([&] { read_finetune_jsonl(p); }).find("no entries"), std::string::npos);
}

TEST(DataJsonl, MissingOrMonoWavIsNamed) {
  test::TempDir dir;
  const auto p = (dir / "data.jsonl").string();
  auto codec = mimi::MimiModel::random(mimi::MimiConfig::tiny(), 0);
  write_text(p, "{\"path\": \"nothere.wav\", \"duration\": 1.0}\n");
  std::string e = error_of([&] { JsonlDataset(p, codec, {}); });
  EXPECT_NE(e.find((dir / "nothere.wav").string()), std::string::npos) << e;
  EXPECT_NE(e.find("line 1"), std::string::npos) << e;
  io::write_wav((dir / "mono.wav").string(), std::vector<float>(2400, 0.1f), 1, 24000);
  write_text(p, "{\"path\": \"mono.wav\", \"duration\": 0.1}\n");
  e = error_of([&] { JsonlDataset(p, codec, {}); });
  EXPECT_NE(e.find("mono.wav"), std::string::npos) << e;
  EXPECT_NE(e.find("stereo"), std::string::npos) << e;
}

TEST(DataJsonl, CodesEqualMimiOnEachChannelAndTheCacheIsReused) {
  c10::NoGradGuard no_grad;
  test::TempDir dir;
  write_stereo(dir / "x.wav", 1.0, 16000, 180.0);
  write_text(dir / "data.jsonl", "{\"path\": \"x.wav\", \"duration\": 1.0}\n");
  auto codec = mimi::MimiModel::random(mimi::MimiConfig::tiny(), 3);
  const int K = codec.config().num_codebooks;
  JsonlDatasetOptions o;
  o.window = 4;
  o.cache_dir = (dir / "cache").string();
  o.codec_id = "tiny-random-seed-3";
  o.text_token = 3;
  JsonlDataset ds((dir / "data.jsonl").string(), codec, o);
  EXPECT_EQ(ds.files_encoded(), 1);
  EXPECT_EQ(ds.files_cached(), 0);

  // The reference: lib/io's mono loader (read, pick channel, soxr to 24 kHz) and Mimi directly.
  auto direct = [&](int ch) {
    io::LoadOptions lo;
    lo.channel = ch;
    std::vector<float> x = io::load_mono((dir / "x.wav").string(), lo);
    at::Tensor a = at::from_blob(x.data(), {1, 1, static_cast<int64_t>(x.size())}, at::kFloat).clone();
    return codec.encode(a).squeeze(0);
  };
  const at::Tensor moshi = direct(0), user = direct(1);
  const int64_t T = moshi.size(1);
  ASSERT_EQ(T, 13);  // 1 s at 12.5 Hz, rounded up
  const at::Tensor& f = ds.file_codes(0);
  ASSERT_EQ(f.sizes(), (std::vector<int64_t>{1 + 2 * K, T}));
  EXPECT_TRUE(at::equal(f.select(0, 0), at::full({T}, 3, at::kLong)));
  EXPECT_TRUE(at::equal(f.narrow(0, 1, K), moshi));
  EXPECT_TRUE(at::equal(f.narrow(0, 1 + K, K), user));
  EXPECT_FALSE(at::equal(moshi, user));  // the channels are not mixed

  // Windows of 4 frames: 4 of them, the last padded with -1 (no target).
  ASSERT_EQ(ds.size(), 4);
  EXPECT_TRUE(at::equal(ds.window(1), f.narrow(1, 4, 4)));
  at::Tensor last = ds.window(3);
  EXPECT_TRUE(at::equal(last.narrow(1, 0, 1), f.narrow(1, 12, 1)));
  EXPECT_TRUE((last.narrow(1, 1, 3) == -1).all().item<bool>());
  EXPECT_EQ(ds.batch({0, 2}).sizes(), (std::vector<int64_t>{2, 1 + 2 * K, 4}));

  // Second load: from the cache, same codes.
  JsonlDataset again((dir / "data.jsonl").string(), codec, o);
  EXPECT_EQ(again.files_encoded(), 0);
  EXPECT_EQ(again.files_cached(), 1);
  EXPECT_TRUE(at::equal(again.file_codes(0), f));
  // Another codec id is another cache entry.
  o.codec_id = "other";
  EXPECT_EQ(JsonlDataset((dir / "data.jsonl").string(), codec, o).files_encoded(), 1);
  // A changed WAV is re-encoded.
  o.codec_id = "tiny-random-seed-3";
  write_stereo(dir / "x.wav", 1.0, 16000, 90.0);
  JsonlDataset changed((dir / "data.jsonl").string(), codec, o);
  EXPECT_EQ(changed.files_encoded(), 1);
  EXPECT_TRUE(at::equal(changed.file_codes(0).narrow(0, 1, K), direct(0)));
}

TEST(SpeechSet, MissingEspeakIsAClearError) {
  test::TempDir dir;
  SpeechSetOptions o;
  o.out_dir = (dir / "set").string();
  o.espeak = "/nonexistent/espeak-ng";
  const std::string e = error_of([&] { make_speech_set(o); });
  EXPECT_NE(e.find("espeak-ng"), std::string::npos) << e;
  EXPECT_NE(e.find("not found"), std::string::npos) << e;
  EXPECT_FALSE(fs::exists(dir / "set" / "data.jsonl"));
}

}  // namespace
}  // namespace mtt::experiments
