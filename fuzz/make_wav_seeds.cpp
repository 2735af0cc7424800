// Writes small, valid audio files of many containers and sample formats into a folder: the seeds
// of wav_reader_fuzzer (scripts/fuzz.sh builds and runs this first, without sanitizers).
#include <sndfile.h>

#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: make_wav_seeds DIR\n");
    return 64;
  }
  const std::string dir = argv[1];
  struct Kind {
    const char* name;
    int format, rate, channels, frames;
  };
  const Kind kinds[] = {
      {"pcm16_mono.wav", SF_FORMAT_WAV | SF_FORMAT_PCM_16, 24000, 1, 64},
      {"pcm24_stereo.wav", SF_FORMAT_WAV | SF_FORMAT_PCM_24, 44100, 2, 48},
      {"pcm32_mono.wav", SF_FORMAT_WAV | SF_FORMAT_PCM_32, 16000, 1, 32},
      {"u8_mono.wav", SF_FORMAT_WAV | SF_FORMAT_PCM_U8, 8000, 1, 40},
      {"float_stereo.wav", SF_FORMAT_WAV | SF_FORMAT_FLOAT, 48000, 2, 32},
      {"double_mono.wav", SF_FORMAT_WAV | SF_FORMAT_DOUBLE, 22050, 1, 16},
      {"ulaw_mono.wav", SF_FORMAT_WAV | SF_FORMAT_ULAW, 8000, 1, 64},
      {"imaadpcm_mono.wav", SF_FORMAT_WAV | SF_FORMAT_IMA_ADPCM, 16000, 1, 128},
      {"ext_pcm16_4ch.wav", SF_FORMAT_WAVEX | SF_FORMAT_PCM_16, 24000, 4, 16},
      {"pcm16_mono.aiff", SF_FORMAT_AIFF | SF_FORMAT_PCM_16, 24000, 1, 32},
      {"pcm16_mono.w64", SF_FORMAT_W64 | SF_FORMAT_PCM_16, 24000, 1, 32},
      {"pcm16_mono.caf", SF_FORMAT_CAF | SF_FORMAT_PCM_16, 24000, 1, 32},
      {"pcm16_mono.au", SF_FORMAT_AU | SF_FORMAT_PCM_16, 24000, 1, 32},
      {"pcm16_mono.flac", SF_FORMAT_FLAC | SF_FORMAT_PCM_16, 24000, 1, 256},
  };
  int written = 0;
  for (const Kind& k : kinds) {
    SF_INFO info{};
    info.samplerate = k.rate;
    info.channels = k.channels;
    info.format = k.format;
    if (!sf_format_check(&info)) continue;  // a libsndfile built without this codec
    const std::string path = dir + "/" + k.name;
    SNDFILE* f = sf_open(path.c_str(), SFM_WRITE, &info);
    if (!f) continue;
    std::vector<float> x(static_cast<size_t>(k.frames * k.channels));
    for (size_t i = 0; i < x.size(); ++i) x[i] = 0.5f * std::sin(0.3f * static_cast<float>(i));
    sf_writef_float(f, x.data(), k.frames);
    sf_close(f);
    ++written;
  }
  std::printf("%d seeds\n", written);
  return written > 0 ? 0 : 1;
}
