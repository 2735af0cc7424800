#include "experiments/data_jsonl.h"

#include <c10/core/GradMode.h>
#include <sys/stat.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/output_set.h"
#include "io/audio.h"
#include "io/strict_json.h"
#include "nn/tensor_io.h"

namespace mtt::experiments {

namespace fs = std::filesystem;
using nlohmann::json;

constexpr double kMaxDurationSeconds = 7 * 24 * 3600;

std::vector<JsonlEntry> read_finetune_jsonl(const std::string& jsonl_path) {
  std::ifstream in(jsonl_path);
  if (!in) throw Error(jsonl_path, "", "cannot open the data file");
  const fs::path dir = fs::path(jsonl_path).parent_path();
  std::vector<JsonlEntry> out;
  std::string text;
  int line_no = 0;
  while (std::getline(in, text)) {
    ++line_no;
    if (text.find_first_not_of(" \t\r") == std::string::npos) continue;
    const std::string where = "line " + std::to_string(line_no);
    json j;
    try {
      j = io::parse_json_strict(text, jsonl_path, "the line");  // duplicate keys, NUL bytes, 1e999 too
    } catch (const Error& e) {
      throw Error(jsonl_path, where, e.key().empty() ? e.reason() : e.key() + ": " + e.reason());
    }
    if (!j.is_object()) throw Error(jsonl_path, where, "expected an object {\"path\": ..., \"duration\": ...}");
    if (!j.contains("path") || !j["path"].is_string() || j["path"].get<std::string>().empty())
      throw Error(jsonl_path, where, "missing or non-string \"path\"");
    if (!j.contains("duration") || !j["duration"].is_number())
      throw Error(jsonl_path, where, "missing or non-numeric \"duration\" (seconds)");
    JsonlEntry e;
    e.duration = j["duration"].get<double>();
    // Frames are ceil(duration x 12.5) in 64 bits: a week of audio is far beyond any dialogue.
    if (!(e.duration > 0) || !(e.duration <= kMaxDurationSeconds))
      throw Error(jsonl_path, where,
                  "\"duration\" must be a number of seconds in (0, " + std::to_string(static_cast<int>(kMaxDurationSeconds)) +
                      "], got " + j["duration"].dump());
    fs::path p = j["path"].get<std::string>();
    e.path = (p.is_absolute() ? p : dir / p).lexically_normal().string();
    e.line = line_no;
    out.push_back(std::move(e));
  }
  if (out.empty()) throw Error(jsonl_path, "", "no entries");
  return out;
}

StereoCodes encode_stereo_wav(const std::string& wav_path, const mimi::MimiModel& codec) {
  if (!fs::exists(wav_path)) throw Error(wav_path, "", "audio file not found");
  io::Audio a = io::read_audio(wav_path);
  if (a.channels != 2)
    throw Error(wav_path, "", "expected a stereo file (channel 0 = Moshi, channel 1 = user), got " +
                                  std::to_string(a.channels) + " channel(s)");
  c10::NoGradGuard no_grad;
  auto encode = [&](int ch) {
    std::vector<float> x = io::to_mono(a, ch, wav_path);
    if (a.sample_rate != codec.config().sample_rate)
      x = io::resample(x, 1, a.sample_rate, codec.config().sample_rate, io::ResampleQuality::VeryHigh, wav_path);
    at::Tensor t = at::from_blob(x.data(), {1, 1, static_cast<int64_t>(x.size())}, at::kFloat).clone();
    return codec.encode(t).squeeze(0).to(at::kLong).contiguous();  // [K, T]
  };
  return {encode(0), encode(1)};
}

at::Tensor lm_layout(const StereoCodes& c, int64_t text_token) {
  const int64_t T = c.moshi.size(1);
  at::Tensor text = at::full({1, T}, text_token, at::kLong);
  return at::cat({text, c.moshi, c.user}, 0);
}

namespace {

// FNV-1a, stable across builds and platforms (std::hash is not).
uint64_t fnv1a(const std::string& s) {
  uint64_t h = 1469598103934665603ULL;
  for (unsigned char ch : s) {
    h ^= ch;
    h *= 1099511628211ULL;
  }
  return h;
}

std::string cache_path(const std::string& cache_dir, const std::string& wav, const std::string& codec_id, int K) {
  struct stat st {};
  std::string key = fs::absolute(wav).lexically_normal().string() + "|" + codec_id + "|K" + std::to_string(K);
  if (::stat(wav.c_str(), &st) == 0)
    key += "|" + std::to_string(st.st_size) + "|" + std::to_string(st.st_mtim.tv_sec) + "." + std::to_string(st.st_mtim.tv_nsec);
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(fnv1a(key)));
  return (fs::path(cache_dir) / (fs::path(wav).stem().string() + "-" + hex + ".codes.safetensors")).string();
}

}  // namespace

