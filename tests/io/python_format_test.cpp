// Python's own text formats reproduced byte for byte: the references are the files PyYAML wrote in
// the TTT fork's run dirs (tests/data/fork_runs/*/run/args.yaml) and, when a Python with PyYAML is
// configured, Python itself on values chosen to hit every rule (floats, quoting, wrapping, escapes).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <fstream>
#include <random>

#include "core/atomic_file.h"
#include "io/python_format.h"
#include "test_util.h"

namespace mtt::io {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using nlohmann::ordered_json;

// The Python that has PyYAML: the torch venv or the reference venv ("" when neither does).
std::string python_with_yaml() {
  for (const std::string& py : {std::string(MTT_PYTHON), std::string(MTT_REF_PYTHON)}) {
    if (py.empty() || !fs::exists(py)) continue;
    if (test::run_command(py + " -c 'import yaml, json'").status == 0) return py;
  }
  return "";
}

// yaml's loader over a JSON text (a subset of YAML): what the dumps below get as their input.
std::string run_python(const std::string& py, const std::string& script, const std::string& input_json) {
  test::TempDir d;
  write_file_atomic((d / "in.json").string(), input_json);
  write_file_atomic((d / "s.py").string(), script);
  auto r = test::run_command(py + " " + (d / "s.py").string() + " " + (d / "in.json").string());
  EXPECT_EQ(r.status, 0) << r.err;
  return r.out;
}

TEST(PythonFormat, FloatReprRoundTripsAndPicksPythonsLayout) {
  // Round trip and the layout rule hold for any double; Python itself checks the digits below.
  std::mt19937_64 rng(7);
  for (int i = 0; i < 2000; ++i) {
    double v;
    uint64_t bits = rng();
    std::memcpy(&v, &bits, 8);
    if (!std::isfinite(v)) continue;
    const std::string s = python_float_repr(v);
    EXPECT_EQ(std::strtod(s.c_str(), nullptr), v) << s;
  }
  EXPECT_EQ(python_float_repr(1.0), "1.0");
  EXPECT_EQ(python_float_repr(-0.0), "-0.0");
}

TEST(PythonFormat, FloatReprMatchesPython) {
  const std::string py = python_with_yaml();
  if (py.empty()) GTEST_SKIP() << "no Python with PyYAML configured (MTT_PYTHON / MTT_REF_PYTHON)";
  std::vector<double> vals = {0.1, 1e-4, 1e-5, 2e-4, 1e16, 1e15, 123456789012345678.0, 0.002, 10000.0, 1e22,
                              5e-324, 1.7976931348623157e308, 3.0e-3, 0.05, 25.0, 1.5e-7, 100.0, 1.0 / 3.0};
  std::mt19937_64 rng(11);
  std::uniform_real_distribution<double> mant(-10, 10);
  std::uniform_int_distribution<int> ex(-30, 30);
  for (int i = 0; i < 300; ++i) vals.push_back(mant(rng) * std::pow(10.0, ex(rng)));
  json arr = json::array();
  for (double v : vals) arr.push_back(v);
  // repr() of each float, one per line (the JSON input carries the exact doubles: 17 digits).
  std::string in;
  for (double v : vals) {
    char b[40];
    std::snprintf(b, sizeof b, "%.17g", v);
    in += std::string(in.empty() ? "[" : ", ") + b;
  }
  in += "]";
  const std::string out =
      run_python(py, "import json, sys\nfor v in json.load(open(sys.argv[1], encoding='utf-8')): print(repr(float(v)))\n", in);
  std::string ours;
  for (double v : vals) ours += python_float_repr(v) + "\n";
  EXPECT_EQ(ours, out);
}

TEST(PythonFormat, PyYamlDumpReproducesTheForksArgsYaml) {
  // Parsed by yaml-cpp into JSON (types as PyYAML wrote them), dumped again: the same bytes.
  const fs::path runs = test::source_dir() / "tests/data/fork_runs";
  int n = 0;
  for (const char* c : {"ttt_adapters", "ttt_merged", "lora_ttt", "ttt_other", "ttt_mlp3"}) {
    const fs::path f = runs / c / "run" / "args.yaml";
    if (!fs::exists(f)) continue;
    const std::string text = read_file(f.string());
    // The input JSON is built independently of our YAML reader: PyYAML's own types are visible in
    // the text (quoted '' strings, 1.0 floats, bare ints), which this small parser keeps.
    json doc = json::object();
    std::vector<json*> stack = {&doc};
    std::vector<int> indents = {-1};
    std::istringstream in(text);
    std::string line;
    while (std::getline(in, line)) {
      const int ind = static_cast<int>(line.find_first_not_of(' '));
      const auto colon = line.find(": ");
      const bool opens = line.back() == ':';
      const std::string key = line.substr(ind, opens ? line.size() - 1 - ind : colon - ind);
      while (ind <= indents.back()) {
        stack.pop_back();
        indents.pop_back();
      }
      json& parent = *stack.back();
      if (opens) {
        parent[key] = json::object();
        stack.push_back(&parent[key]);
        indents.push_back(ind);
        continue;
      }
      const std::string v = line.substr(colon + 2);
      json value;
      if (v == "null") value = nullptr;
      else if (v == "true" || v == "false") value = v == "true";
      else if (v == "''") value = "";
      else if (v == "{}") value = json::object();
      else if (v.find_first_not_of("0123456789-") == std::string::npos) value = std::stoll(v);
      else if (v.find_first_not_of("0123456789-.e+") == std::string::npos && v.find('.') != std::string::npos)
        value = std::stod(v);
      else value = v;
      parent[key] = value;
    }
    EXPECT_EQ(pyyaml_dump(doc), text) << f;
    ++n;
  }
  if (n == 0) GTEST_SKIP() << "tests/data/fork_runs not present";
}

TEST(PythonFormat, PyYamlDumpAndJsonDumpsMatchPython) {
  const std::string py = python_with_yaml();
  if (py.empty()) GTEST_SKIP() << "no Python with PyYAML configured (MTT_PYTHON / MTT_REF_PYTHON)";
  json doc = {
      {"plain", "middle"},
      {"empty", ""},
      {"looks_int", "123"},
      {"looks_float", "1.0"},
      {"looks_bool", "yes"},
      {"looks_null", "null"},
      {"tilde", "~"},
      {"date", "2024-01-02"},
      {"layers", "1,3"},
      {"colon_space", "a: b"},
      {"colon_end", "a:"},
      {"hash", "a #b"},
      {"lead_dash", "- x"},
      {"lead_star", "*x"},
      {"quote", "it's"},
      {"dquote", "say \"hi\""},
      {"spaces", " lead and trail "},
      {"tab", "a\tb"},
      {"newline", "line1\nline2"},
      {"unicode", "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80"},
      {"long_plain", std::string("word ") + std::string(30, 'x') + " and some more words that go on past eighty columns " +
                         "so that PyYAML has to fold this plain scalar onto the next line"},
      {"long_quoted", std::string(40, 'q').insert(0, 1, '\'') + " then spaces to wrap the single quoted scalar past the width of eighty"},
      {"long_double", std::string(50, 'd') + "\t and a tab forces double quotes while this runs past eighty columns too"},
      {"path", "/tmp/mtt-fork-runs/ttt_adapters/run"},
      {"float", 0.0002},
      {"float_exp", 1e-05},
      {"float_big", 1e16},
      {"int", 42},
      {"neg", -7},
      {"bool", true},
      {"none", nullptr},
      {"empty_map", json::object()},
      {"empty_list", json::array()},
      {"list", {1, "two", 3.5, nullptr}},
      {"list_of_maps", {{{"a", 1}, {"b", "x"}}, {{"c", json::array()}}}},
      {"nested", {{"deeper", {{"deepest", "v"}, {"list", {"a", "b"}}}}, {"k", 0.5}}},
      {"null", "key named null"},
      {"yes", 1},
  };
  const std::string out = run_python(py,
                                     "import json, sys, yaml\n"
                                     "d = json.load(open(sys.argv[1], encoding='utf-8'))\n"
                                     "sys.stdout.write(yaml.dump(d))\n",
                                     doc.dump());
  EXPECT_EQ(pyyaml_dump(doc), out);

  ordered_json line = {{"lr", 1e-05}, {"step", 3}, {"loss", 2.5}, {"tag", "caf\xc3\xa9\n\"x\"\x01"},
                       {"nan", std::nan("")}, {"inf", -INFINITY}, {"list", {1, 2.0, nullptr, true}},
                       {"obj", {{"z", 1}, {"a", 2}}}, {"emoji", "\xf0\x9f\x98\x80"}};
  // json.dumps of the same dict (NaN / -Infinity sent as strings and turned back into floats).
  ordered_json in = line;
  in["nan"] = "NaN";
  in["inf"] = "-Infinity";
  const std::string j = run_python(py,
                                   "import json, sys\n"
                                   "d = json.load(open(sys.argv[1], encoding='utf-8'))\n"
                                   "d['nan'] = float(d['nan']); d['inf'] = float(d['inf'])\n"
                                   "sys.stdout.write(json.dumps(d))\n",
                                   in.dump());
  EXPECT_EQ(python_json_dumps(line), j);
}

}  // namespace
}  // namespace mtt::io
