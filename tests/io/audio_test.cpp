// Audio I/O (lib/io/audio.h): every input rate/format/channel layout the issue lists, generated
// here with libsndfile itself (and espeak-ng/sox when installed), checked against the analytic
// signal resampled to 24 kHz; corrupt/empty/non-audio inputs must give one-line errors naming
// the file and leave no output file behind.
#include <gtest/gtest.h>
#include <sndfile.h>

#include <cmath>
#include <fstream>
#include <numbers>
#include <random>
#include <string>
#include <vector>

#include "core/atomic_file.h"
#include "core/error.h"
#include "io/audio.h"
#include "test_util.h"

namespace {

using mtt::io::Audio;
using mtt::io::LoadOptions;
using mtt::test::TempDir;

constexpr double kF0 = 440.0;   // left channel
constexpr double kF1 = 1000.0;  // right channel (below Nyquist of 8 kHz)
constexpr double kA0 = 0.5, kA1 = 0.3;

double left(double t) { return kA0 * std::sin(2 * std::numbers::pi * kF0 * t); }
double right(double t) { return kA1 * std::sin(2 * std::numbers::pi * kF1 * t); }

// Writes `frames` frames of the two test tones with libsndfile in the given container/encoding.
void write_tones(const std::string& path, int format, int rate, int channels, int64_t frames) {
  SF_INFO info{};
  info.samplerate = rate;
  info.channels = channels;
  info.format = format;
  ASSERT_TRUE(sf_format_check(&info)) << "format 0x" << std::hex << format;
  SNDFILE* f = sf_open(path.c_str(), SFM_WRITE, &info);
  ASSERT_NE(f, nullptr) << sf_strerror(nullptr);
  std::vector<float> buf(static_cast<size_t>(frames * channels));
  for (int64_t t = 0; t < frames; ++t) {
    double ts = static_cast<double>(t) / rate;
    buf[t * channels] = static_cast<float>(left(ts));
    if (channels > 1) buf[t * channels + 1] = static_cast<float>(right(ts));
  }
  ASSERT_EQ(sf_writef_float(f, buf.data(), frames), frames);
  sf_close(f);
}

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary) << bytes;
}

struct FormatCase {
  const char* name;
  const char* ext;
  int format;
  bool lossy;
};

const FormatCase kFormats[] = {
    {"wav16", "wav", SF_FORMAT_WAV | SF_FORMAT_PCM_16, false},
    {"wav24", "wav", SF_FORMAT_WAV | SF_FORMAT_PCM_24, false},
    {"wavf32", "wav", SF_FORMAT_WAV | SF_FORMAT_FLOAT, false},
    {"flac16", "flac", SF_FORMAT_FLAC | SF_FORMAT_PCM_16, false},
    {"flac24", "flac", SF_FORMAT_FLAC | SF_FORMAT_PCM_24, false},
    {"ogg", "ogg", SF_FORMAT_OGG | SF_FORMAT_VORBIS, true},
};
const int kRates[] = {8000, 16000, 22050, 44100, 48000};

// Max |y - expected| over the interior (the resampler's edge transients are excluded: 20 ms).
double interior_error(const std::vector<float>& y, int rate, double (*fn)(double), double (*fn2)(double), double mix) {
  double worst = 0;
  const int64_t skip = rate / 50;
  for (int64_t t = skip; t + skip < static_cast<int64_t>(y.size()); ++t) {
    double ts = static_cast<double>(t) / rate;
    double e = fn2 ? mix * (fn(ts) + fn2(ts)) : fn(ts);
    worst = std::max(worst, std::abs(y[t] - e));
  }
  return worst;
}

// Signal-to-error ratio (dB) over the interior, for lossy codecs.
double interior_snr_db(const std::vector<float>& y, int rate, double (*fn)(double)) {
  double sig = 0, err = 0;
  const int64_t skip = rate / 50;
  for (int64_t t = skip; t + skip < static_cast<int64_t>(y.size()); ++t) {
    double e = fn(static_cast<double>(t) / rate);
    sig += e * e;
    err += (y[t] - e) * (y[t] - e);
  }
  return 10 * std::log10(sig / std::max(err, 1e-30));
}