JsonlDataset::JsonlDataset(const std::string& jsonl_path, const mimi::MimiModel& codec, const JsonlDatasetOptions& opt)
    : entries_(read_finetune_jsonl(jsonl_path)), window_(opt.window) {
  if (!opt.cache_dir.empty()) make_output_dir(opt.cache_dir, "--codes-cache");
  const int K = codec.config().num_codebooks;
  for (const auto& e : entries_) {
    if (!fs::exists(e.path))
      throw Error(e.path, "", "audio file not found (listed in " + jsonl_path + " line " + std::to_string(e.line) + ")");
    StereoCodes sc;
    const std::string cp = opt.cache_dir.empty() ? "" : cache_path(opt.cache_dir, e.path, opt.codec_id, K);
    if (!cp.empty() && fs::exists(cp)) {
      // A cache entry is only a shortcut: one that cannot be read or does not hold codes of this
      // codec (cut short, edited, another file's) is encoded again and replaced.
      try {
        auto m = nn::load_tensors(cp);
        const int64_t bins = codec.config().quantizer.bins;
        auto codes_ok = [&](const char* k) {
          auto it = m.find(k);
          if (it == m.end()) return false;
          const at::Tensor& t = it->second;
          return t.scalar_type() == at::kLong && t.dim() == 2 && t.size(0) == K && t.size(1) > 0 &&
                 t.min().item<int64_t>() >= 0 && t.max().item<int64_t>() < bins;
        };
        if (codes_ok("moshi") && codes_ok("user") && m["moshi"].size(1) == m["user"].size(1)) {
          sc = {m["moshi"], m["user"]};
          ++cached_;
        }
      } catch (const Error&) {
      }
    }
    if (!sc.moshi.defined()) {
      sc = encode_stereo_wav(e.path, codec);
      ++encoded_;
      if (!cp.empty())
        nn::save_tensors(cp, {{"moshi", sc.moshi}, {"user", sc.user}},
                         {{"source", e.path}, {"codec", opt.codec_id}});
    }
    // moshi-finetune reads `duration` seconds of each file; the codes are cut to match.
    const int64_t listed = static_cast<int64_t>(std::ceil(e.duration * codec.config().frame_rate));
    at::Tensor codes = lm_layout(sc, opt.text_token);
    // A listed duration beyond the audio (one frame of rounding allowed) is a jsonl that does not
    // describe its files: said, not padded silently.
    if (listed > codes.size(1) + 1) {
      char listed_s[40], audio_s[40];
      std::snprintf(listed_s, sizeof listed_s, "%g", e.duration);
      std::snprintf(audio_s, sizeof audio_s, "%.2f", static_cast<double>(codes.size(1)) / codec.config().frame_rate);
      throw Error(jsonl_path, "line " + std::to_string(e.line),
                  std::string("\"duration\" is ") + listed_s + " s, but " + e.path + " holds " + audio_s + " s of audio");
    }
    if (listed < codes.size(1)) codes = codes.narrow(1, 0, listed).contiguous();
    const std::size_t fi = files_.size();
    files_.push_back(codes);
    const int64_t T = codes.size(1);
    if (window_ <= 0) {
      windows_.emplace_back(fi, 0);
    } else {
      for (int64_t s = 0; s < T; s += window_) windows_.emplace_back(fi, s);
    }
  }
}

at::Tensor JsonlDataset::window(int64_t i) const {
  check_internal(i >= 0 && i < size(), "JsonlDataset::window: index out of range");
  const auto& [fi, s] = windows_[static_cast<std::size_t>(i)];
  const at::Tensor& f = files_[fi];
  if (window_ <= 0) return f;
  at::Tensor w = at::full({f.size(0), window_}, -1, at::kLong);  // -1: zero_padding, no target
  const int64_t n = std::min(window_, f.size(1) - s);
  w.narrow(1, 0, n).copy_(f.narrow(1, s, n));
  return w;
}

at::Tensor JsonlDataset::batch(const std::vector<int64_t>& indices) const {
  std::vector<at::Tensor> ws;
  for (int64_t i : indices) ws.push_back(window(i));
  return at::stack(ws, 0);
}

}  // namespace mtt::experiments
