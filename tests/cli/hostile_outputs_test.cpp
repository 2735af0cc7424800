// Hostile outputs and located NaN/Inf across the apps (issue 15): each case of the corpus below
// is a command in a fresh folder with its expected exit status and a fragment of the one-line
// message, and a check that nothing partial is left (no output of a failed command, no
// temporary, devices and FIFOs still devices and FIFOs).
//
// The cases cover: /dev/full (directly and through a link in an output folder), /dev/null, a
// FIFO with a reader, an unwritable folder (procfs refuses even root, unlike chmod 555), a file
// where a folder belongs, a file-size limit (ulimit -f: a full disk without root), two outputs
// naming one file, standard output on /dev/full, and checkpoints with NaN/Inf.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <sstream>

#include "test_util.h"

namespace {

namespace fs = std::filesystem;
using mtt::test::app_path;
using mtt::test::run_command;
using mtt::test::TempDir;

std::string q(const fs::path& p) { return "'" + p.string() + "'"; }

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

bool is_char_device(const fs::path& p) {
  struct stat st {};
  return ::stat(p.c_str(), &st) == 0 && S_ISCHR(st.st_mode);
}
bool is_a_fifo(const fs::path& p) {
  struct stat st {};
  return ::stat(p.c_str(), &st) == 0 && S_ISFIFO(st.st_mode);
}

// Names in a folder, sorted (".tmp." temporaries would show here).
std::vector<std::string> entries(const fs::path& dir) {
  std::vector<std::string> v;
  if (!fs::exists(dir)) return v;
  for (const auto& e : fs::directory_iterator(dir)) v.push_back(e.path().filename().string());
  std::sort(v.begin(), v.end());
  return v;
}

// A 16-bit WAV at 16 kHz, mono or stereo.
void write_tone(const fs::path& p, double seconds, int channels = 1) {
  mtt::test::write_tone_wav(p, seconds, {16000, channels});
}

// Overwrites element `index` of tensor `name` (F32) in a safetensors file with `value`.
void poke_f32(const fs::path& file, const std::string& name, uint64_t index, float value) {
  std::fstream f(file, std::ios::in | std::ios::out | std::ios::binary);
  uint64_t n = 0;
  f.read(reinterpret_cast<char*>(&n), 8);
  std::string header(n, '\0');
  f.read(header.data(), static_cast<std::streamsize>(n));
  const auto h = nlohmann::json::parse(header);
  ASSERT_EQ(h.at(name).at("dtype"), "F32") << name;
  const uint64_t begin = h.at(name).at("data_offsets")[0].get<uint64_t>();
  f.seekp(static_cast<std::streamoff>(8 + n + begin + 4 * index));
  f.write(reinterpret_cast<const char*>(&value), 4);
}

struct Case {
  std::string name;
  std::function<std::string(const fs::path& dir)> command;  // run in a fresh folder `dir`
  int status;
  std::string fragment;  // in stderr (exit != 0) or stdout (exit 0/1)
  std::function<void(const fs::path& dir)> check = {};  // afterwards: nothing partial
  std::function<std::string()> skip = {};  // a reason to skip, "" to run
};

void run_case(const Case& c) {
  SCOPED_TRACE(c.name);
  if (c.skip) {
    const std::string why = c.skip();
    if (!why.empty()) {
      std::printf("  [skip] %s: %s\n", c.name.c_str(), why.c_str());
      return;
    }
  }
  TempDir dir;
  const std::string cmd = c.command(dir.path());
  const auto r = run_command(cmd);
  EXPECT_EQ(r.status, c.status) << cmd << "\nstderr: " << r.err;
  if (c.status >= 2) {
    // The error is the last line of stderr (ttt-infer logs its model and gates before it): the
    // app's name first, the fragment in it, and said once.
    std::string last = r.err;
    while (!last.empty() && last.back() == '\n') last.pop_back();
    last = last.substr(last.rfind('\n') == std::string::npos ? 0 : last.rfind('\n') + 1);
    const std::string app = last.substr(0, last.find(':') + 1);
    EXPECT_EQ(last.rfind("ttt-", 0), 0u) << r.err;
    EXPECT_NE(last.find(c.fragment), std::string::npos) << "'" << c.fragment << "' not in: " << last;
    std::size_t said = 0;
    for (std::size_t p = r.err.find(app); p != std::string::npos; p = r.err.find(app, p + 1)) said += p == 0 || r.err[p - 1] == '\n';
    EXPECT_EQ(said, 1u) << r.err;
  } else {
    EXPECT_NE(r.out.find(c.fragment), std::string::npos) << "'" << c.fragment << "' not in stdout";
  }
  for (const auto& e : entries(dir.path())) EXPECT_EQ(e.find(".tmp."), std::string::npos) << "temporary left: " << e;
  if (c.check) c.check(dir.path());
}

std::string no_dev_full() { return is_char_device("/dev/full") ? "" : "no /dev/full"; }

TEST(HostileOutputs, Inspect) {
  const std::string inspect = app_path("ttt-inspect").string();
  if (!fs::exists(inspect)) GTEST_SKIP() << "ttt-inspect not built";
  // A tiny f32 checkpoint with NaN and Inf placed in two tensors.
  TempDir ck;
  const fs::path nan_ck = ck / "nan.safetensors";
  ASSERT_LE(run_command(inspect + " --tiny --dtype f32 --save " + q(nan_ck) + " >/dev/null").status, 1);  // 1: findings
  ASSERT_TRUE(fs::exists(nan_ck));
  poke_f32(nan_ck, "text_linear.weight", 5, NAN);
  poke_f32(nan_ck, "text_linear.weight", 9, INFINITY);
  poke_f32(nan_ck, "out_norm.alpha", 0, -INFINITY);

  const std::vector<Case> cases = {
      {"stdout on /dev/full", [&](const fs::path&) { return inspect + " --tiny --json > /dev/full"; }, 2,
       "<stdout>: write failed: No space left on device", {}, no_dev_full},
      {"--save through a link to /dev/full",
       [&](const fs::path& d) {
         fs::create_symlink("/dev/full", d / "full.safetensors");
         return inspect + " --tiny --save " + q(d / "full.safetensors");
       },
       2, "full.safetensors: write failed: No space left on device",
       [](const fs::path& d) {
         EXPECT_TRUE(fs::is_symlink(d / "full.safetensors"));
         EXPECT_EQ(entries(d), (std::vector<std::string>{"full.safetensors"}));
       },
       no_dev_full},
      {"--save into procfs", [&](const fs::path&) { return inspect + " --tiny --save /proc/self/x.safetensors"; }, 2,
       "/proc/self/x.safetensors: cannot create output"},
      {"NaN and Inf located in the table", [&](const fs::path&) { return inspect + " " + q(nan_ck); }, 1,
       "text_linear.weight (1 NaN, 1 Inf, first at flat index 5)"},
      {"NaN and Inf located in --json",
       [&](const fs::path& d) {
         return inspect + " " + q(nan_ck) + " --json > " + q(d / "r.json") + "; s=$?; cat " + q(d / "r.json") + "; exit $s";
       },
       1, "\"first_index\": 5",
       [](const fs::path& d) {
         const auto j = nlohmann::json::parse(slurp(d / "r.json"));
         const auto& nf = j["inventory"]["nonfinite"];
         ASSERT_EQ(nf.size(), 2u);
         std::map<std::string, nlohmann::json> by;
         for (const auto& e : nf) by[e["name"]] = e;
         EXPECT_EQ(by["text_linear.weight"]["nan"], 1);
         EXPECT_EQ(by["text_linear.weight"]["inf"], 1);
         EXPECT_EQ(by["text_linear.weight"]["first_nan_index"], 5);
         EXPECT_EQ(by["text_linear.weight"]["first_inf_index"], 9);
         EXPECT_EQ(by["out_norm.alpha"]["first_index"], 0);
         EXPECT_TRUE(by["out_norm.alpha"]["first_nan_index"].is_null());
       }},
  };
  for (const auto& c : cases) run_case(c);
}

TEST(HostileOutputs, Infer) {
  const std::string infer = app_path("ttt-infer").string();
  if (!fs::exists(infer)) GTEST_SKIP() << "ttt-infer not built";
  TempDir in_dir;
  const fs::path in = in_dir / "in.wav";
  write_tone(in, 0.3);
  const std::string base = infer + " --tiny --greedy --no-progress --threads 1 " + q(in) + " ";
  auto only = [](std::vector<std::string> names) {
    return [names](const fs::path& d) { EXPECT_EQ(entries(d), names); };
  };
  const std::vector<Case> cases = {
      {"output /dev/full", [&](const fs::path&) { return base + "/dev/full"; }, 2,
       "/dev/full: write failed: No space left on device", {}, no_dev_full},
      {"--stats-json on /dev/full: no WAV left",
       [&](const fs::path& d) { return base + q(d / "out.wav") + " --stats-json /dev/full"; }, 2, "/dev/full: write failed",
       only({}), no_dev_full},
      {"--stereo-output unwritable: refused before the model runs",
       [&](const fs::path& d) { return base + q(d / "out.wav") + " --stereo-output /proc/self/st.wav"; }, 2,
       "/proc/self/st.wav: cannot create output", only({})},
      {"--stereo-output is the output",
       [&](const fs::path& d) { return base + q(d / "out.wav") + " --stereo-output " + q(d / "." / "out.wav"); }, 64,
       "the same file as output", only({})},
      {"output /dev/null, stats beside it",
       [&](const fs::path& d) { return base + "/dev/null --stats-json " + q(d / "s.json"); }, 0, "wrote /dev/null",
       [](const fs::path& d) {
         EXPECT_TRUE(is_char_device("/dev/null"));
         EXPECT_EQ(entries(d), (std::vector<std::string>{"s.json"}));
       }},
      {"output a FIFO read by another process",
       [&](const fs::path& d) {
         ::mkfifo((d / "fifo.wav").c_str(), 0600);
         return "(timeout 60 cat " + q(d / "fifo.wav") + " > " + q(d / "got.wav") + " &) ; " + base + q(d / "fifo.wav");
       },
       0, "wrote",
       [](const fs::path& d) {
         EXPECT_TRUE(is_a_fifo(d / "fifo.wav"));
         for (int i = 0; i < 100 && slurp(d / "got.wav").size() < 44; ++i) ::usleep(20000);  // cat may lag
         EXPECT_EQ(slurp(d / "got.wav").substr(0, 4), "RIFF");
       }},
  };
  for (const auto& c : cases) run_case(c);
}

TEST(HostileOutputs, Plot) {
  const std::string plot = app_path("ttt-plot").string();
  if (!fs::exists(plot)) GTEST_SKIP() << "ttt-plot not built";
  const std::string sweep = plot + " sweep " + q(mtt::test::fixtures_dir() / "plot" / "sweep" / "summary.csv") +
                            " --x mini_batch_size --y final_loss -o ";
  const std::vector<Case> cases = {
      {"-o through a link to /dev/full",
       [&](const fs::path& d) {
         fs::create_symlink("/dev/full", d / "full.png");
         return sweep + q(d / "full.png");
       },
       2, "full.png: write failed: No space left on device",
       [](const fs::path& d) { EXPECT_TRUE(fs::is_symlink(d / "full.png")); }, no_dev_full},
      {"-o under a file", [&](const fs::path& d) {
         std::ofstream(d / "file") << "x";
         return sweep + q(d / "file" / "out.png");
       },
       2, "out.png: cannot create output", [](const fs::path& d) { EXPECT_EQ(entries(d), std::vector<std::string>{"file"}); }},
      {"file-size limit: the SVG cut short is an error, not a file",
       [&](const fs::path& d) { return "ulimit -f 4; " + sweep + q(d / "out.svg"); }, 2, "out.svg: the svg driver's output is cut short",
       [](const fs::path& d) { EXPECT_EQ(entries(d), std::vector<std::string>{}); }},
      {"-o a FIFO read by another process",
       [&](const fs::path& d) {
         ::mkfifo((d / "fig.svg").c_str(), 0600);
         return "(timeout 60 cat " + q(d / "fig.svg") + " > " + q(d / "got.svg") + " &) ; " + sweep + q(d / "fig.svg");
       },
       0, "wrote",
       [](const fs::path& d) {
         EXPECT_TRUE(is_a_fifo(d / "fig.svg"));
         std::string got;
         for (int i = 0; i < 100 && (got = slurp(d / "got.svg")).find("</svg>") == std::string::npos; ++i) ::usleep(20000);
         EXPECT_NE(got.find("</svg>"), std::string::npos);
       }},
      {"style on /dev/full", [&](const fs::path&) { return plot + " style > /dev/full"; }, 2, "<stdout>: write failed", {},
       no_dev_full},
  };
  for (const auto& c : cases) run_case(c);
}

TEST(HostileOutputs, Sweep) {
  const std::string sweep = app_path("ttt-sweep").string();
  if (!fs::exists(sweep)) GTEST_SKIP() << "ttt-sweep not built";
  auto no_espeak = [] { return run_command("command -v espeak-ng").status == 0 ? "" : "espeak-ng not installed"; };
  const std::string spec = q(mtt::test::fixtures_dir() / "sweep" / "resume.yaml");
  // A training command on data written into the case's folder: a 1 s stereo exchange, listed fine
  // (ok.jsonl), listed but missing (missing.jsonl), or mono (mono.jsonl).
  auto train = [&](const fs::path& d, const std::string& jsonl) {
    write_tone(d / "a.wav", 1.0, 2);
    write_tone(d / "m.wav", 1.0, 1);
    std::ofstream(d / "ok.jsonl") << "{\"path\": \"a.wav\", \"duration\": 1.0}\n";
    std::ofstream(d / "missing.jsonl") << "{\"path\": \"gone.wav\", \"duration\": 1.0}\n";
    std::ofstream(d / "mono.jsonl") << "{\"path\": \"m.wav\", \"duration\": 1.0}\n";
    std::ofstream(d / "c.yaml") << "max_steps: 2\nbatch_size: 1\nduration_sec: 1\n";
    return sweep + " train --config " + q(d / "c.yaml") + " --data " + q(d / jsonl) + " --tiny-mimi --no-progress";
  };
  const std::vector<Case> cases = {
      {"data speech --out is a file",
       [&](const fs::path& d) {
         std::ofstream(d / "f") << "x";
         return sweep + " data speech --n 1 --out " + q(d / "f");
       },
       2, "--out: exists and is not a directory"},
      {"data speech on a full disk (ulimit -f): no WAV, no data.jsonl, no temporary, no folder",
       [&](const fs::path& d) { return "ulimit -f 40; " + sweep + " data speech --n 3 --out " + q(d / "speech"); }, 2,
       "speech", [](const fs::path& d) { EXPECT_FALSE(fs::exists(d / "speech")) << "left: " << entries(d / "speech").size(); },
       no_espeak},
      // ttt-sweep train: a run dir that never reached a checkpoint is not left behind.
      {"train on a listed file that is not there: no run dir",
       [&](const fs::path& d) { return train(d, "missing.jsonl") + " --out " + q(d / "r"); }, 2,
       "audio file not found", [](const fs::path& d) { EXPECT_FALSE(fs::exists(d / "r")); }},
      {"train on a mono file into an empty folder: the folder stays, empty",
       [&](const fs::path& d) {
         fs::create_directory(d / "r");
         return train(d, "mono.jsonl") + " --out " + q(d / "r");
       },
       2, "expected a stereo file", [](const fs::path& d) { EXPECT_EQ(entries(d / "r"), std::vector<std::string>{}); }},
      {"train with its checkpoint cut by the file-size limit: no run dir, no tmp.checkpoint",
       [&](const fs::path& d) { return "ulimit -f 60; " + train(d, "ok.jsonl") + " --out " + q(d / "r"); }, 2,
       "write failed", [](const fs::path& d) { EXPECT_FALSE(fs::exists(d / "r")) << "left: " << entries(d / "r").size(); }},
      {"train --resume on a run dir another command holds",
       [&](const fs::path& d) {
         fs::create_directory(d / "r");
         // flock(1) holds the folder's lock, as a running ttt-sweep train does.
         return "(flock " + q(d / "r") + " sleep 5 &) ; sleep 0.5; " + train(d, "ok.jsonl") + " --resume --out " +
                q(d / "r");
       },
       64, "is in use by another training run", {},
       [] { return run_command("command -v flock").status == 0 ? "" : "flock(1) not installed"; }},
      {"run --out under a file",
       [&](const fs::path& d) {
         std::ofstream(d / "f") << "x";
         return sweep + " run " + spec + " --reduced --no-progress --out " + q(d / "f" / "sub");
       },
       2, "is not a directory"},
  };
  for (const auto& c : cases) run_case(c);
}

}  // namespace
