// libFuzzer target for the audio reader (io::read_audio_bytes: libsndfile behind our checks for
// truncation, empty streams and non-finite samples; what ttt-infer and ttt-sweep train read).
// Built and run by scripts/fuzz.sh under ASan + UBSan (libsndfile itself is not instrumented;
// a crash inside it is still caught); seeds written by fuzz/make_wav_seeds.cpp, dictionary
// fuzz/wav.dict.
//
// Contract: audio whose every sample is finite and whose frame count matches its channel count,
// or an mtt::Error of kind Input naming the file; no crash, no other exception.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>

#include "core/error.h"
#include "io/audio.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const mtt::io::Audio a = mtt::io::read_audio_bytes(data, size, "fuzz.wav");
    if (a.channels <= 0 || a.sample_rate <= 0) __builtin_trap();
    if (a.samples.empty() || a.samples.size() % static_cast<size_t>(a.channels) != 0) __builtin_trap();
    for (float s : a.samples)
      if (!std::isfinite(s)) __builtin_trap();
    const auto mono = mtt::io::to_mono(a, -1, "fuzz.wav");
    if (static_cast<int64_t>(mono.size()) != a.frames()) __builtin_trap();
  } catch (const mtt::Error& e) {
    if (e.kind() != mtt::ErrorKind::Input || e.file() != "fuzz.wav") __builtin_trap();
    if (std::string(e.what()).find('\n') != std::string::npos) __builtin_trap();
  }
  return 0;
}