TEST(AudioRead, AllRatesFormatsAndChannelLayoutsResampleTo24k) {
  TempDir dir;
  int cases = 0;
  for (const auto& fmt : kFormats) {
    for (int rate : kRates) {
      for (int channels : {1, 2}) {
        SCOPED_TRACE(std::string(fmt.name) + " " + std::to_string(rate) + " Hz " + std::to_string(channels) + " ch");
        const int64_t frames = rate / 2 + 7;  // 0.5 s, deliberately not a round number
        std::string path = (dir / (std::string(fmt.name) + "_" + std::to_string(rate) + "_" +
                                   std::to_string(channels) + "." + fmt.ext)).string();
        write_tones(path, fmt.format, rate, channels, frames);

        auto info = mtt::io::probe_audio(path);
        EXPECT_EQ(info.sample_rate, rate);
        EXPECT_EQ(info.channels, channels);
        EXPECT_EQ(info.frames, frames);

        Audio raw = mtt::io::read_audio(path);
        ASSERT_EQ(raw.frames(), frames);
        ASSERT_EQ(raw.channels, channels);

        // Mixdown (mean of channels) at 24 kHz.
        std::vector<float> mono = mtt::io::load_mono(path);
        const int64_t expect_len = std::llround(static_cast<double>(frames) * 24000 / rate);
        EXPECT_EQ(static_cast<int64_t>(mono.size()), expect_len);
        if (fmt.lossy) {
          if (channels == 1) {
            EXPECT_GT(interior_snr_db(mono, 24000, left), 20.0);
          }
        } else {
          // 16-bit quantisation is 3e-5; the VHQ resampler's passband error is far below 1e-3.
          double err = channels == 1 ? interior_error(mono, 24000, left, nullptr, 1.0)
                                     : interior_error(mono, 24000, left, right, 0.5);
          EXPECT_LT(err, 1e-3);
        }
        if (channels == 2) {
          LoadOptions o;
          o.channel = 1;
          std::vector<float> r = mtt::io::load_mono(path, o);
          if (fmt.lossy) {
            EXPECT_GT(interior_snr_db(r, 24000, right), 15.0);
          } else {
            EXPECT_LT(interior_error(r, 24000, right, nullptr, 1.0), 1e-3);
          }
          o.channel = 2;
          EXPECT_THROW(mtt::io::load_mono(path, o), mtt::Error);
        }
        ++cases;
      }
    }
  }
  EXPECT_EQ(cases, 60);
}

// A WAV written by a streaming writer (size fields 0xFFFFFFFF, e.g. ffmpeg/sox to a pipe) is
// valid and must not be mistaken for a truncated file.
TEST(AudioRead, AcceptsStreamedWavWithUnknownSizes) {
  TempDir dir;
  std::string path = (dir / "good.wav").string();
  write_tones(path, SF_FORMAT_WAV | SF_FORMAT_PCM_16, 16000, 1, 1600);
  std::string b = mtt::read_file(path);
  size_t data = b.find("data");
  ASSERT_NE(data, std::string::npos);
  for (int i = 0; i < 4; ++i) b[data + 4 + i] = '\xff';
  for (int i = 0; i < 4; ++i) b[4 + i] = '\xff';
  std::string streamed = (dir / "streamed.wav").string();
  write_bytes(streamed, b);
  auto y = mtt::io::load_mono(streamed, LoadOptions{0, -1});
  ASSERT_EQ(y.size(), 1600u);
  EXPECT_NEAR(y[100], left(100 / 16000.0), 1e-4);
}

TEST(AudioRead, KeepsNativeRateWhenAsked) {
  TempDir dir;
  std::string path = (dir / "a.wav").string();
  write_tones(path, SF_FORMAT_WAV | SF_FORMAT_FLOAT, 16000, 2, 1600);
  LoadOptions o;
  o.sample_rate = 0;
  o.channel = 0;
  auto y = mtt::io::load_mono(path, o);
  ASSERT_EQ(y.size(), 1600u);
  for (int t = 0; t < 1600; ++t) ASSERT_FLOAT_EQ(y[t], static_cast<float>(left(t / 16000.0)));
}

TEST(AudioWrite, RoundTripsAllSampleFormats) {
  TempDir dir;
  std::vector<float> x(2 * 2400);
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> u(-0.9f, 0.9f);
  for (auto& v : x) v = u(rng);
  struct {
    mtt::io::SampleFormat f;
    double tol;
    const char* subtype;
  } cases[] = {{mtt::io::SampleFormat::PCM16, 1.0 / 32768 + 1e-7, "Signed 16 bit PCM"},
               {mtt::io::SampleFormat::PCM24, 1.0 / 8388608 + 1e-7, "Signed 24 bit PCM"},
               {mtt::io::SampleFormat::Float32, 0.0, "32 bit float"}};
  for (auto& c : cases) {
    std::string path = (dir / (std::string(c.subtype).substr(0, 6) + ".wav")).string();
    mtt::io::write_wav(path, x, 2, 24000, c.f);
    auto info = mtt::io::probe_audio(path);
    EXPECT_EQ(info.sample_rate, 24000);
    EXPECT_EQ(info.channels, 2);
    EXPECT_EQ(info.frames, 2400);
    EXPECT_EQ(info.subtype, c.subtype);
    Audio a = mtt::io::read_audio(path);
    ASSERT_EQ(a.samples.size(), x.size());
    double worst = 0;
    for (size_t i = 0; i < x.size(); ++i) worst = std::max(worst, std::abs(double(a.samples[i]) - x[i]));
    EXPECT_LE(worst, c.tol) << c.subtype;
    // No temporary left beside the output.
    int n = 0;
    for (auto& e : std::filesystem::directory_iterator(dir.path())) n += e.path().string().find(".tmp.") != std::string::npos;
    EXPECT_EQ(n, 0);
  }
}

