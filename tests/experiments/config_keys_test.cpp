// Grid points checked against the experiment kinds' declared keys before a sweep runs; sweep
// output dirs read back strictly; the out-dir lock.
#include "experiments/config_keys.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/file.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "core/atomic_file.h"
#include "core/error.h"
#include "experiments/registry.h"
#include "experiments/slurm.h"
#include "experiments/sweep.h"
#include "test_util.h"

namespace mtt::experiments {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// The error of checking `yaml` against its kind (full grid, or reduced), "" if it passes.
std::string check_error(const std::string& yaml, bool reduced = false) {
  try {
    const ExperimentSpec s = parse_spec(yaml, "s.yaml");
    check_grid_configs(s, find_experiment(s.experiment, s.path), expand_grid(s, reduced), reduced);
  } catch (const Error& e) {
    EXPECT_NE(e.exit_status(), kExitInternal);
    return e.what();
  }
  return "";
}

TEST(ConfigKeys, EveryBuiltInKindDeclaresItsKeysAndEveryShippedSpecPasses) {
  for (const auto& k : builtin_experiments()) EXPECT_FALSE(k.config.keys().empty()) << k.name;
  int n = 0;
  for (const auto& e : fs::directory_iterator(test::source_dir() / "experiments")) {
    if (e.path().extension() != ".yaml") continue;
    SCOPED_TRACE(e.path().string());
    const std::string text = read_file(e.path().string());
    EXPECT_EQ(check_error(text, false), "");
    EXPECT_EQ(check_error(text, true), "");
    ++n;
  }
  EXPECT_GE(n, 8);
}

TEST(ConfigKeys, ValuesAreCheckedWhereTheyWereWritten) {
  const std::string head = "name: g\nexperiment: gating\n";
  EXPECT_EQ(check_error(head + "base:\n  seed: 0\n  vocab: 0\n"),
            "s.yaml: base.vocab (line 5): must be an integer in 2..65536, got 0");
  EXPECT_EQ(check_error(head + "base: {seq_len: -5}\n"),
            "s.yaml: base.seq_len (line 3): must be an integer in 2..65536, got -5");
  EXPECT_EQ(check_error(head + "base: {seq_len: [1, 2]}\n"),
            "s.yaml: base.seq_len (line 3): must be an integer in 2..65536, got [1,2]");
  EXPECT_EQ(check_error(head + "grid:\n  optim.lr:\n    - 0.1\n    - nan\n"),
            "s.yaml: grid.optim.lr[1] (line 6): must be a finite number >= 0, got nan");
  EXPECT_EQ(check_error(head + "grid:\n  ttt.initial_gating_alpha: [0.1, .nan]\n"),
            "s.yaml: grid.ttt.initial_gating_alpha[1] (line 4): must be finite");
  EXPECT_EQ(check_error(head + "grid:\n  ttt.initial_gating_alpha: [0.1, nan]\n"),
            "s.yaml: grid.ttt.initial_gating_alpha[1] (line 4): must be a finite number, got nan");
  EXPECT_EQ(check_error(head + "base: {max_steps: 2, bogus_key: 3}\n"), "s.yaml: base.bogus_key (line 3): unknown key");
  EXPECT_EQ(check_error(head + "base:\n  ttt: {bogus: 1}\n"), "s.yaml: base.ttt.bogus (line 4): unknown key");
  EXPECT_EQ(check_error(head + "base:\n  ttt:\n    mini_batch_size: 0\n"),
            "s.yaml: base.ttt.mini_batch_size (line 5): must be an integer in 1..1048576, got 0");
  EXPECT_EQ(check_error(head + "base:\n  ttt: {model_dim: 30, num_heads: 4}\n"),
            "s.yaml: base.ttt.num_heads (line 4): must divide model_dim");
  EXPECT_EQ(check_error(head + "base: {force_alpha: null}\ngrid: {force_alpha: [null, 0.5]}\n"), "");
  EXPECT_EQ(check_error(head + "reduced:\n  base: {vocab: 1}\n", true),
            "s.yaml: reduced.base.vocab (line 4): must be an integer in 2..65536, got 1");
  EXPECT_EQ(check_error(head + "base: {batch_size: 4096, seq_len: 65536, vocab: 65536}\n"),
            "s.yaml: base.seq_len (line 3): batch_size x seq_len x vocab = 4096 x 65536 x 65536 is more than "
            "67108864 values in one tensor");
  // A key this kind does not act on, though a TTT settings key.
  EXPECT_EQ(check_error("name: r\nexperiment: ring-cache\nbase:\n  ttt: {model_dim: 8}\n"),
            "s.yaml: base.ttt.model_dim (line 4): not used by this experiment (it reads ttt.base_lr, "
            "ttt.initial_gating_alpha, ttt.mini_batch_size)");
  EXPECT_EQ(check_error("name: b\nexperiment: batch-state\ngrid: {state_mode: [functional, legacy]}\n"),
            "s.yaml: grid.state_mode[1] (line 3): must be one of: functional, legacy_batch0_copy, "
            "legacy_write_params, got \"legacy\"");
}

TEST(ConfigKeys, SpecShapeErrors) {
  auto spec_error = [](const std::string& yaml) -> std::string {
    try {
      parse_spec(yaml, "s.yaml");
    } catch (const Error& e) {
      return e.what();
    }
    return "";
  };
  EXPECT_EQ(spec_error("name: a\nexperiment: gating\ndescription: [1, 2]\n"), "s.yaml: line 3: 'description' must be a string");
  EXPECT_EQ(spec_error("name: a\nexperiment: gating\nmetrics: [a, [b]]\n"),
            "s.yaml: line 3: 'metrics' must be a list of names (each a non-empty string)");
  EXPECT_EQ(spec_error("name: ../../x\nexperiment: gating\n"),
            "s.yaml: line 1: 'name' must be letters, digits, '.', '_' or '-' (not starting with '.'), got '../../x'");
  EXPECT_EQ(spec_error("name: a\nexperiment: gating\ngrid: {a..b: [1]}\n"),
            "s.yaml: line 3: grid axis 'a..b' is not a dotted key such as ttt.base_lr");
  EXPECT_NE(spec_error("max_steps: 3\noptim: {lr: 1}\n").find("a training config goes to ttt-sweep train --config"),
            std::string::npos);
  EXPECT_EQ(spec_error("name: a\nexperiment: gating\nbase: &b {x: *b}\n"),
            "s.yaml: line 3: an alias inside its own anchor (*b, a cycle)");
}

TEST(ConfigKeys, GridPointCountIsCheckedWithoutOverflow) {
  std::string grid = "name: g\nexperiment: gating\ngrid:\n";
  for (int a = 0; a < 16; ++a) {
    grid += "  k" + std::to_string(a) + ": [";
    for (int v = 0; v < 16; ++v) grid += (v ? "," : "") + std::to_string(v);
    grid += "]\n";
  }
  const ExperimentSpec s = parse_spec(grid, "s.yaml");  // 16^16 = 2^64 points: 0 in 64 bits
  try {
    expand_grid(s, false);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("s.yaml: grid: more than 100000 points (16 axes of 16 x 16 x"),
              std::string::npos)
        << e.what();
  }
}

