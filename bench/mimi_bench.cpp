// Mimi codec speed: offline and frame-by-frame streaming encode/decode, real-time factor
// (compute seconds per audio second, < 1 is faster than real time), tiny and full-size configs
// on random weights, against the PyPI moshi package timed in the same run
// (bench/ref/mimi_bench_ref.py via --ref-python, default $MTT_REF_PYTHON).
//
//   mimi_bench [--config tiny|full|both] [--seconds S] [--threads N] [--reps R]
//              [--ref-python PATH | --no-ref] [--json]
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/core/grad_mode.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "mimi/mimi.h"

namespace {

struct Options {
  std::string config = "both";
  double seconds = 0;  // 0: 4 s tiny, 2 s full
  int threads = 2;
  int reps = 2;
  std::string ref_python;
  bool json = false;
};

int usage(const char* msg) {
  std::fprintf(stderr, "mimi_bench: %s\nusage: mimi_bench [--config tiny|full|both] [--seconds S] [--threads N]"
                       " [--reps R] [--ref-python PATH | --no-ref] [--json]\n", msg);
  return mtt::kExitUsage;
}

double best_of(int reps, const std::function<void()>& fn) {
  double best = std::numeric_limits<double>::infinity();
  for (int r = 0; r < reps; ++r) {
    auto t0 = std::chrono::steady_clock::now();
    fn();
    best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  return best;
}

nlohmann::json run_reference(const Options& o, const std::string& config, int64_t frames) {
  if (o.ref_python.empty()) return {{"skipped", "no reference python (--ref-python or MTT_REF_PYTHON)"}};
  // The script sits beside this source (bench/ref/); CMake compiles with absolute paths.
  std::string here = __FILE__;
  std::string script = here.substr(0, here.rfind('/') + 1) + "ref/mimi_bench_ref.py";
  std::string cmd = o.ref_python + " " + script + " --config " + config + " --frames " + std::to_string(frames) +
                    " --threads " + std::to_string(o.threads) + " --reps " + std::to_string(o.reps) + " 2>/dev/null";
  FILE* p = ::popen(cmd.c_str(), "r");
  if (!p) return {{"skipped", "cannot run " + o.ref_python}};
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  int st = ::pclose(p);
  if (st != 0) return {{"skipped", "reference failed (status " + std::to_string(st) + ")"}};
  auto nl = out.rfind('{');
  try {
    return nlohmann::json::parse(out.substr(nl == std::string::npos ? 0 : nl));
  } catch (const std::exception& e) {
    return {{"skipped", std::string("unparsable reference output: ") + e.what()}};
  }
}

nlohmann::json bench_config(const Options& o, const std::string& name) {
  using namespace mtt::mimi;
  MimiConfig cfg = name == "tiny" ? MimiConfig::tiny() : MimiConfig::v0_1();
  const double seconds = o.seconds > 0 ? o.seconds : (name == "tiny" ? 4.0 : 2.0);
  MimiModel m = MimiModel::random(cfg, 0);
  const int64_t fs = m.frame_size();
  const int64_t frames = std::max<int64_t>(1, static_cast<int64_t>(seconds * cfg.frame_rate));
  const double audio_s = static_cast<double>(frames * fs) / cfg.sample_rate;
  at::Tensor t = at::arange(frames * fs, at::kFloat).div(cfg.sample_rate);
  at::Tensor x = (at::sin(t * 2 * M_PI * 220) * 0.3 + at::randn({frames * fs}) * 0.03).view({1, 1, -1});
  at::Tensor codes = m.encode(x);  // warm-up
  nlohmann::json r;
  r["config"] = name;
  r["audio_seconds"] = audio_s;
  r["frames"] = frames;
  nlohmann::json cpp;
  cpp["encode_s"] = best_of(o.reps, [&] { m.encode(x); });
  cpp["decode_s"] = best_of(o.reps, [&] { m.decode(codes); });
  cpp["stream_encode_s"] = best_of(o.reps, [&] {
    MimiStreamer s(m);
    for (int64_t f = 0; f < frames; ++f) s.encode_step(x.narrow(-1, f * fs, fs));
  });
  cpp["stream_decode_s"] = best_of(o.reps, [&] {
    MimiStreamer s(m);
    for (int64_t f = 0; f < frames; ++f) s.decode_step(codes.narrow(-1, f, 1));
  });
  nlohmann::json ref = run_reference(o, name, frames);
  for (const char* k : {"encode_s", "decode_s", "stream_encode_s", "stream_decode_s"}) {
    std::string rtf = std::string(k).substr(0, std::string(k).size() - 2) + "_rtf";
    cpp[rtf] = cpp[k].get<double>() / audio_s;
    if (ref.contains(k)) {
      ref[rtf] = ref[k].get<double>() / audio_s;
      r["speedup_vs_moshi"][k] = ref[k].get<double>() / cpp[k].get<double>();
    }
  }
  r["cpp"] = cpp;
  r["pypi_moshi"] = ref;
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  if (const char* p = std::getenv("MTT_REF_PYTHON")) o.ref_python = p;
  if (o.ref_python.empty()) {
    // conventions.md: the PyPI moshi venv lives here by default.
    const char* home = std::getenv("HOME");
    std::string def = std::string(home ? home : "") + "/.cache/moshi-ttt/moshi-ref-venv/bin/python";
    if (std::filesystem::exists(def)) o.ref_python = def;
  }
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) throw std::invalid_argument(a + " needs a value");
      return argv[++i];
    };
    try {
      if (a == "--config") o.config = value();
      else if (a == "--seconds") o.seconds = std::stod(value());
      else if (a == "--threads") o.threads = std::stoi(value());
      else if (a == "--reps") o.reps = std::stoi(value());
      else if (a == "--ref-python") o.ref_python = value();
      else if (a == "--no-ref") o.ref_python.clear();
      else if (a == "--json") o.json = true;
      else if (a == "--help" || a == "-h") return usage("help"), 0;
      else return usage(("unknown option " + a).c_str());
    } catch (const std::exception& e) {
      return usage(e.what());
    }
  }
  if (o.config != "tiny" && o.config != "full" && o.config != "both") return usage("--config must be tiny|full|both");
  if (o.threads < 1 || o.reps < 1) return usage("--threads and --reps must be >= 1");
  try {
    at::set_num_threads(o.threads);
    at::NoGradGuard ng;
    nlohmann::json all;
    all["threads"] = o.threads;
    all["device"] = "cpu";
    for (const std::string name : {"tiny", "full"}) {
      if (o.config != "both" && o.config != name) continue;
      all["results"].push_back(bench_config(o, name));
    }
    if (o.json) {
      std::printf("%s\n", all.dump(2).c_str());
    } else {
      for (auto& r : all["results"]) {
        std::printf("%s (%.1f s audio, %d threads)\n", r["config"].get<std::string>().c_str(),
                    r["audio_seconds"].get<double>(), o.threads);
        for (const char* k : {"encode", "decode", "stream_encode", "stream_decode"}) {
          std::string rtf = std::string(k) + "_rtf";
          std::printf("  %-14s RTF C++ %.3f", k, r["cpp"][rtf].get<double>());
          if (r["pypi_moshi"].contains(rtf)) std::printf("  moshi %.3f", r["pypi_moshi"][rtf].get<double>());
          std::printf("\n");
        }
      }
    }
  } catch (const mtt::Error& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return e.exit_status();
  }
  return 0;
}
