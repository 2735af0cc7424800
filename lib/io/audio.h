#pragma once
// Audio file I/O for the Mimi codec (docs/moshi.md §6.1 step 2 and step 6): read anything
// libsndfile reads (WAV/AIFF/FLAC/Ogg Vorbis/Opus/MP3 ... at any rate, channel count and sample
// format), mix down or pick one channel, resample to Mimi's 24 kHz with soxr, and write WAV files
// atomically (mtt::AtomicFile: a failed write leaves no partial file).
//
// Every failure is an mtt::Error naming the file: unreadable, empty, not audio, corrupt (decoder
// error, truncated stream, non-finite samples), bad channel index.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace mtt::io {

inline constexpr int kMimiSampleRate = 24000;  // docs/moshi.md §5.1

struct AudioInfo {
  int sample_rate = 0;
  int channels = 0;
  int64_t frames = 0;
  std::string format;   // major format, e.g. "WAV (Microsoft)", "FLAC (Free Lossless Audio Codec)"
  std::string subtype;  // sample encoding, e.g. "Signed 16 bit PCM"
};

// Interleaved float samples in [-1, 1] (integer formats are scaled by libsndfile).
struct Audio {
  int sample_rate = 0;
  int channels = 0;
  std::vector<float> samples;  // frames * channels, frame-major
  int64_t frames() const { return channels > 0 ? static_cast<int64_t>(samples.size()) / channels : 0; }
};

// Header only; throws mtt::Error when the file cannot be opened as audio.
AudioInfo probe_audio(const std::string& path);

// All channels at the file's own rate. Throws mtt::Error for empty, non-audio or corrupt input.
Audio read_audio(const std::string& path);

enum class ResampleQuality { Quick, Low, Medium, High, VeryHigh };

struct LoadOptions {
  int sample_rate = kMimiSampleRate;  // 0 keeps the file's rate
  int channel = -1;                   // -1: mean of all channels; k >= 0: channel k only
  ResampleQuality quality = ResampleQuality::VeryHigh;
};

// Mono float samples at options.sample_rate (what Mimi encodes).
std::vector<float> load_mono(const std::string& path, const LoadOptions& options = {});

// Resamples interleaved `channels`-channel audio with soxr. The output has
// round(frames * out_rate / in_rate) frames. `what` names the source in errors.
std::vector<float> resample(const std::vector<float>& interleaved, int channels, int in_rate, int out_rate,
                            ResampleQuality quality = ResampleQuality::VeryHigh,
                            const std::string& what = "");

// Channel k of interleaved audio, or the mean of all channels when channel == -1.
std::vector<float> to_mono(const Audio& audio, int channel, const std::string& what = "");

enum class SampleFormat { PCM16, PCM24, Float32 };

// Writes a WAV file atomically (temporary + fsync + rename via mtt::AtomicFile); samples are
// interleaved frames * channels. Integer formats clip to [-1, 1]. Non-finite samples are an error.
void write_wav(const std::string& path, const std::vector<float>& interleaved, int channels, int sample_rate,
               SampleFormat format = SampleFormat::PCM16);
// The bytes write_wav writes (for outputs committed together, mtt::OutputSet); `path` names
// the output in errors.
std::string encode_wav(const std::string& path, const std::vector<float>& interleaved, int channels, int sample_rate,
                       SampleFormat format = SampleFormat::PCM16);

// Audio from bytes in memory (`name` in errors), with the checks of read_audio: the WAV reader's
// fuzz entry point.
Audio read_audio_bytes(const void* data, std::size_t size, const std::string& name);

}  // namespace mtt::io
