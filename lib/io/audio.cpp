#include "io/audio.h"

#include <sndfile.h>
#include <soxr.h>

#include <algorithm>
#include <climits>
#include <cstdint>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>

#include "core/atomic_file.h"
#include "core/error.h"

namespace mtt::io {
namespace {

struct SndfileCloser {
  void operator()(SNDFILE* f) const { sf_close(f); }
};
using SndfilePtr = std::unique_ptr<SNDFILE, SndfileCloser>;

std::string format_name(int format, bool major) {
  SF_FORMAT_INFO fi{};
  fi.format = major ? (format & SF_FORMAT_TYPEMASK) : (format & SF_FORMAT_SUBMASK);
  if (sf_command(nullptr, SFC_GET_FORMAT_INFO, &fi, sizeof fi) == 0 && fi.name) return fi.name;
  return "unknown";
}

// libsndfile silently shortens a WAV/AIFF whose data chunk runs past the end of the file (a cut
// download/copy) and only notes it in its log as "data : <declared> (should be <actual>)". A cut
// file is corrupt input, so we turn that note into an error. Streaming writers put 0 or
// 0xFFFFFFFF/0x7FFFFFFF in the size field when they cannot seek back; those are not truncation.
void check_not_truncated(const std::string& path, SNDFILE* f) {
  char log[8192] = {0};
  sf_command(f, SFC_GET_LOG_INFO, log, sizeof log - 1);
  std::string text(log);
  size_t pos = 0;
  while ((pos = text.find("data : ", pos)) != std::string::npos) {
    size_t eol = text.find('\n', pos);
    std::string line = text.substr(pos, eol == std::string::npos ? std::string::npos : eol - pos);
    pos += 7;
    unsigned long long declared = 0, actual = 0;
    if (std::sscanf(line.c_str(), "data : %llu (should be %llu)", &declared, &actual) != 2) continue;
    if (declared == 0 || declared == 0xFFFFFFFFull || declared == 0x7FFFFFFFull) continue;
    if (actual < declared) {
      throw Error(path, "data chunk",
                  "truncated audio file: header announces " + std::to_string(declared) + " data bytes, file holds " +
                      std::to_string(actual));
    }
  }
}

// Opens `path` for reading. libsndfile's own message distinguishes "unknown format",
// "file is empty" etc.; we add the file name and a hint of what went wrong.
SndfilePtr open_read(const std::string& path, SF_INFO& info) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) throw Error(path, "", "no such file");
  if (std::filesystem::is_directory(path, ec)) throw Error(path, "", "is a directory, not an audio file");
  auto size = std::filesystem::file_size(path, ec);
  if (!ec && size == 0) throw Error(path, "", "empty file (0 bytes), not audio");
  std::memset(&info, 0, sizeof info);
  SNDFILE* f = sf_open(path.c_str(), SFM_READ, &info);
  if (!f) {
    throw Error(path, "", std::string("cannot read as audio: ") + sf_strerror(nullptr));
  }
  SndfilePtr p(f);
  if (info.channels <= 0) throw Error(path, "", "audio header has no channels");
  if (info.samplerate <= 0) throw Error(path, "", "audio header has an invalid sample rate");
  check_not_truncated(path, p.get());
  return p;
}

soxr_quality_spec_t quality_spec(ResampleQuality q) {
  unsigned long recipe = SOXR_VHQ;
  switch (q) {
    case ResampleQuality::Quick: recipe = SOXR_QQ; break;
    case ResampleQuality::Low: recipe = SOXR_LQ; break;
    case ResampleQuality::Medium: recipe = SOXR_MQ; break;
    case ResampleQuality::High: recipe = SOXR_HQ; break;
    case ResampleQuality::VeryHigh: recipe = SOXR_VHQ; break;
  }
  return soxr_quality_spec(recipe, 0);
}

