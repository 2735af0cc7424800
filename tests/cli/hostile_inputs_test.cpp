// The hostile input corpus in tests/fixtures/hostile_inputs/ (issue 15): YAML specs, plot inputs
// and audio that once crashed, hung, ate memory or left as exit 70, each run through its app with
// the expected exit status and message fragment of the README table there. This file generates
// the corpus (hostile_inputs() below); the files are committed so that the fuzz targets
// (scripts/fuzz.sh) seed from them. After a change, regenerate with
//   MTT_REGENERATE_HOSTILE=1 <build>/tests/test_cli --gtest_filter='HostileInputs.*'
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include "core/atomic_file.h"
#include "test_util.h"

namespace {

namespace fs = std::filesystem;
using namespace std::string_literals;

fs::path corpus_dir() { return mtt::test::fixtures_dir() / "hostile_inputs"; }

std::string alias_bomb() {
  // 10 levels of ten aliases each: 10^9 values once expanded, 300 bytes on disk.
  std::string s = "name: bomb\nexperiment: gating\nbase:\n  l0: &l0 [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]\n";
  for (int l = 1; l < 10; ++l) {
    s += "  l" + std::to_string(l) + ": &l" + std::to_string(l) + " [";
    for (int k = 0; k < 10; ++k) s += (k ? ", *l" : "*l") + std::to_string(l - 1);
    s += "]\n";
  }
  return s;
}

// A float32 WAV of `n` mono samples at 16 kHz, sample `bad` set to NaN.
std::string float_wav_with_nan(int n, int bad) {
  std::string b = "RIFF";
  auto u32 = [&](uint32_t v) { b.append(reinterpret_cast<const char*>(&v), 4); };
  auto u16 = [&](uint16_t v) { b.append(reinterpret_cast<const char*>(&v), 2); };
  u32(36 + 4 * n);
  b += "WAVEfmt ";
  u32(16), u16(3), u16(1), u32(16000), u32(64000), u16(4), u16(32);
  b += "data";
  u32(4 * n);
  for (int i = 0; i < n; ++i) {
    const float x = i == bad ? NAN : 0.25f * std::sin(0.05f * static_cast<float>(i));
    b.append(reinterpret_cast<const char*>(&x), 4);
  }
  return b;
}

std::map<std::string, std::string> hostile_inputs() {
  std::map<std::string, std::string> e;
  // YAML experiment specs (ttt-sweep run).
  e["alias_bomb.yaml"] = alias_bomb();
  e["alias_self.yaml"] = "name: self\nexperiment: gating\nbase: &a {seed: 0, again: *a}\n";
  e["invalid_utf8.yaml"] = "name: latin1\nexperiment: gating\ndescription: caf\xe9 cr\xe8me\nbase: {seed: 0}\n";
  // yaml-cpp turns the escape \N (U+0085) into the lone byte 0x85.
  e["escape_to_bad_utf8.yaml"] = "name: escape\nexperiment: gating\nbase: {tag: \"next\\Nline\"}\n";
  // Plot inputs (ttt-plot sweep).
  e["overflow_1e999.json"] = R"({"axes":["a"],"metrics":["m"],"rows":[{"a":1,"m":1e999}]})";
  std::string hues = "id,x,h,y\n", cats = "id,x,y\n";
  for (int i = 0; i <= 100; ++i) hues += "p" + std::to_string(i) + ",1,seed" + std::to_string(i) + ",2\n";
  for (int i = 0; i <= 1000; ++i) cats += "p" + std::to_string(i) + ",name" + std::to_string(i) + ",2\n";
  e["many_hues.csv"] = hues;
  e["many_categories.csv"] = cats;
  e["nonfinite_x.csv"] = "id,x,y\np0,1,1\np1,nan,2\np2,inf,3\np3,2,4\n";
  // Audio (ttt-infer).
  e["nan_sample.wav"] = float_wav_with_nan(4000, 1234);
  return e;
}

struct Row {
  std::string file, command, fragment;
  int status = -1;
};

// Rows "| `file` | `command` | status | `fragment` |" of the README table.
std::vector<Row> readme_table() {
  std::ifstream in(corpus_dir() / "README.md");
  std::vector<Row> rows;
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("| `", 0) != 0) continue;
    std::vector<std::string> cells;
    std::stringstream ss(line.substr(1));
    std::string c;
    while (std::getline(ss, c, '|')) {
      const auto a = c.find_first_not_of(" `"), b = c.find_last_not_of(" `");
      cells.push_back(a == std::string::npos ? "" : c.substr(a, b - a + 1));
    }
    if (cells.size() < 4) continue;
    rows.push_back({cells[0], cells[1], cells[3], std::atoi(cells[2].c_str())});
  }
  return rows;
}

