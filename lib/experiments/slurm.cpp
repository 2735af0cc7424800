#include "experiments/slurm.h"

#include <cctype>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <sstream>
#include <sys/wait.h>

#include "core/atomic_file.h"
#include "core/output_set.h"
#include "core/error.h"
#include "experiments/config_keys.h"
#include "experiments/grid.h"
#include "experiments/registry.h"

namespace mtt::experiments {

namespace fs = std::filesystem;

namespace {

// Single-quotes a word for sh.
std::string shq(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += (c == '\'') ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

// The summary job only reads the points' result.json files: one CPU and no generic resources, so
// that it neither holds a GPU nor waits for one after the array (--gres applies to the tasks).
std::string header(const std::string& job, const SlurmOptions& o, bool summary) {
  std::ostringstream os;
  os << "#!/bin/bash\n";
  os << "#SBATCH --job-name=" << job << "\n";
  if (!o.partition.empty()) os << "#SBATCH --partition=" << o.partition << "\n";
  os << "#SBATCH --time=" << o.time << "\n";
  os << "#SBATCH --cpus-per-task=" << (summary ? 1 : o.cpus_per_task) << "\n";
  os << "#SBATCH --mem=" << o.mem << "\n";
  if (!o.gres.empty() && !summary) os << "#SBATCH --gres=" << o.gres << "\n";
  return os.str();
}

// Runs `cmd` with stderr folded into stdout; returns the output without trailing blanks. A failure
// is one line naming the script being submitted and what sbatch said (it reports to stderr).
std::string run_capture(const std::string& cmd, const std::string& script) {
  FILE* p = ::popen((cmd + " 2>&1").c_str(), "r");
  if (!p) throw Error(script, "sbatch", "cannot run: " + cmd);
  std::string out;
  char buf[512];
  std::size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  int st = ::pclose(p);
  while (!out.empty() && (out.back() == '\n' || out.back() == ' ')) out.pop_back();
  int code = (st != -1 && WIFEXITED(st)) ? WEXITSTATUS(st) : -1;
  if (code == 127) throw Error(script, "sbatch", "sbatch not found on PATH (is a Slurm client installed?)");
  if (code != 0) throw Error(script, "sbatch", "failed (exit " + std::to_string(code) + "): " + out);
  return out;
}

// `sbatch --parsable` prints "<jobid>" or "<jobid>;<cluster>" (federations), possibly after
// warning lines; the id is the leading number of the last line.
std::string parse_job_id(const std::string& out, const std::string& script) {
  std::size_t nl = out.find_last_of('\n');
  std::string last = nl == std::string::npos ? out : out.substr(nl + 1);
  std::size_t k = 0;
  while (k < last.size() && std::isdigit(static_cast<unsigned char>(last[k]))) ++k;
  if (k == 0 || (k < last.size() && last[k] != ';'))
    throw Error(script, "sbatch", "no job id in sbatch's answer: " + out);
  return last.substr(0, k);
}

bool all_of_chars(const std::string& s, const char* extra) {
  for (char c : s)
    if (!std::isalnum(static_cast<unsigned char>(c)) && !std::strchr(extra, c)) return false;
  return !s.empty();
}

// Slurm's time formats: M, M:S, H:M:S, D-H, D-H:M, D-H:M:S, or UNLIMITED / INFINITE.
bool slurm_time(const std::string& t) {
  if (t == "UNLIMITED" || t == "INFINITE" || t == "unlimited" || t == "infinite") return true;
  std::size_t dash = t.find('-');
  std::string hms = dash == std::string::npos ? t : t.substr(dash + 1);
  if (dash != std::string::npos && (dash == 0 || !all_of_chars(t.substr(0, dash), ""))) return false;
  int parts = 0;
  std::size_t start = 0;
  while (true) {
    const std::size_t colon = hms.find(':', start);
    const std::string p = hms.substr(start, colon == std::string::npos ? std::string::npos : colon - start);
    if (p.empty() || p.size() > 6 || p.find_first_not_of("0123456789") != std::string::npos) return false;
    ++parts;
    if (colon == std::string::npos) break;
    start = colon + 1;
  }
  return parts <= 3;
}

// The options become #SBATCH lines: each must be one plain word of its format (a newline or a
// space would add lines or options of its own to the script).
void check_slurm_options(const SlurmOptions& o) {
  auto bad = [](const char* flag, const std::string& v, const std::string& want) {
    throw Error("", flag, "expected " + want + ", got '" + v + "'", ErrorKind::Usage);
  };
  if (!o.partition.empty() && !all_of_chars(o.partition, "_.,-+"))
    bad("--partition", o.partition, "a partition name (letters, digits, _ . , - +)");
  if (!slurm_time(o.time)) bad("--time", o.time, "a Slurm time such as 30, 01:00:00 or 2-00:00:00");
  const std::size_t digits = o.mem.find_first_not_of("0123456789");
  if (digits == 0 || o.mem.empty() ||
      (digits != std::string::npos && (digits + 1 != o.mem.size() || !std::strchr("KMGTkmgt", o.mem[digits]))))
    bad("--mem", o.mem, "a size such as 8G, 512M or 16000");
  if (!o.gres.empty() && !all_of_chars(o.gres, "_.,:=-")) bad("--gres", o.gres, "generic resources such as gpu:1");
  if (o.cpus_per_task < 1 || o.cpus_per_task > 4096)
    bad("--cpus-per-task", std::to_string(o.cpus_per_task), "an integer in 1..4096");
  if (o.max_parallel < 0) bad("--max-parallel", std::to_string(o.max_parallel), "an integer >= 0 (0: no throttle)");
}

}  // namespace

SlurmScripts make_slurm_scripts(const ExperimentSpec& spec, const std::string& spec_path, const std::string& out_dir,
                                const SlurmOptions& o) {
  return make_slurm_scripts(spec, find_experiment(spec.experiment, spec.path), spec_path, out_dir, o);
}

SlurmScripts make_slurm_scripts(const ExperimentSpec& spec, const ExperimentKind& kind, const std::string& spec_path,
                                const std::string& out_dir, const SlurmOptions& o) {
  check_slurm_options(o);
  SlurmScripts s;
  const std::vector<GridPoint> points = expand_grid(spec, o.reduced);
  check_grid_configs(spec, kind, points, o.reduced);
  s.tasks = points.size();
  std::string abs_out = fs::absolute(out_dir).lexically_normal().string();
  std::string abs_spec = fs::absolute(spec_path).lexically_normal().string();
  std::string log_dir = abs_out + "/slurm/logs";
  std::string job = "ttt-sweep-" + spec.name;
  // The tasks run in sbatch's working directory on whatever node they land on: a relative binary
  // path (argv[0] of `build/bin/ttt-sweep`) is made absolute; a bare name is left to the job's PATH.
  std::string exe = o.exe.find('/') == std::string::npos ? o.exe : fs::absolute(o.exe).lexically_normal().string();

  std::ostringstream a;
  a << header(job, o, false);
  a << "#SBATCH --array=0-" << (s.tasks - 1);
  if (o.max_parallel > 0) a << "%" << o.max_parallel;
  a << "\n";
  a << "#SBATCH --output=" << log_dir << "/%A_%a.out\n";
  a << "# One grid point per array task. --resume makes a re-queued or repeated task a no-op once\n";
  a << "# its result.json exists, so requeues never duplicate a result.\n";
  a << "set -euo pipefail\n";
  a << "exec " << shq(exe) << " run " << shq(abs_spec) << " --out " << shq(abs_out)
    << " --resume --no-progress --index \"$SLURM_ARRAY_TASK_ID\"" << (o.reduced ? " --reduced" : "")
    << (o.device != "cpu" ? " --device " + shq(o.device) : std::string()) << "\n";
  s.array_script = a.str();

  std::ostringstream m;
  m << header(job + "-summary", o, true);
  m << "#SBATCH --output=" << log_dir << "/%j-summary.out\n";
  m << "set -euo pipefail\n";
  m << "exec " << shq(exe) << " summarize " << shq(abs_out) << "\n";
  s.summary_script = m.str();
  return s;
}

std::pair<std::string, std::string> write_slurm_scripts(const SlurmScripts& s, const std::string& out_dir) {
  fs::path dir = fs::path(out_dir) / "slurm";
  make_output_dir((dir / "logs").string(), "--out");
  std::string a = (dir / "array.sbatch").string(), m = (dir / "summarize.sbatch").string();
  OutputSet outputs;  // both scripts or neither
  for (const auto& [path, text] : {std::pair{a, &s.array_script}, std::pair{m, &s.summary_script}}) {
    AtomicFile& f = outputs.add(path);
    f.write(*text);
    if (!f.special())
      fs::permissions(f.temp_path(), fs::perms::owner_exec | fs::perms::group_exec, fs::perm_options::add);
  }
  outputs.commit();
  return {a, m};
}

std::pair<std::string, std::string> submit_slurm(const std::string& array_path, const std::string& summary_path) {
  std::string array_id = parse_job_id(run_capture("sbatch --parsable " + shq(array_path), array_path), array_path);
  // afterany: the summary also runs when a task failed, and then names the points without a result.
  std::string sum_id = parse_job_id(
      run_capture("sbatch --parsable --dependency=afterany:" + array_id + " " + shq(summary_path), summary_path),
      summary_path);
  return {array_id, sum_id};
}

}  // namespace mtt::experiments