// In-memory sink for sf_open_virtual: the WAV is rendered into a buffer and then written through
// AtomicFile in one go, so libsndfile never touches the destination path.
struct MemSink {
  std::string bytes;
  sf_count_t pos = 0;
};
sf_count_t mem_len(void* u) { return static_cast<sf_count_t>(static_cast<MemSink*>(u)->bytes.size()); }
sf_count_t mem_seek(sf_count_t off, int whence, void* u) {
  auto* m = static_cast<MemSink*>(u);
  sf_count_t base = whence == SEEK_SET ? 0 : whence == SEEK_CUR ? m->pos : static_cast<sf_count_t>(m->bytes.size());
  sf_count_t np = base + off;
  if (np < 0) return -1;
  m->pos = np;
  return m->pos;
}
sf_count_t mem_read(void* ptr, sf_count_t n, void* u) {
  auto* m = static_cast<MemSink*>(u);
  sf_count_t avail = std::max<sf_count_t>(0, static_cast<sf_count_t>(m->bytes.size()) - m->pos);
  sf_count_t k = std::min(n, avail);
  if (k > 0) std::memcpy(ptr, m->bytes.data() + m->pos, static_cast<size_t>(k));
  m->pos += k;
  return k;
}
sf_count_t mem_write(const void* ptr, sf_count_t n, void* u) {
  auto* m = static_cast<MemSink*>(u);
  size_t end = static_cast<size_t>(m->pos + n);
  if (end > m->bytes.size()) m->bytes.resize(end);
  std::memcpy(m->bytes.data() + m->pos, ptr, static_cast<size_t>(n));
  m->pos += n;
  return n;
}
sf_count_t mem_tell(void* u) { return static_cast<MemSink*>(u)->pos; }

}  // namespace

AudioInfo probe_audio(const std::string& path) {
  SF_INFO info;
  auto f = open_read(path, info);
  AudioInfo out;
  out.sample_rate = info.samplerate;
  out.channels = info.channels;
  out.frames = info.frames;
  out.format = format_name(info.format, true);
  out.subtype = format_name(info.format, false);
  return out;
}

namespace {

// Read-only memory source for sf_open_virtual (read_audio_bytes).
struct MemSource {
  const uint8_t* data;
  sf_count_t size, pos;
};
sf_count_t src_len(void* u) { return static_cast<MemSource*>(u)->size; }
sf_count_t src_seek(sf_count_t off, int whence, void* u) {
  auto* m = static_cast<MemSource*>(u);
  const sf_count_t base = whence == SEEK_SET ? 0 : whence == SEEK_CUR ? m->pos : m->size;
  if (off > 0 && base > INT64_MAX - off) return -1;
  const sf_count_t np = base + off;
  if (np < 0) return -1;
  m->pos = np;
  return np;
}
sf_count_t src_read(void* ptr, sf_count_t n, void* u) {
  auto* m = static_cast<MemSource*>(u);
  if (n <= 0 || m->pos >= m->size) return 0;
  const sf_count_t k = std::min(n, m->size - m->pos);
  std::memcpy(ptr, m->data + m->pos, static_cast<size_t>(k));
  m->pos += k;
  return k;
}
sf_count_t src_write(const void*, sf_count_t, void*) { return 0; }
sf_count_t src_tell(void* u) { return static_cast<MemSource*>(u)->pos; }

// Every frame of an opened stream, checked: the common part of read_audio and read_audio_bytes.
Audio decode_all(SNDFILE* f, const SF_INFO& info, const std::string& path) {
  const bool exact_length = (info.format & SF_FORMAT_TYPEMASK) != SF_FORMAT_MPEG;  // MP3 lengths are estimates
  if (info.frames <= 0) throw Error(path, "", "no audio frames (empty audio stream)");
  Audio a;
  a.sample_rate = info.samplerate;
  a.channels = info.channels;
  // About 1M samples per read whatever the channel count; the reservation trusts the header only
  // up to 64 MiB (a compressed stream may announce far more frames than it holds).
  const int64_t chunk = std::max<int64_t>(1, (int64_t{1} << 20) / info.channels);
  std::vector<float> buf(static_cast<size_t>(chunk * info.channels));
  const int64_t announced = info.frames > INT64_MAX / info.channels ? INT64_MAX : info.frames * info.channels;
  a.samples.reserve(static_cast<size_t>(std::min<int64_t>(announced, int64_t{1} << 24)));
  int64_t total = 0;
  while (true) {
    sf_count_t n = sf_readf_float(f, buf.data(), chunk);
    if (n <= 0) break;
    a.samples.insert(a.samples.end(), buf.begin(), buf.begin() + n * info.channels);
    total += n;
  }
  if (int e = sf_error(f); e != SF_ERR_NO_ERROR) {
    throw Error(path, "frame " + std::to_string(total), std::string("corrupt audio stream: ") + sf_error_number(e));
  }
  if (total == 0) throw Error(path, "", "no decodable audio frames (corrupt or empty stream)");
  if (exact_length && total < info.frames) {
    throw Error(path, "frame " + std::to_string(total),
                "truncated or corrupt audio stream: decoded " + std::to_string(total) + " of " +
                    std::to_string(info.frames) + " frames");
  }
  for (size_t i = 0; i < a.samples.size(); ++i) {
    if (!std::isfinite(a.samples[i])) {
      throw Error(path, "frame " + std::to_string(i / static_cast<size_t>(info.channels)),
                  "corrupt audio: non-finite sample");
    }
  }
  return a;
}

}  // namespace