// A sweep output dir made by a real run of a cheap kind (causal-leak, 2 points).
const char* kLeak = "name: leak\nexperiment: causal-leak\nbase: {seq_len: 4, ttt: {model_dim: 8, num_heads: 2, "
                    "mini_batch_size: 2}}\ngrid: {ttt.eta: [causal, dit]}\n";

SweepOptions quiet(const fs::path& out) {
  SweepOptions o;
  o.out_dir = out.string();
  o.progress = false;
  return o;
}

std::string sweep_error(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return std::to_string(e.exit_status()) + " " + e.what();
  }
  return "";
}

TEST(SweepDir, HandEditedFilesAreInputErrorsNamingFileAndKey) {
  test::TempDir dir;
  const fs::path out = dir / "o";
  const ExperimentSpec spec = parse_spec(kLeak, "leak.yaml");
  run_sweep(spec, quiet(out));
  const std::string sj = (out / "sweep.json").string();
  json j = json::parse(read_file(sj));
  const std::string id0 = j["points"][0]["id"];
  const std::string result = (out / "runs" / id0 / "result.json").string();
  const std::string good_result = read_file(result);

  // result.json: metrics of the wrong type; not an object at all.
  write_file_atomic(result, R"({"metrics": {"max_future_grad": [1]}})");
  EXPECT_EQ(sweep_error([&] { summarize_sweep(out.string()); }),
            "2 " + result + ": metrics.max_future_grad: expected a number or null, got [1]");
  write_file_atomic(result, "17");
  EXPECT_EQ(sweep_error([&] { summarize_sweep(out.string()); }),
            "2 " + result + ": expected a JSON object with metrics and evidence");
  write_file_atomic(result, R"({"metrics": {"max_future_grad": 1e999}})");
  EXPECT_NE(sweep_error([&] { summarize_sweep(out.string()); }).find("2 " + result + ": not valid JSON"),
            std::string::npos);
  // A NaN metric is written as null and read back as NaN (not a type error in the verdict).
  json ok = json::parse(good_result);
  ok["metrics"]["max_future_grad"] = nullptr;
  write_file_atomic(result, ok.dump());
  EXPECT_EQ(sweep_error([&] { summarize_sweep(out.string()); }), "");
  // Evidence of the wrong type for the verdict: the files' fault, exit 2.
  ok["evidence"]["eta"] = json::array({1});
  write_file_atomic(result, ok.dump());
  EXPECT_NE(sweep_error([&] { summarize_sweep(out.string()); })
                .find("2 " + result + ": evidence: a value of the wrong type for the 'causal-leak' verdict"),
            std::string::npos);
  write_file_atomic(result, good_result);

  // sweep.json: wrong types, a point id leading out of the dir, a missing experiment.
  json bad = j;
  bad["points"][1]["index"] = "one";
  write_file_atomic(sj, bad.dump());
  EXPECT_EQ(sweep_error([&] { summarize_sweep(out.string()); }), "2 " + sj + ": points[1].index: expected 1, got \"one\"");
  bad = j;
  bad["points"][0]["id"] = "../../etc";
  write_file_atomic(sj, bad.dump());
  EXPECT_NE(sweep_error([&] { summarize_sweep(out.string()); }).find("2 " + sj + ": points[0].id: expected a run dir name"),
            std::string::npos);
  bad = j;
  bad["spec"] = 3;
  write_file_atomic(sj, bad.dump());
  EXPECT_EQ(sweep_error([&] { summarize_sweep(out.string()); }), "2 " + sj + ": spec.experiment: missing or not a string");
  bad = j;
  bad["configs"] = json::array();
  write_file_atomic(sj, bad.dump());
  EXPECT_NE(sweep_error([&] { summarize_sweep(out.string()); }).find("2 " + sj + ": configs: expected a list with one"),
            std::string::npos);
  write_file_atomic(sj, j.dump());
  EXPECT_EQ(sweep_error([&] { summarize_sweep(out.string()); }), "");
}

