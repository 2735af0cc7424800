// plot_bench: `ttt-plot sweep` on a generated summary.csv of N points (default 10^6, each with its
// own x: the case that used to run for minutes), wall time and peak RSS of reading, grouping and
// rendering, and optionally of an app binary on the same file (an older ttt-plot, with a timeout:
// the "before" of a change) in the same run.
//
//   plot_bench [--points 1000000] [--hues 3] [--format png|svg|pdf] [--dir /tmp] [--app PATH]
//              [--timeout 120] [--keep] [--json]
//
// Each measured pass runs in a child process so that its peak RSS (wait4 ru_maxrss) is its own.
#include <CLI/CLI.hpp>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/atomic_file.h"
#include "core/error.h"
#include "plot/figures.h"
#include "plot/inputs.h"

namespace fs = std::filesystem;
namespace pl = mtt::plot;

namespace {

double now() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

// id, two axes, a categorical axis, two metrics: the shape of a ttt-sweep summary.csv.
void write_csv(const std::string& path, long n, int hues) {
  std::string s = "id,step,seed,variant,final_loss,alpha_mean\n";
  s.reserve(static_cast<std::size_t>(n) * 56);
  uint64_t x = 88172645463325252ULL;
  double walk = 3.0;
  char line[160];
  for (long i = 0; i < n; ++i) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    walk += (static_cast<double>(x >> 11) / 9007199254740992.0 - 0.5) * 0.01;
    std::snprintf(line, sizeof line, "p%07ld,%ld,%ld,v%d,%.6f,%.5f\n", i, i, i % 5, static_cast<int>(i % hues), walk,
                  0.3 + 1e-7 * static_cast<double>(i));
    s += line;
  }
  mtt::write_file_atomic(path, s);
}

struct Pass {
  double seconds = 0;
  long max_rss_kb = 0;
  int status = 0;
  bool timed_out = false;
  std::vector<double> phases;  // read, figure, render (library pass)
};

Pass in_child(const std::function<int(double*)>& fn, double timeout) {
  int fds[2];
  if (::pipe(fds) != 0) throw mtt::Error("", "pipe", "failed", mtt::ErrorKind::Internal);
  const double t0 = now();
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::close(fds[0]);
    double out[3] = {0, 0, 0};
    int st = 0;
    try {
      st = fn(out);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "%s\n", e.what());
      st = 70;
    }
    if (::write(fds[1], out, sizeof out) != sizeof out) st = 70;
    ::_exit(st);
  }
  ::close(fds[1]);
  Pass p;
  int status = 0;
  struct rusage ru {};
  while (true) {
    const pid_t w = ::wait4(pid, &status, WNOHANG, &ru);
    if (w == pid) break;
    if (now() - t0 > timeout && !p.timed_out) {
      ::kill(pid, SIGKILL);
      p.timed_out = true;
    }
    ::usleep(10000);
  }
  p.seconds = now() - t0;
  p.max_rss_kb = ru.ru_maxrss;
  p.status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  double out[3] = {0, 0, 0};
  if (::read(fds[0], out, sizeof out) == sizeof out) p.phases.assign(out, out + 3);
  ::close(fds[0]);
  return p;
}

nlohmann::json pass_json(const Pass& p) {
  nlohmann::json j = {{"seconds", p.seconds}, {"max_rss_mb", p.max_rss_kb / 1024.0}, {"exit_status", p.status},
                      {"timed_out", p.timed_out}};
  if (p.phases.size() == 3)
    j["phases_seconds"] = {{"read", p.phases[0]}, {"figure", p.phases[1]}, {"render", p.phases[2]}};
  return j;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"plot_bench: ttt-plot sweep on a generated summary of N points"};
  long points = 1000000;
  int hues = 3;
  double timeout = 120;
  std::string format = "png", dir = "/tmp", other;
  bool keep = false, json = false;
  app.add_option("--points", points, "rows of the summary")->check(CLI::Range(1L, 100000000L));
  app.add_option("--hues", hues, "distinct values of the hue column")->check(CLI::Range(1, 100));
  app.add_option("--format", format, "output format")->check(CLI::IsMember({"png", "svg", "pdf"}));
  app.add_option("--dir", dir, "where to write the summary and the figures");
  app.add_option("--app", other, "also time this ttt-plot binary on the same summary (e.g. an older build)");
  app.add_option("--timeout", timeout, "seconds before the --app run is killed");
  app.add_flag("--keep", keep, "keep the files");
  app.add_flag("--json", json, "JSON output");
  CLI11_PARSE(app, argc, argv);
  try {
    const std::string base = dir + "/plot_bench_" + std::to_string(::getpid());
    const std::string csv = base + ".csv", fig = base + "." + format, fig2 = base + "_app." + format;
    const double tw = now();
    write_csv(csv, points, hues);
    const double write_s = now() - tw;

    const Pass lib = in_child(
        [&](double* out) {
          double t = now();
          pl::SweepPlotOptions o;
          o.x = "step";
          o.y = "final_loss";
          o.hue = "variant";
          const pl::Table table = pl::read_summary(csv, {o.x, o.y, o.hue});
          out[0] = now() - t;
          t = now();
          const pl::Figure f = pl::sweep_figure(table, o);
          out[1] = now() - t;
          t = now();
          pl::render(f, fig);
          out[2] = now() - t;
          return 0;
        },
        1e9);
    Pass ext;
    if (!other.empty()) {
      ext = in_child(
          [&](double*) {
            ::execl(other.c_str(), other.c_str(), "sweep", csv.c_str(), "--x", "step", "--y", "final_loss", "--hue",
                    "variant", "-o", fig2.c_str(), static_cast<char*>(nullptr));
            return 127;
          },
          timeout);
    }
    std::error_code ec;
    const auto csv_bytes = fs::file_size(csv, ec);
    const auto fig_bytes = fs::file_size(fig, ec);
    if (!keep) {
      fs::remove(csv, ec);
      fs::remove(fig, ec);
      fs::remove(fig2, ec);
    }
    nlohmann::json j = {{"points", points},
                        {"hues", hues},
                        {"csv_bytes", csv_bytes},
                        {"write_seconds", write_s},
                        {"format", format},
                        {"figure_bytes", fig_bytes},
                        {"library", pass_json(lib)}};
    if (!other.empty()) j["app"] = pass_json(ext), j["app_path"] = other, j["app_timeout_seconds"] = timeout;
    if (json) {
      std::cout << j.dump(2) << "\n";
    } else {
      std::printf("summary: %ld points, %.1f MB\n", points, static_cast<double>(csv_bytes) / 1e6);
      std::printf("library: %.2f s (read %.2f, figure %.2f, render %.2f), peak RSS %.0f MB, exit %d\n", lib.seconds,
                  lib.phases.size() == 3 ? lib.phases[0] : 0.0, lib.phases.size() == 3 ? lib.phases[1] : 0.0,
                  lib.phases.size() == 3 ? lib.phases[2] : 0.0, lib.max_rss_kb / 1024.0, lib.status);
      if (!other.empty())
        std::printf("%s: %.2f s%s, peak RSS %.0f MB, exit %d\n", other.c_str(), ext.seconds,
                    ext.timed_out ? " (killed at the timeout)" : "", ext.max_rss_kb / 1024.0, ext.status);
    }
    return lib.status == 0 ? 0 : 1;
  } catch (const mtt::Error& e) {
    std::fprintf(stderr, "plot_bench: %s\n", e.what());
    return e.exit_status();
  }
}
