#include "experiments/slurm.h"

#include <cstdio>
#include <filesystem>
#include <sstream>

#include "core/atomic_file.h"
#include "core/error.h"
#include "experiments/grid.h"

namespace mtt::experiments {

namespace fs = std::filesystem;

namespace {

// Single-quotes a word for sh.
std::string shq(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += (c == '\'') ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

std::string header(const std::string& job, const SlurmOptions& o, const std::string& log_dir) {
  std::ostringstream os;
  os << "#!/bin/bash\n";
  os << "#SBATCH --job-name=" << job << "\n";
  if (!o.partition.empty()) os << "#SBATCH --partition=" << o.partition << "\n";
  os << "#SBATCH --time=" << o.time << "\n";
  os << "#SBATCH --cpus-per-task=" << o.cpus_per_task << "\n";
  os << "#SBATCH --mem=" << o.mem << "\n";
  if (!o.gres.empty()) os << "#SBATCH --gres=" << o.gres << "\n";
  return os.str();
}

std::string run_capture(const std::string& cmd) {
  FILE* p = ::popen(cmd.c_str(), "r");
  if (!p) throw Error("sbatch", "", "cannot run: " + cmd);
  std::string out;
  char buf[512];
  std::size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  int st = ::pclose(p);
  if (st != 0) throw Error("sbatch", "", "failed (status " + std::to_string(st) + "): " + out);
  while (!out.empty() && (out.back() == '\n' || out.back() == ' ')) out.pop_back();
  return out;
}

}  // namespace

SlurmScripts make_slurm_scripts(const ExperimentSpec& spec, const std::string& spec_path, const std::string& out_dir,
                                const SlurmOptions& o) {
  SlurmScripts s;
  s.tasks = expand_grid(spec, o.reduced).size();
  std::string abs_out = fs::absolute(out_dir).lexically_normal().string();
  std::string abs_spec = fs::absolute(spec_path).lexically_normal().string();
  std::string log_dir = abs_out + "/slurm/logs";
  std::string job = "ttt-sweep-" + spec.name;

  std::ostringstream a;
  a << header(job, o, log_dir);
  a << "#SBATCH --array=0-" << (s.tasks - 1);
  if (o.max_parallel > 0) a << "%" << o.max_parallel;
  a << "\n";
  a << "#SBATCH --output=" << log_dir << "/%A_%a.out\n";
  a << "# One grid point per array task. --resume makes a re-queued or repeated task a no-op once\n";
  a << "# its result.json exists, so requeues never duplicate a result.\n";
  a << "set -euo pipefail\n";
  a << "exec " << shq(o.exe) << " run " << shq(abs_spec) << " --out " << shq(abs_out)
    << " --resume --no-progress --index \"$SLURM_ARRAY_TASK_ID\"" << (o.reduced ? " --reduced" : "") << "\n";
  s.array_script = a.str();

  std::ostringstream m;
  m << header(job + "-summary", o, log_dir);
  m << "#SBATCH --output=" << log_dir << "/%j-summary.out\n";
  m << "set -euo pipefail\n";
  m << "exec " << shq(o.exe) << " summarize " << shq(abs_out) << "\n";
  s.summary_script = m.str();
  return s;
}

std::pair<std::string, std::string> write_slurm_scripts(const SlurmScripts& s, const std::string& out_dir) {
  fs::path dir = fs::path(out_dir) / "slurm";
  fs::create_directories(dir / "logs");
  std::string a = (dir / "array.sbatch").string(), m = (dir / "summarize.sbatch").string();
  write_file_atomic(a, s.array_script);
  write_file_atomic(m, s.summary_script);
  fs::permissions(a, fs::perms::owner_exec | fs::perms::group_exec, fs::perm_options::add);
  fs::permissions(m, fs::perms::owner_exec | fs::perms::group_exec, fs::perm_options::add);
  return {a, m};
}

std::pair<std::string, std::string> submit_slurm(const std::string& array_path, const std::string& summary_path) {
  std::string array_id = run_capture("sbatch --parsable " + shq(array_path));
  std::string sum_id = run_capture("sbatch --parsable --dependency=afterany:" + array_id + " " + shq(summary_path));
  return {array_id, sum_id};
}

}  // namespace mtt::experiments