TEST(AudioWrite, ClipsIntegerFormats) {
  TempDir dir;
  std::string path = (dir / "clip.wav").string();
  mtt::io::write_wav(path, {2.0f, -3.0f, 0.25f}, 1, 24000, mtt::io::SampleFormat::PCM16);
  Audio a = mtt::io::read_audio(path);
  ASSERT_EQ(a.samples.size(), 3u);
  EXPECT_NEAR(a.samples[0], 1.0, 1e-4);
  EXPECT_NEAR(a.samples[1], -1.0, 1e-4);
  EXPECT_NEAR(a.samples[2], 0.25, 1e-4);
}

TEST(AudioWrite, FailedWriteLeavesExistingFileAndNoTemporary) {
  TempDir dir;
  std::string path = (dir / "out.wav").string();
  mtt::io::write_wav(path, {0.1f, 0.2f}, 1, 24000);
  auto before = mtt::read_file(path);
  EXPECT_THROW(mtt::io::write_wav(path, {0.1f, NAN}, 1, 24000), mtt::Error);
  EXPECT_EQ(mtt::read_file(path), before);
  EXPECT_THROW(mtt::io::write_wav((dir / "no/such/dir/x.wav").string(), {0.1f}, 1, 24000), mtt::Error);
  int files = 0;
  for (auto& e : std::filesystem::directory_iterator(dir.path())) files += e.is_regular_file();
  EXPECT_EQ(files, 1);
}

// --- bad inputs --------------------------------------------------------------------------------

// The one-line error must name the file; the "convert" flow (read, then write) must not create
// the output file.
void expect_bad_input(const std::string& in, const std::string& out, const std::string& what) {
  SCOPED_TRACE(what);
  try {
    auto y = mtt::io::load_mono(in);
    mtt::io::write_wav(out, y, 1, 24000);
    ADD_FAILURE() << "no error for " << what;
  } catch (const mtt::Error& e) {
    std::string msg = e.what();
    EXPECT_NE(msg.find(in), std::string::npos) << msg;
    EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
    EXPECT_EQ(e.exit_status(), mtt::kExitInput) << msg;
    std::printf("  %s -> %s\n", what.c_str(), msg.c_str());
  }
  EXPECT_FALSE(std::filesystem::exists(out));
}