Audio read_audio(const std::string& path) {
  SF_INFO info;
  auto f = open_read(path, info);
  return decode_all(f.get(), info, path);
}

Audio read_audio_bytes(const void* data, std::size_t size, const std::string& name) {
  if (size == 0) throw Error(name, "", "empty file (0 bytes), not audio");
  MemSource src{static_cast<const uint8_t*>(data), static_cast<sf_count_t>(size), 0};
  SF_VIRTUAL_IO vio{src_len, src_seek, src_read, src_write, src_tell};
  SF_INFO info;
  std::memset(&info, 0, sizeof info);
  SNDFILE* raw = sf_open_virtual(&vio, SFM_READ, &info, &src);
  if (!raw) throw Error(name, "", std::string("cannot read as audio: ") + sf_strerror(nullptr));
  SndfilePtr f(raw);
  if (info.channels <= 0) throw Error(name, "", "audio header has no channels");
  if (info.samplerate <= 0) throw Error(name, "", "audio header has an invalid sample rate");
  check_not_truncated(name, f.get());
  return decode_all(f.get(), info, name);
}

std::vector<float> to_mono(const Audio& audio, int channel, const std::string& what) {
  const int C = audio.channels;
  if (C <= 0) throw Error(what, "", "audio has no channels");
  if (channel < -1 || channel >= C) {
    throw Error(what, "channel " + std::to_string(channel),
                "channel index out of range (file has " + std::to_string(C) + " channel(s))");
  }
  const int64_t N = audio.frames();
  std::vector<float> out(static_cast<size_t>(N));
  if (channel >= 0) {
    for (int64_t t = 0; t < N; ++t) out[t] = audio.samples[t * C + channel];
  } else {
    // Mean, accumulated in double so a mixdown of many channels does not lose precision.
    for (int64_t t = 0; t < N; ++t) {
      double s = 0;
      for (int c = 0; c < C; ++c) s += audio.samples[t * C + c];
      out[t] = static_cast<float>(s / C);
    }
  }
  return out;
}

