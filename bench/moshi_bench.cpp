// moshi_bench: LMGen step latency and tokens/s of the C++ Moshi LM on CPU (f32 or bf16, random weights)
// for the tiny and ~300M configurations, against the PyPI moshi package's LMGen on the same
// configuration in the same invocation (bench/ref/moshi_ref.py, reference only).
// tokens/s counts one text + dep_q audio tokens per frame per batch row.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/core/grad_mode.h>
#include <CLI/CLI.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/error.h"
#include "moshi/config.h"
#include "moshi/lm.h"
#include "moshi/lmgen.h"

namespace {

struct BenchOptions {
  std::vector<std::string> configs{"tiny", "medium_300m"};
  int steps = 20, warmup = 3, threads = 1, batch = 1;
  bool greedy = false, json = false, no_python = false;
  std::string python, ref_script;
  std::string dtype = "f32";  // f32 | bf16 (both implementations)
};

nlohmann::json run_python(const BenchOptions& o, const mtt::moshi::LMConfig& cfg) {
  namespace fs = std::filesystem;
  const fs::path cfg_path = fs::temp_directory_path() / ("moshi_bench_" + std::to_string(::getpid()) + ".json");
  std::ofstream(cfg_path) << cfg.to_json();
  std::string cmd = o.python + " " + o.ref_script + " " + cfg_path.string() + " --steps " + std::to_string(o.steps) +
                    " --warmup " + std::to_string(o.warmup) + " --threads " + std::to_string(o.threads) +
                    " --batch " + std::to_string(o.batch) + (o.greedy ? " --greedy" : "") +
                    " --dtype " + (o.dtype == "bf16" ? "bfloat16" : "float32") + " 2>/dev/null";
  std::unique_ptr<FILE, int (*)(FILE*)> p(::popen(cmd.c_str(), "r"), ::pclose);
  std::string out;
  if (p) {
    char buf[4096];
    size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, p.get())) > 0) out.append(buf, n);
  }
  fs::remove(cfg_path);
  try {
    return nlohmann::json::parse(out);
  } catch (...) {
    return {{"error", "python reference failed: " + cmd}, {"output", out}};
  }
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0.0 : v[v.size() / 2];
}

nlohmann::json bench_one(const BenchOptions& o, const std::string& name) {
  using clock = std::chrono::steady_clock;
  mtt::moshi::LMConfig cfg = mtt::moshi::LMConfig::preset(name);
  nlohmann::json r;
  r["config"] = name;
  r["dtype"] = o.dtype;
  auto t0 = clock::now();
  mtt::moshi::LMModel model(cfg);
  model.init_random(0, o.dtype == "bf16" ? at::kBFloat16 : at::kFloat);
  r["build_s"] = std::chrono::duration<double>(clock::now() - t0).count();
  int64_t params = 0;
  for (auto& [n, t] : model.named_parameters()) params += t->numel();
  r["params"] = params;
  mtt::moshi::SamplingOptions so = mtt::moshi::SamplingOptions::from_config(cfg);
  so.use_sampling = !o.greedy;
  mtt::moshi::LMGen gen(model, so, 0);
  gen.reset(o.batch);
  at::Tensor user = at::randint(0, cfg.card, {o.batch, cfg.n_q - cfg.dep_q, 1}, at::TensorOptions().dtype(at::kLong));
  std::vector<double> ts;
  for (int i = 0; i < o.warmup + o.steps; ++i) {
    auto s = clock::now();
    gen.step(user);
    double dt = std::chrono::duration<double>(clock::now() - s).count();
    if (i >= o.warmup) ts.push_back(dt);
  }
  const double med = median(ts);
  double mean = 0;
  for (double t : ts) mean += t;
  mean /= static_cast<double>(std::max<size_t>(1, ts.size()));
  r["cpp"] = {{"impl", "moshi-ttt C++"},
              {"step_ms_median", med * 1e3},
              {"step_ms_min", *std::min_element(ts.begin(), ts.end()) * 1e3},
              {"step_ms_mean", mean * 1e3},
              {"frames_per_s", o.batch / med},
              {"tokens_per_s", o.batch * (1 + cfg.dep_q) / med}};
  if (!o.no_python && !o.python.empty()) {
    nlohmann::json py = run_python(o, cfg);
    r["python"] = py;
    // Ratios of the medians (tokens/s ratio = step-time ratio) and of the minima, the latter less
    // sensitive to other load on a shared machine.
    if (py.contains("step_ms_median")) r["speedup_vs_python"] = py["step_ms_median"].get<double>() / (med * 1e3);
    if (py.contains("step_ms_min"))
      r["speedup_vs_python_min"] = py["step_ms_min"].get<double>() / r["cpp"]["step_ms_min"].get<double>();
  }
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  BenchOptions o;
  CLI::App app{"moshi_bench: Moshi LMGen step latency vs the PyPI moshi package"};
  if (const char* p = std::getenv("MTT_REF_PYTHON")) o.python = p;
  if (o.python.empty())
    if (const char* home = std::getenv("HOME")) {
      std::string venv = std::string(home) + "/.cache/moshi-ttt/moshi-ref-venv/bin/python";
      if (std::filesystem::exists(venv)) o.python = venv;
    }
  o.ref_script = (std::filesystem::path(__FILE__).parent_path() / "ref" / "moshi_ref.py").string();
  app.add_option("--configs", o.configs, "presets: tiny, tiny_lowrank, medium_300m, moshiko_7b")->delimiter(',');
  app.add_option("--steps", o.steps, "timed steps (median)");
  app.add_option("--warmup", o.warmup, "untimed steps");
  app.add_option("--threads", o.threads, "intra-op threads for both implementations");
  app.add_option("--batch", o.batch, "batch rows");
  app.add_option("--python", o.python, "python with the moshi package (env MTT_REF_PYTHON)");
  app.add_flag("--greedy", o.greedy, "argmax instead of sampling");
  app.add_option("--dtype", o.dtype, "compute dtype of both implementations")->check(CLI::IsMember({"f32", "bf16"}));
  app.add_flag("--no-python", o.no_python, "skip the Python reference");
  app.add_flag("--json", o.json, "print JSON");
  CLI11_PARSE(app, argc, argv);
  try {
    at::set_num_threads(o.threads);
    at::NoGradGuard ng;
    nlohmann::json all = nlohmann::json::array();
    for (const auto& c : o.configs) {
      nlohmann::json r = bench_one(o, c);
      all.push_back(r);
      if (!o.json) {
        std::printf("%-12s params %-11lld C++ %8.2f ms/step %9.1f tok/s", c.c_str(),
                    static_cast<long long>(r["params"].get<int64_t>()), r["cpp"]["step_ms_median"].get<double>(),
                    r["cpp"]["tokens_per_s"].get<double>());
        if (r.contains("python") && r["python"].contains("step_ms_median"))
          std::printf(" | PyPI moshi %8.2f ms/step %9.1f tok/s", r["python"]["step_ms_median"].get<double>(),
                      r["python"]["tokens_per_s"].get<double>());
        std::printf("\n");
      }
    }
    if (o.json)
      std::cout << nlohmann::json{{"benchmark", "moshi_bench"}, {"threads", o.threads}, {"batch", o.batch}, {"dtype", o.dtype},
                                  {"steps", o.steps}, {"results", all}}
                       .dump(2)
                << "\n";
  } catch (const mtt::Error& e) {
    std::cerr << e.what() << "\n";
    return e.exit_status();
  }
  return 0;
}