TEST(AudioRead, BadInputsGiveClearErrorsAndNoOutput) {
  TempDir dir;
  std::string out = (dir / "out.wav").string();

  expect_bad_input((dir / "missing.wav").string(), out, "missing file");

  std::string empty = (dir / "empty.wav").string();
  write_bytes(empty, "");
  expect_bad_input(empty, out, "0-byte file");

  std::string text = (dir / "notes.wav").string();
  write_bytes(text, "this is a text file, not audio\n");
  expect_bad_input(text, out, "text file");

  std::string noise = (dir / "noise.flac").string();
  std::mt19937 rng(3);
  std::string junk(4096, '\0');
  for (auto& c : junk) c = static_cast<char>(rng());
  write_bytes(noise, junk);
  expect_bad_input(noise, out, "random bytes");

  // A WAV header announcing 0 frames: valid container, no audio.
  std::string zero = (dir / "zero.wav").string();
  {
    SF_INFO info{};
    info.samplerate = 16000;
    info.channels = 1;
    info.format = SF_FORMAT_WAV | SF_FORMAT_PCM_16;
    SNDFILE* f = sf_open(zero.c_str(), SFM_WRITE, &info);
    ASSERT_NE(f, nullptr);
    sf_close(f);
  }
  expect_bad_input(zero, out, "zero-frame WAV");

  // Real WAV cut inside its header.
  std::string good = (dir / "good.wav").string();
  write_tones(good, SF_FORMAT_WAV | SF_FORMAT_PCM_16, 16000, 1, 16000);
  std::string cut = (dir / "cut.wav").string();
  write_bytes(cut, mtt::read_file(good).substr(0, 30));
  expect_bad_input(cut, out, "WAV truncated in the header");
  std::string half = (dir / "half.wav").string();
  write_bytes(half, mtt::read_file(good).substr(0, 16000));
  expect_bad_input(half, out, "WAV truncated in the data chunk");

  // FLAC with its frame data overwritten: the decoder must fail, not return garbage silently.
  std::string flac = (dir / "good.flac").string();
  write_tones(flac, SF_FORMAT_FLAC | SF_FORMAT_PCM_16, 16000, 1, 32000);
  std::string bytes = mtt::read_file(flac);
  for (size_t i = bytes.size() / 3; i < bytes.size() * 2 / 3; ++i) bytes[i] = static_cast<char>(rng());
  std::string bad_flac = (dir / "corrupt.flac").string();
  write_bytes(bad_flac, bytes);
  expect_bad_input(bad_flac, out, "FLAC with corrupted frames");

  // Ogg cut in half: the stream ends before the length its last page announces... or the
  // decoder fails; either way an error.
  std::string ogg = (dir / "good.ogg").string();
  write_tones(ogg, SF_FORMAT_OGG | SF_FORMAT_VORBIS, 16000, 1, 32000);
  std::string ob = mtt::read_file(ogg);
  for (size_t i = ob.size() / 3; i < ob.size() * 2 / 3; ++i) ob[i] = static_cast<char>(rng());
  std::string bad_ogg = (dir / "corrupt.ogg").string();
  write_bytes(bad_ogg, ob);
  expect_bad_input(bad_ogg, out, "Ogg with corrupted pages");

  // A directory is not audio either.
  expect_bad_input(dir.path().string(), out, "directory");
}

// Speech from espeak-ng, converted by sox to 44.1 kHz stereo FLAC/Ogg/24-bit WAV: our 24 kHz
// mono output must match sox's own resampling of the original to within resampler differences.
TEST(AudioRead, SpeechThroughSoxMatchesSoxResampling) {
  if (std::system("command -v espeak-ng >/dev/null 2>&1 && command -v sox >/dev/null 2>&1") != 0) {
    GTEST_SKIP() << "espeak-ng or sox not installed (apt-get install -y espeak-ng sox)";
  }
  TempDir dir;
  std::string speech = (dir / "speech.wav").string();
  auto r = mtt::test::run_command("espeak-ng -w " + speech + " 'Test time training layers for the Moshi speech model.'");
  ASSERT_EQ(r.status, 0) << r.err;
  std::string ref = (dir / "ref24k.wav").string();
  r = mtt::test::run_command("sox " + speech + " -r 24000 -e float -b 32 " + ref + " rate -v");
  ASSERT_EQ(r.status, 0) << r.err;
  std::vector<float> expect = mtt::io::load_mono(ref);
  double energy = 0;
  for (float v : expect) energy += double(v) * v;
  ASSERT_GT(energy, 1.0) << "espeak-ng produced silence";

  struct {
    const char* name;
    const char* sox_args;
    double tol;  // max abs diff vs sox's resampling
  } cases[] = {{"s44.wav", "-r 44100 -c 2 -b 24", 2e-3},
               {"s48.flac", "-r 48000 -c 2 -b 16", 2e-3},
               {"s8.wav", "-r 8000 -c 1 -b 16", -1},  // band-limited: compare energy only
               {"s44.ogg", "-r 44100 -c 2", -1}};
  for (auto& c : cases) {
    SCOPED_TRACE(c.name);
    std::string p = (dir / c.name).string();
    r = mtt::test::run_command("sox " + speech + " " + c.sox_args + " " + p + " rate -v");
    ASSERT_EQ(r.status, 0) << r.err;
    std::vector<float> y = mtt::io::load_mono(p);
    ASSERT_NEAR(static_cast<double>(y.size()), static_cast<double>(expect.size()), 2.0);
    size_t n = std::min(y.size(), expect.size());
    double worst = 0, e2 = 0, y2 = 0, dot = 0;
    for (size_t i = 0; i < n; ++i) {
      worst = std::max(worst, std::abs(double(y[i]) - expect[i]));
      e2 += double(expect[i]) * expect[i];
      y2 += double(y[i]) * y[i];
      dot += double(y[i]) * expect[i];
    }
    double corr = dot / std::sqrt(e2 * y2);
    if (c.tol > 0) {
      EXPECT_LT(worst, c.tol);
    }
    EXPECT_GT(corr, 0.9) << "correlation with sox's 24 kHz version";
  }
}

}  // namespace