TEST(SweepDir, ResumeRefusesADirOfAnotherKindAndIndexOutOfRange) {
  test::TempDir dir;
  const fs::path out = dir / "o";
  run_sweep(parse_spec(kLeak, "leak.yaml"), quiet(out));
  // Same grid and configs, another kind.
  std::string other = kLeak;
  other.replace(other.find("causal-leak"), 11, "batch-state");
  other.replace(other.find("seq_len: 4, "), 12, "");
  SweepOptions o = quiet(out);
  o.resume = true;
  const std::string e = sweep_error([&] { run_sweep(parse_spec(other, "other.yaml"), o); });
  EXPECT_NE(e.find("64 " + (out / "sweep.json").string() +
                   ": this directory holds a sweep of experiment 'causal-leak', the spec runs 'batch-state'"),
            std::string::npos)
      << e;
  o.only_index = 2;
  EXPECT_NE(sweep_error([&] { run_sweep(parse_spec(kLeak, "leak.yaml"), o); })
                .find("64 leak.yaml: grid index 2 out of range (2 points: 0..1)"),
            std::string::npos);
}

TEST(SweepDir, ASecondSweepOnTheSameDirIsToldItIsInUse) {
  test::TempDir dir;
  const fs::path out = dir / "o";
  fs::create_directories(out);
  // What a running sweep holds: an exclusive flock on the directory.
  const int fd = ::open(out.c_str(), O_RDONLY | O_DIRECTORY);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::flock(fd, LOCK_EX | LOCK_NB), 0);
  SweepOptions o = quiet(out);
  o.resume = true;
  EXPECT_EQ(sweep_error([&] { run_sweep(parse_spec(kLeak, "leak.yaml"), o); }),
            "64 " + out.string() + ": is in use by another sweep (wait for it to finish, or give another --out)");
  EXPECT_EQ(sweep_error([&] { summarize_sweep(out.string()); }),
            "2 " + out.string() + ": not a sweep output directory (no sweep.json)");
  // Slurm array tasks share the dir with each other, not with a whole run.
  o.only_index = 0;
  EXPECT_NE(sweep_error([&] { run_sweep(parse_spec(kLeak, "leak.yaml"), o); }).find("is in use by another sweep"),
            std::string::npos);
  ::flock(fd, LOCK_UN);
  ASSERT_EQ(::flock(fd, LOCK_SH | LOCK_NB), 0);
  EXPECT_EQ(sweep_error([&] { run_sweep(parse_spec(kLeak, "leak.yaml"), o); }), "");
  ::close(fd);
}

TEST(SlurmOptions, EveryHeaderValueIsOnePlainWord) {
  const ExperimentSpec s = parse_spec(kLeak, "leak.yaml");
  auto err = [&](auto set) {
    SlurmOptions o;
    set(o);
    return sweep_error([&] { make_slurm_scripts(s, "leak.yaml", "/o", o); });
  };
  EXPECT_EQ(err([](SlurmOptions& o) { o.partition = "gpu\n#SBATCH --x"; }).substr(0, 16), "64 --partition: ");
  EXPECT_EQ(err([](SlurmOptions& o) { o.time = "1 hour"; }),
            "64 --time: expected a Slurm time such as 30, 01:00:00 or 2-00:00:00, got '1 hour'");
  EXPECT_EQ(err([](SlurmOptions& o) { o.mem = "8GB"; }), "64 --mem: expected a size such as 8G, 512M or 16000, got '8GB'");
  EXPECT_EQ(err([](SlurmOptions& o) { o.max_parallel = -4; }),
            "64 --max-parallel: expected an integer >= 0 (0: no throttle), got '-4'");
  EXPECT_EQ(err([](SlurmOptions& o) {
              o.time = "2-00:30:00";
              o.mem = "16000";
              o.gres = "gpu:a100:2";
              o.partition = "gpu,cpu";
            }),
            "");
}

}  // namespace
}  // namespace mtt::experiments
