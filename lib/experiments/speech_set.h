#pragma once
// A small generated speech set for demos and end-to-end tests of the Moshi training path: N short
// two-speaker exchanges synthesised with espeak-ng (a user question, then a Moshi answer in a
// different voice), mixed into 24 kHz stereo WAVs (channel 0 = Moshi, channel 1 = user, the
// moshi-finetune convention) and listed in a moshi-finetune jsonl ({"path", "duration"}).
#include <cstdint>
#include <string>
#include <vector>

namespace mtt::experiments {

struct SpeechSetOptions {
  std::string out_dir;
  int n = 8;
  uint64_t seed = 0;
  std::string espeak = "espeak-ng";  // executable name (looked up on PATH) or path
};

struct SpeechSetResult {
  std::string jsonl;               // <out_dir>/data.jsonl
  std::vector<std::string> wavs;   // <out_dir>/speech_NNNN.wav
  double total_seconds = 0;
};

// The executable's path, or "" when it is not found (PATH lookup for a bare name).
std::string find_executable(const std::string& name);

// Generates the set. Every file is written atomically; the jsonl is written last, so a set with a
// jsonl is complete. Throws mtt::Error when espeak-ng is missing or fails (naming it).
SpeechSetResult make_speech_set(const SpeechSetOptions& opt);

}  // namespace mtt::experiments