std::string replace_all(std::string s, const std::string& from, const std::string& to) {
  for (std::size_t p = s.find(from); p != std::string::npos; p = s.find(from, p + to.size())) s.replace(p, from.size(), to);
  return s;
}

}  // namespace

TEST(HostileInputs, CommittedFilesMatchTheGenerator) {
  const bool regenerate = std::getenv("MTT_REGENERATE_HOSTILE") != nullptr;
  const auto entries = hostile_inputs();
  for (const auto& [name, bytes] : entries) {
    const fs::path p = corpus_dir() / name;
    if (regenerate) {
      fs::create_directories(p.parent_path());
      mtt::write_file_atomic(p.string(), bytes);
    }
    ASSERT_TRUE(fs::exists(p)) << p << " missing: regenerate (see the top of this file)";
    EXPECT_EQ(mtt::read_file(p.string()), bytes) << p << " differs from the generator";
  }
  std::set<std::string> listed, on_disk;
  for (const auto& r : readme_table()) listed.insert(r.file);
  for (const auto& d : fs::directory_iterator(corpus_dir()))
    if (d.path().filename() != "README.md") on_disk.insert(d.path().filename().string());
  EXPECT_EQ(listed, on_disk);
  EXPECT_EQ(on_disk.size(), entries.size());
}

// Every file through its app: the status and one line holding the fragment (or, for exit 0, the
// fragment on stdout); never a signal, never 70.
TEST(HostileInputs, EveryFileGivesItsStatusAndMessage) {
  const auto rows = readme_table();
  ASSERT_GE(rows.size(), 9u) << "README table not found or too short";
  for (const auto& r : rows) {
    SCOPED_TRACE(r.file);
    const std::string app = r.command.substr(0, r.command.find(' '));
    const fs::path bin = mtt::test::app_path(app);
    if (!fs::exists(bin)) {
      std::printf("  [skip] %s: %s not built\n", r.file.c_str(), app.c_str());
      continue;
    }
    mtt::test::TempDir out;
    std::string cmd = replace_all(r.command, "{file}", "'" + (corpus_dir() / r.file).string() + "'");
    cmd = replace_all(cmd, "{out}", "'" + out.path().string() + "'");
    cmd = bin.string() + cmd.substr(app.size());
    const auto res = mtt::test::run_command("timeout 60 " + cmd);
    EXPECT_EQ(res.status, r.status) << cmd << "\n" << res.err;
    std::string last = res.err;
    while (!last.empty() && last.back() == '\n') last.pop_back();
    last = last.substr(last.rfind('\n') == std::string::npos ? 0 : last.rfind('\n') + 1);
    if (r.status >= 2) {
      EXPECT_EQ(last.rfind(app + ": ", 0), 0u) << res.err;
      EXPECT_NE(last.find(r.fragment), std::string::npos) << "'" << r.fragment << "' not in: " << last;
      EXPECT_NE(last.find(r.file), std::string::npos) << "the message names the file: " << last;
    } else {
      EXPECT_NE(res.out.find(r.fragment), std::string::npos) << res.out;
    }
  }
}