std::vector<float> resample(const std::vector<float>& in, int channels, int in_rate, int out_rate,
                            ResampleQuality quality, const std::string& what) {
  if (channels <= 0 || in_rate <= 0 || out_rate <= 0) {
    throw Error(what, "", "resample: invalid channels/rates " + std::to_string(channels) + "/" +
                              std::to_string(in_rate) + "/" + std::to_string(out_rate));
  }
  if (in_rate == out_rate) return in;
  const size_t in_frames = in.size() / static_cast<size_t>(channels);
  const size_t out_frames = static_cast<size_t>(
      std::llround(static_cast<double>(in_frames) * out_rate / static_cast<double>(in_rate)));
  std::vector<float> out(out_frames * static_cast<size_t>(channels));
  soxr_io_spec_t io = soxr_io_spec(SOXR_FLOAT32_I, SOXR_FLOAT32_I);
  soxr_quality_spec_t q = quality_spec(quality);
  size_t done = 0;
  // soxr_oneshot flushes the filter tail, so the output is the complete, delay-compensated signal.
  soxr_error_t err = soxr_oneshot(in_rate, out_rate, static_cast<unsigned>(channels), in.data(), in_frames,
                                  nullptr, out.data(), out_frames, &done, &io, &q, nullptr);
  if (err) throw Error(what, "", std::string("soxr resampling failed: ") + err);
  out.resize(done * static_cast<size_t>(channels));
  return out;
}

std::vector<float> load_mono(const std::string& path, const LoadOptions& options) {
  Audio a = read_audio(path);
  std::vector<float> mono = to_mono(a, options.channel, path);
  if (options.sample_rate == 0 || options.sample_rate == a.sample_rate) return mono;
  return resample(mono, 1, a.sample_rate, options.sample_rate, options.quality, path);
}

void write_wav(const std::string& path, const std::vector<float>& interleaved, int channels, int sample_rate,
               SampleFormat format) {
  const std::string bytes = encode_wav(path, interleaved, channels, sample_rate, format);
  AtomicFile out(path);
  out.write(bytes);
  out.commit();
}

std::string encode_wav(const std::string& path, const std::vector<float>& interleaved, int channels, int sample_rate,
                       SampleFormat format) {
  if (channels <= 0) throw Error(path, "", "write_wav: channels must be positive", ErrorKind::Usage);
  if (sample_rate <= 0) throw Error(path, "", "write_wav: sample rate must be positive", ErrorKind::Usage);
  if (interleaved.size() % static_cast<size_t>(channels) != 0) {
    throw Error(path, "", "write_wav: sample count is not a multiple of the channel count", ErrorKind::Usage);
  }
  for (size_t i = 0; i < interleaved.size(); ++i) {
    if (!std::isfinite(interleaved[i])) {
      throw Error(path, "frame " + std::to_string(i / static_cast<size_t>(channels)),
                  "refusing to write a non-finite sample", ErrorKind::Internal);
    }
  }
  SF_INFO info{};
  info.samplerate = sample_rate;
  info.channels = channels;
  int sub = format == SampleFormat::PCM16 ? SF_FORMAT_PCM_16 : format == SampleFormat::PCM24 ? SF_FORMAT_PCM_24 : SF_FORMAT_FLOAT;
  info.format = SF_FORMAT_WAV | sub;
  if (!sf_format_check(&info)) throw Error(path, "", "write_wav: unsupported WAV format", ErrorKind::Internal);
  MemSink sink;
  SF_VIRTUAL_IO vio{mem_len, mem_seek, mem_read, mem_write, mem_tell};
  SNDFILE* f = sf_open_virtual(&vio, SFM_WRITE, &info, &sink);
  if (!f) throw Error(path, "", std::string("cannot create WAV: ") + sf_strerror(nullptr), ErrorKind::Internal);
  {
    SndfilePtr guard(f);
    if (format != SampleFormat::Float32) sf_command(f, SFC_SET_CLIPPING, nullptr, SF_TRUE);
    const sf_count_t frames = static_cast<sf_count_t>(interleaved.size() / static_cast<size_t>(channels));
    if (frames > 0 && sf_writef_float(f, interleaved.data(), frames) != frames) {
      throw Error(path, "", std::string("WAV encoding failed: ") + sf_strerror(f), ErrorKind::Internal);
    }
  }  // sf_close finalises the RIFF sizes in the buffer
  return std::move(sink.bytes);
}

}  // namespace mtt::io
