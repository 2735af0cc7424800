// Opt-in (CTest label `slurm`, left out of scripts/test.sh's default run): `ttt-sweep run --slurm
// --submit` through a real single-node Slurm that scripts/slurm_local.sh brings up for the test and
// takes down after it (issue 7). The array must leave exactly one result per grid point, and the
// summary job's summary must equal a local run of the same spec byte for byte (same seeds).
//
//   ctest --test-dir build -L slurm --output-on-failure
//   MTT_EXCLUDE_LABELS=gpu_only bash scripts/test.sh -L slurm
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <regex>
#include <set>
#include <sstream>
#include <thread>

#include "test_util.h"

namespace {

namespace fs = std::filesystem;
using mtt::test::app_path;
using mtt::test::run_command;
using mtt::test::source_dir;
using mtt::test::TempDir;

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string shq(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += (c == '\'') ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

// One finished job as jobcomp/filetxt records it: "Key=Value Key=Value ..." on one line.
using JobRecord = std::map<std::string, std::string>;

std::vector<JobRecord> read_jobcomp(const fs::path& log) {
  std::vector<JobRecord> jobs;
  std::ifstream in(log);
  std::string line;
  while (std::getline(in, line)) {
    JobRecord r;
    std::istringstream words(line);
    std::string w;
    while (words >> w) {
      auto eq = w.find('=');
      if (eq != std::string::npos) r[w.substr(0, eq)] = w.substr(eq + 1);
    }
    if (r.count("JobId")) jobs.push_back(std::move(r));
  }
  return jobs;
}

// A private single-node cluster (own folder, own ports, own munged) for the lifetime of the object.
class LocalSlurm {
 public:
  explicit LocalSlurm(const fs::path& dir) : dir_(dir) {
    // Ports per test process, so a developer's own `slurm_local.sh up` (16817) keeps running.
    port_ = 20000 + 2 * static_cast<int>(::getpid() % 5000);
    env_ = "MTT_SLURM_DIR=" + shq(dir_.string()) + " MTT_SLURM_PORT=" + std::to_string(port_) + " ";
    script_ = (source_dir() / "scripts" / "slurm_local.sh").string();
  }
  ~LocalSlurm() { down(); }
  mtt::test::CommandResult up() { return run_command(env_ + "bash " + shq(script_) + " up"); }
  mtt::test::CommandResult down() { return run_command(env_ + "bash " + shq(script_) + " down"); }
  std::string conf() const { return (dir_ / "slurm.conf").string(); }
  fs::path jobcomp() const { return dir_ / "log" / "jobcomp.log"; }
  // What to look at when a job does not finish: the queue and the controller's last words.
  std::string diagnostics() const {
    auto q = run_command("SLURM_CONF=" + shq(conf()) + " squeue -l");
    auto ctl = run_command("tail -n 20 " + shq((dir_ / "log" / "slurmctld.log").string()));
    auto d = run_command("tail -n 20 " + shq((dir_ / "log" / "slurmd.log").string()));
    return "squeue:\n" + q.out + q.err + "slurmctld.log:\n" + ctl.out + "slurmd.log:\n" + d.out;
  }

 private:
  fs::path dir_;
  int port_ = 0;
  std::string env_, script_;
};

TEST(SlurmLocal, SubmittedGridEqualsLocalRun) {
  TempDir tmp;
  // munged insists that every folder above its socket be searchable by all.
  fs::permissions(tmp.path(), fs::perms::owner_all | fs::perms::group_read | fs::perms::group_exec |
                                  fs::perms::others_read | fs::perms::others_exec);
  LocalSlurm slurm(tmp / "cluster");
  auto up = slurm.up();
  ASSERT_EQ(up.status, 0) << "scripts/slurm_local.sh up failed:\n" << up.err;

  const std::string exe = app_path("ttt-sweep").string();
  const std::string spec = (source_dir() / "tests" / "slurm" / "grid.yaml").string();
  const fs::path out = tmp / "slurm-out";
  // One CPU and a little memory per task, so two tasks share the node at a time.
  auto sub = run_command("SLURM_CONF=" + shq(slurm.conf()) + " " + shq(exe) + " run " + shq(spec) + " --reduced --out " +
                         shq(out.string()) + " --slurm --submit --cpus-per-task 1 --mem 512M --time 00:10:00");
  ASSERT_EQ(sub.status, 0) << sub.out << sub.err;
  EXPECT_NE(sub.out.find("(6 array tasks)"), std::string::npos) << sub.out;
  std::smatch m;
  ASSERT_TRUE(std::regex_search(sub.out, m, std::regex(R"(submitted array job (\d+), summary job (\d+))"))) << sub.out;
  const std::string array_id = m[1], summary_id = m[2];

  // Wait for the jobcomp records of the 6 array tasks and of the summary job.
  std::vector<JobRecord> tasks;
  JobRecord summary;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(600);
  while (true) {
    tasks.clear();
    summary.clear();
    for (auto& r : read_jobcomp(slurm.jobcomp())) {
      if (r["ArrayJobId"] == array_id) tasks.push_back(r);
      if (r["JobId"] == summary_id) summary = r;
    }
    if (tasks.size() >= 6 && !summary.empty()) break;
    ASSERT_LT(std::chrono::steady_clock::now(), deadline)
        << tasks.size() << " of 6 array tasks and " << (summary.empty() ? "no" : "the")
        << " summary job finished within 600 s\n" << slurm.diagnostics();
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
  }
  std::set<std::string> task_ids;
  for (auto& t : tasks) {
    EXPECT_EQ(t["JobState"], "COMPLETED") << "array task " << t["ArrayTaskId"];
    EXPECT_EQ(t["ExitCode"], "0:0") << "array task " << t["ArrayTaskId"];
    task_ids.insert(t["ArrayTaskId"]);
  }
  EXPECT_EQ(task_ids, (std::set<std::string>{"0", "1", "2", "3", "4", "5"}));
  EXPECT_EQ(summary["JobState"], "COMPLETED") << slurp(out / "slurm" / "logs" / (summary_id + "-summary.out"));
  EXPECT_EQ(summary["ExitCode"], "0:0");

  // Exactly one committed result per grid point, nothing else in runs/ and no temporaries.
  auto sweep = nlohmann::json::parse(slurp(out / "sweep.json"));
  std::set<std::string> want, have;
  for (const auto& p : sweep.at("points")) want.insert(p.at("id").get<std::string>());
  EXPECT_EQ(want.size(), 6u);
  for (const auto& e : fs::directory_iterator(out / "runs")) {
    have.insert(e.path().filename().string());
    EXPECT_TRUE(fs::exists(e.path() / "result.json")) << e.path();
  }
  EXPECT_EQ(have, want);
  for (const auto& e : fs::recursive_directory_iterator(out))
    EXPECT_EQ(e.path().filename().string().find(".tmp."), std::string::npos) << e.path();
  // One log per array task and one for the summary.
  std::set<std::string> logs;
  for (const auto& e : fs::directory_iterator(out / "slurm" / "logs")) logs.insert(e.path().filename().string());
  std::set<std::string> want_logs = {summary_id + "-summary.out"};
  for (int i = 0; i < 6; ++i) want_logs.insert(array_id + "_" + std::to_string(i) + ".out");
  EXPECT_EQ(logs, want_logs);

  // The same spec run here, one point after another: identical results and summaries.
  const fs::path local = tmp / "local-out";
  auto loc = run_command(shq(exe) + " run " + shq(spec) + " --reduced --out " + shq(local.string()) +
                         " --jobs 1 --no-progress");
  ASSERT_EQ(loc.status, 0) << loc.err;
  for (const char* f : {"summary.csv", "summary.json", "verdict.json"}) {
    ASSERT_TRUE(fs::exists(out / f)) << f << " was not written by the summary job";
    EXPECT_EQ(slurp(out / f), slurp(local / f)) << f;
  }
  for (const auto& id : want)
    EXPECT_EQ(slurp(out / "runs" / id / "result.json"), slurp(local / "runs" / id / "result.json")) << id;

  // With the controller gone, --submit fails with one line naming the script, and a non-zero exit.
  auto down = slurm.down();
  ASSERT_EQ(down.status, 0) << down.err;
  auto late = run_command("SLURM_CONF=" + shq(slurm.conf()) + " " + shq(exe) + " run " + shq(spec) +
                          " --reduced --out " + shq((tmp / "late").string()) + " --slurm --submit --mem 512M");
  EXPECT_EQ(late.status, 2) << late.out << late.err;
  EXPECT_NE(late.err.find("array.sbatch: sbatch: failed"), std::string::npos) << late.err;
  EXPECT_EQ(late.err.find('\n'), late.err.size() - 1) << "not one line: " << late.err;
}

}  // namespace
