// The hostile-input corpus of the apps (tests/fixtures/hostile_cases, issue 15): malformed specs,
// training configs, jsonl data, sweep dirs, plot inputs and out-of-range flags. cases.txt lists,
// per case, the app, the arguments, the exit status due and a fragment of the one error line.
// Every failing case must exit with that status (never 70, never a signal, never a hang: each run
// is bounded by `timeout 60`) and print exactly one stderr line "<app>: ... <fragment> ...".
//
// Arguments are sh words with these substitutions: @D the corpus folder; @T a fresh temporary
// folder of the case; @C/<path> a fresh copy of <path> of the corpus inside @T (for cases that
// write, e.g. a sweep resumed in a folder of the corpus); @G inputs generated once per build
// (a WAV, a file that is not audio: see generated_dir()).
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "test_util.h"

namespace {

namespace fs = std::filesystem;
using mtt::test::app_path;
using mtt::test::run_command;

struct Case {
  std::string name, app, fragment, args;
  int exit = 0;
  int line = 0;
};

fs::path corpus() { return mtt::test::fixtures_dir() / "hostile_cases"; }

std::string trim(const std::string& s) {
  const auto b = s.find_first_not_of(" \t");
  const auto e = s.find_last_not_of(" \t\r");
  return b == std::string::npos ? "" : s.substr(b, e - b + 1);
}

// "name | app | exit | fragment | args", '#' comments and blank lines skipped.
std::vector<Case> load_cases() {
  std::vector<Case> out;
  std::ifstream in(corpus() / "cases.txt");
  std::string text;
  int line = 0;
  while (std::getline(in, text)) {
    ++line;
    if (trim(text).empty() || trim(text)[0] == '#') continue;
    text = trim(text);
    if (text.size() >= 2 && text.compare(text.size() - 2, 2, " |") == 0) text += " ";  // no arguments
    std::vector<std::string> f;
    std::size_t start = 0;
    for (int i = 0; i < 4; ++i) {
      const auto bar = text.find(" | ", start);
      if (bar == std::string::npos) break;
      f.push_back(trim(text.substr(start, bar - start)));
      start = bar + 3;
    }
    f.push_back(trim(text.substr(start)));
    Case c;
    c.line = line;
    if (f.size() != 5) {
      c.name = "malformed_line_" + std::to_string(line);
      c.exit = -1;
    } else {
      c.name = f[0];
      c.app = f[1];
      c.exit = std::atoi(f[2].c_str());
      c.fragment = f[3];
      c.args = f[4];
    }
    out.push_back(c);
  }
  return out;
}

std::string read(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// A 16-bit WAV at 24 kHz, mono or stereo (the second channel an octave up).
void write_tone(const fs::path& p, double seconds, int channels = 1) {
  mtt::test::write_tone_wav(p, seconds, {24000, channels});
}

// Inputs made with the built apps, once per build dir (ctest runs the cases as separate
// processes, two at a time): made in a private folder and renamed into place.
fs::path generated_dir() {
  // The folder's suffix names the set of files (a build dir may hold an older set).
  const fs::path dir = fs::path(MTT_BINARY_DIR) / "tests" / "hostile_cases_generated.2";
  if (fs::exists(dir / "done")) return dir;
  const fs::path tmp = dir.string() + ".tmp." + std::to_string(::getpid());
  fs::remove_all(tmp);
  fs::create_directories(tmp);
  write_tone(tmp / "in.wav", 0.3);
  std::ofstream(tmp / "not_audio.wav") << "this is not audio\n";
  // moshi-finetune data: a stereo exchange of 1 s, listed with its duration and with one far beyond it.
  write_tone(tmp / "stereo.wav", 1.0, 2);
  std::ofstream(tmp / "ok.jsonl") << "{\"path\": \"stereo.wav\", \"duration\": 1.0}\n";
  std::ofstream(tmp / "beyond.jsonl") << "{\"path\": \"stereo.wav\", \"duration\": 1.0}\n"
                                      << "{\"path\": \"stereo.wav\", \"duration\": 100}\n";
  std::ofstream(tmp / "done") << "ok\n";
  std::error_code ec;
  fs::rename(tmp, dir, ec);  // another process may have won: its copy is as good
  if (ec) fs::remove_all(tmp, ec);
  return dir;
}

std::string replace_all(std::string s, const std::string& from, const std::string& to) {
  for (std::size_t p = 0; (p = s.find(from, p)) != std::string::npos; p += to.size()) s.replace(p, from.size(), to);
  return s;
}

// Substitutes @C/<path>, @D, @G and @T in a case's arguments (copying what @C names).
std::string expand(const std::string& args, const fs::path& tmp) {
  std::string out;
  std::size_t pos = 0;
  while (pos < args.size()) {
    const auto at = args.find("@C/", pos);
    if (at == std::string::npos) {
      out += args.substr(pos);
      break;
    }
    out += args.substr(pos, at - pos);
    auto end = args.find_first_of(" '\"", at);
    if (end == std::string::npos) end = args.size();
    const std::string rel = args.substr(at + 3, end - at - 3);
    const fs::path dst = tmp / rel;
    fs::create_directories(dst.parent_path());
    fs::copy(corpus() / rel, dst, fs::copy_options::recursive);
    out += dst.string();
    pos = end;
  }
  out = replace_all(out, "@D", corpus().string());
  out = replace_all(out, "@T", tmp.string());
  if (out.find("@G") != std::string::npos) out = replace_all(out, "@G", generated_dir().string());
  return out;
}

class HostileCases : public ::testing::TestWithParam<Case> {};

TEST_P(HostileCases, OneLineErrorWithTheDueExitStatus) {
  const Case& c = GetParam();
  SCOPED_TRACE("tests/fixtures/hostile_cases/cases.txt:" + std::to_string(c.line) + " " + c.name);
  ASSERT_GE(c.exit, 0) << "malformed line (expected 'name | app | exit | fragment | args')";
  const fs::path app = app_path(c.app);
  if (!fs::exists(app)) GTEST_SKIP() << c.app << " not built";
  mtt::test::TempDir tmp;
  const std::string cmd = "cd '" + corpus().string() + "' && OMP_NUM_THREADS=1 timeout 60 '" + app.string() + "' " +
                          expand(c.args, tmp.path());
  const auto r = run_command(cmd + " < /dev/null");
  EXPECT_EQ(r.status, c.exit) << cmd << "\nstderr: " << r.err;
  EXPECT_EQ(r.err.find("internal error"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find(c.fragment), std::string::npos) << "fragment '" << c.fragment << "' not in: " << r.err;
  if (c.exit != 0) {
    // The error is the last line, the only one in the app's name; notes a command printed while
    // it worked (the model it built, say) may come before it.
    std::vector<std::string> lines;
    std::istringstream in(r.err);
    for (std::string l; std::getline(in, l);) lines.push_back(l);
    ASSERT_FALSE(lines.empty());
    EXPECT_EQ(lines.back().rfind(c.app + ": ", 0), 0u) << r.err;
    EXPECT_NE(lines.back().find(c.fragment), std::string::npos) << "not on the error line: " << r.err;
    EXPECT_EQ(std::count_if(lines.begin(), lines.end(), [&](const std::string& l) { return l.rfind(c.app + ": ", 0) == 0; }),
              1)
        << r.err;
  }
}

std::string case_name(const ::testing::TestParamInfo<Case>& info) {
  std::string n;
  for (char ch : info.param.app + "_" + info.param.name) n += std::isalnum(static_cast<unsigned char>(ch)) ? ch : '_';
  return n;
}

INSTANTIATE_TEST_SUITE_P(Corpus, HostileCases, ::testing::ValuesIn(load_cases()), case_name);

// The corpus itself: every case has a unique name and every file of the corpus is used by one.
TEST(HostileCasesCorpus, NamesAreUniqueAndEveryFileIsUsed) {
  const auto cases = load_cases();
  EXPECT_GE(cases.size(), 100u);
  std::set<std::string> names;
  std::string all_args;
  for (const auto& c : cases) {
    EXPECT_TRUE(names.insert(c.app + "/" + c.name).second) << "duplicate case " << c.name;
    all_args += " " + c.args + " ";
  }
  for (const auto& e : fs::recursive_directory_iterator(corpus())) {
    if (!e.is_regular_file()) continue;
    const std::string rel = fs::relative(e.path(), corpus()).string();
    if (rel == "cases.txt" || rel == "README.md" || rel.find("sweepdirs/") == 0) continue;
    EXPECT_TRUE(all_args.find(" " + rel + " ") != std::string::npos || all_args.find("/" + rel + " ") != std::string::npos)
        << rel << " is in no case";
  }
}

}  // namespace
