#include "experiments/speech_set.h"

#include <spawn.h>
#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>

#include "core/atomic_file.h"
#include "core/output_set.h"
#include "core/error.h"
#include "io/audio.h"

extern char** environ;

namespace mtt::experiments {

namespace fs = std::filesystem;

namespace {

const std::vector<std::string>& questions() {
  static const std::vector<std::string> q = {
      "Hello, how are you today?",         "What time is it right now?",
      "Can you tell me a short story?",    "Where is the nearest train station?",
      "What is the weather like outside?", "Could you help me with my homework?",
      "Do you like listening to music?",   "What did you have for breakfast?",
      "How far away is the moon?",         "Which book should I read next?"};
  return q;
}

const std::vector<std::string>& answers() {
  static const std::vector<std::string> a = {
      "I am doing well, thank you for asking.",   "It is a little past three in the afternoon.",
      "Once upon a time a cat found a red ball.", "Walk two blocks north and turn left.",
      "It is sunny with a light breeze.",         "Of course, let us start with the first question.",
      "Yes, I enjoy calm piano music.",           "I had some toast and a cup of tea.",
      "About three hundred eighty thousand kilometres.", "Try a good mystery novel this week."};
  return a;
}

// Runs argv without a shell (the text is an argument, never parsed); returns the exit status and
// what the process wrote on stderr (espeak-ng reports a failed write there and still exits 0).
int run_process(const std::vector<std::string>& argv, std::string* err) {
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) return -1;
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, STDOUT_FILENO, "/dev/null", O_WRONLY, 0);
  posix_spawn_file_actions_adddup2(&fa, fds[1], STDERR_FILENO);
  pid_t pid = 0;
  const int rc = posix_spawn(&pid, argv[0].c_str(), &fa, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  ::close(fds[1]);
  char buf[4096];
  ssize_t n;
  while (rc == 0 && (n = ::read(fds[0], buf, sizeof buf)) != 0) {
    if (n < 0) {
      if (errno == EINTR) continue;
      break;
    }
    if (err->size() < 65536) err->append(buf, static_cast<std::size_t>(n));
  }
  ::close(fds[0]);
  if (rc != 0) return -1;
  int st = 0;
  if (waitpid(pid, &st, 0) < 0) return -1;
  return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

std::string first_line(const std::string& s) {
  const auto a = s.find_first_not_of(" \t\r\n");
  if (a == std::string::npos) return "";
  return s.substr(a, s.find('\n', a) == std::string::npos ? std::string::npos : s.find('\n', a) - a);
}

// espeak-ng -> mono float samples at 24 kHz.
std::vector<float> synthesise(const std::string& exe, const std::string& voice, int speed, const std::string& text,
                              const std::string& tmp_wav) {
  struct Remove {  // the temporary goes on every path out, errors included
    const std::string& p;
    ~Remove() {
      std::error_code ec;
      fs::remove(p, ec);
    }
  } remove{tmp_wav};
  std::string err;
  const int st = run_process({exe, "-v", voice, "-s", std::to_string(speed), "-w", tmp_wav, text}, &err);
  if (st != 0 || !fs::exists(tmp_wav))
    throw Error(exe, "", "failed (exit " + std::to_string(st) + ") synthesising \"" + text + "\" with voice " + voice +
                             (err.empty() ? "" : ": " + first_line(err)));
  // A write error is only on its stderr ("ftruncate() failed: File too large"): the WAV is cut.
  std::string lower = err;
  for (char& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (lower.find("fail") != std::string::npos || lower.find("error") != std::string::npos)
    throw Error(tmp_wav, "", "espeak-ng could not write it: " + first_line(err));
  std::error_code ec;
  if (fs::file_size(tmp_wav, ec) == 0 && !ec) {
    // espeak-ng exits 0 when its own write fails: a full disk, not bad audio.
    const auto space = fs::space(fs::path(tmp_wav).parent_path(), ec);
    throw Error(tmp_wav, "", "espeak-ng wrote nothing (0 bytes) although it exited 0: the disk is full or the file "
                             "too large (" + (ec ? std::string("free space unknown") : std::to_string(space.available) +
                             " bytes free)"));
  }
  io::Audio a = io::read_audio(tmp_wav);
  std::vector<float> x = io::to_mono(a, -1, tmp_wav);
  if (a.sample_rate != io::kMimiSampleRate) x = io::resample(x, 1, a.sample_rate, io::kMimiSampleRate);
  return x;
}

}  // namespace

std::string find_executable(const std::string& name) {
  if (name.find('/') != std::string::npos) return ::access(name.c_str(), X_OK) == 0 ? name : "";
  const char* path = std::getenv("PATH");
  std::stringstream ss(path ? path : "/usr/local/bin:/usr/bin:/bin");
  std::string dir;
  while (std::getline(ss, dir, ':')) {
    if (dir.empty()) continue;
    std::string p = (fs::path(dir) / name).string();
    if (::access(p.c_str(), X_OK) == 0) return p;
  }
  return "";
}

SpeechSetResult make_speech_set(const SpeechSetOptions& opt) {
  if (opt.out_dir.empty()) throw Error("", "--out", "an output directory is required", ErrorKind::Usage);
  if (opt.n <= 0) throw Error("", "--n", "must be positive", ErrorKind::Usage);
  const std::string exe = find_executable(opt.espeak);
  if (exe.empty())
    throw Error(opt.espeak, "", "not found on PATH: the speech set is synthesised with espeak-ng "
                                "(Debian: apt-get install espeak-ng)");
  // All WAVs and data.jsonl or none (issue 15): written as temporaries, renamed together at the
  // end; a directory this call created is removed again when it fails (if still empty).
  const bool created = make_output_dir(opt.out_dir, "--out");
  struct RemoveIfCreated {
    std::string dir;
    bool armed;
    ~RemoveIfCreated() {
      std::error_code ec;
      if (armed) fs::remove(dir, ec);  // fails, harmlessly, when something else is in it
    }
  } cleanup{opt.out_dir, created};
  OutputSet outputs;
  SpeechSetResult res;
  std::mt19937_64 rng(opt.seed * 0x9E3779B97F4A7C15ULL + 12345);
  // Two clearly different voices: the user and Moshi. espeak-ng variants (+f3 female, +m3 male).
  const std::vector<std::string> user_voices = {"en-us+f3", "en+f2", "en-gb+f4"};
  const std::vector<std::string> moshi_voices = {"en-us+m3", "en+m1", "en-gb+m5"};
  const int sr = io::kMimiSampleRate;
  std::ostringstream jsonl;
  for (int i = 0; i < opt.n; ++i) {
    const auto& q = questions()[rng() % questions().size()];
    const auto& a = answers()[rng() % answers().size()];
    const std::string uv = user_voices[rng() % user_voices.size()];
    const std::string mv = moshi_voices[rng() % moshi_voices.size()];
    const int speed = 150 + static_cast<int>(rng() % 40);
    const std::string tmp = (fs::path(opt.out_dir) / (".espeak-" + std::to_string(::getpid()) + ".wav")).string();
    std::vector<float> user = synthesise(exe, uv, speed, q, tmp);
    std::vector<float> moshi = synthesise(exe, mv, speed, a, tmp);
    // Turn taking: the user starts after 0.2 s, Moshi answers 0.3 s after the user stops.
    const int64_t u0 = sr / 5, m0 = u0 + static_cast<int64_t>(user.size()) + 3 * sr / 10;
    const int64_t frames = m0 + static_cast<int64_t>(moshi.size()) + 3 * sr / 10;
    std::vector<float> stereo(static_cast<size_t>(2 * frames), 0.0f);
    for (size_t t = 0; t < moshi.size(); ++t) stereo[2 * (m0 + t)] = moshi[t];      // channel 0: Moshi
    for (size_t t = 0; t < user.size(); ++t) stereo[2 * (u0 + t) + 1] = user[t];    // channel 1: user
    char name[32];
    std::snprintf(name, sizeof name, "speech_%04d.wav", i);
    const std::string wav = (fs::path(opt.out_dir) / name).string();
    AtomicFile& out = outputs.add(wav);
    out.write(io::encode_wav(wav, stereo, 2, sr));
    out.seal();  // one descriptor at a time, however many exchanges
    const double dur = static_cast<double>(frames) / sr;
    jsonl << nlohmann::json{{"path", name}, {"duration", dur}}.dump() << "\n";
    res.wavs.push_back(wav);
    res.total_seconds += dur;
  }
  res.jsonl = (fs::path(opt.out_dir) / "data.jsonl").string();
  outputs.add(res.jsonl).write(jsonl.str());
  outputs.commit();
  cleanup.armed = false;
  return res;
}

}  // namespace mtt::experiments
