#pragma once
// moshi-finetune's training data for the Moshi LM: a jsonl file with one {"path", "duration"} per
// line (finetune/data/dataset.py; relative paths resolve against the jsonl's folder) naming
// stereo WAVs, channel 0 = Moshi (the assistant), channel 1 = the user. Each file is resampled to
// 24 kHz (lib/io/audio), both channels are Mimi-encoded, and the codes are laid out as the LM
// reads them: [1 + 2K, T] = text stream, Moshi codebooks, user codebooks (finetune/data/
// interleaver.py: cat([text_tokens, audio_tokens]) with audio_tokens = both channels' codes),
// cut into fixed windows of duration_sec as moshi-finetune chunks files.
//
// Text alignments (a sibling .json) are not read: the text stream is the text padding token
// (existing_text_padding_id, which the loss weighs by text_padding_weight), what the model
// predicts between words. Window tails past the end of a file are -1 (moshi-finetune's
// zero_padding: zero embedding, no target).
//
// Encoded codes are cached as safetensors (one file per WAV, keyed by path, size, mtime and
// codec) so later epochs and later runs do not re-encode.
#include <ATen/ATen.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "mimi/mimi.h"

namespace mtt::experiments {

struct JsonlEntry {
  std::string path;     // resolved WAV path
  double duration = 0;  // seconds, as listed
  int line = 0;         // 1-based line in the jsonl
};

// Parses a moshi-finetune jsonl. Blank lines are skipped; every other line must be a JSON object
// with a string "path" and a positive number "duration". Errors name the jsonl and the line.
std::vector<JsonlEntry> read_finetune_jsonl(const std::string& jsonl_path);

// Mimi codes of the two channels of a stereo file, int64 [K, T] each (K = the codec's active
// codebooks). Throws mtt::Error naming the file when it is missing, unreadable or not stereo.
struct StereoCodes {
  at::Tensor moshi, user;
};
StereoCodes encode_stereo_wav(const std::string& wav_path, const mimi::MimiModel& codec);

// The LM layout [1 + 2K, T]: row 0 = text_token everywhere, then moshi codes, then user codes.
at::Tensor lm_layout(const StereoCodes& codes, int64_t text_token);

struct JsonlDatasetOptions {
  int64_t window = 0;      // frames per training sequence (ceil(duration_sec * 12.5)); 0: whole files
  std::string cache_dir;   // where encoded codes are cached ("": no cache)
  std::string codec_id;    // names the codec in the cache key (weights path, or "tiny-random-seed-N")
  int64_t text_token = 3;  // the LM's existing_text_padding_id
};

class JsonlDataset {
 public:
  JsonlDataset(const std::string& jsonl_path, const mimi::MimiModel& codec, const JsonlDatasetOptions& opt);

  int64_t size() const { return static_cast<int64_t>(windows_.size()); }  // windows
  int64_t streams() const { return files_.empty() ? 0 : files_[0].size(0); }
  at::Tensor window(int64_t i) const;                        // [1 + 2K, window]
  at::Tensor batch(const std::vector<int64_t>& indices) const;  // [B, 1 + 2K, window]
  const std::vector<JsonlEntry>& entries() const { return entries_; }
  const at::Tensor& file_codes(std::size_t i) const { return files_[i]; }  // [1 + 2K, T]
  int64_t files_encoded() const { return encoded_; }  // encoded by this constructor
  int64_t files_cached() const { return cached_; }    // read back from the cache

 private:
  std::vector<JsonlEntry> entries_;
  std::vector<at::Tensor> files_;
  std::vector<std::pair<std::size_t, int64_t>> windows_;  // (file, first frame)
  int64_t window_ = 0;
  int64_t encoded_ = 0, cached_ = 0;
};

}  // namespace mtt::experiments
