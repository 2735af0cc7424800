// ttt_bench: TTT inner-loop scan (dual form, docs/ttt.md §2-3) throughput, forward and
// forward+backward, on Moshi shapes (H 32, d 128, b 32, L 2048, B 1) and DiT shapes (H 48, d 64,
// b 64), against the plain op-by-op PyTorch implementation bench/ref/ttt_ref.py run in the same
// invocation, plus achieved GFLOP/s against a plain batched matmul of the same sizes. ttt_scan takes
// the fused CPU path (lib/ttt/scan_cpu_fused.h) unless MTT_TTT_SCAN=reference; --with-reference also
// times the C++ op-by-op path (ttt_scan_reference) in the same run.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/core/grad_mode.h>
#include <CLI/CLI.hpp>

#include <algorithm>
#include <chrono>
#include <ctime>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/error.h"
#include "ttt/scan_cpu_fused.h"
#include "ttt/ttt_scan.h"

namespace {

struct Shape {
  std::string name;
  int64_t B, H, d, b, L;
  std::string eta;  // causal | dit
};

struct BenchOptions {
  std::vector<std::string> shapes{"moshi", "dit"};
  int64_t seq_len = 2048;
  int iters = 3, warmup = 1, threads = 0;
  std::string inner = "mlp";
  std::string python;
  std::string ref_script;
  bool json = false, no_python = false, with_reference = false;
};

double process_cpu_seconds() {
  timespec ts{};
  ::clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

// Median wall seconds and median process CPU seconds (all threads; the Python reference reports
// the same pair). On a shared machine the CPU time is the steadier figure.
struct Timing {
  double wall = 0, cpu = 0, min_wall = 0;  // min: best of the iterations (steadiest under load)
};

Timing median_timing(const std::function<void()>& fn, int warmup, int iters) {
  for (int i = 0; i < warmup; ++i) fn();
  std::vector<double> ts, cs;
  for (int i = 0; i < iters; ++i) {
    const double c0 = process_cpu_seconds();
    auto t0 = std::chrono::steady_clock::now();
    fn();
    ts.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    cs.push_back(process_cpu_seconds() - c0);
  }
  std::sort(ts.begin(), ts.end());
  std::sort(cs.begin(), cs.end());
  return {ts[ts.size() / 2], cs[cs.size() / 2], ts[0]};
}

double median_seconds(const std::function<void()>& fn, int warmup, int iters) {
  return median_timing(fn, warmup, iters).wall;
}

// Forward FLOPs of the dual form per token per head (multiply-add = 2): 14 d h + 6 b (d + h)
// for TTT-MLP (spec §9: 56 d^2 + 30 b d at h = 4d); TTT-Linear: 6 d^2 + 6 b d.
double flops_per_token_head(int64_t d, int64_t b, bool mlp) {
  if (!mlp) return 6.0 * d * d + 6.0 * b * d;
  const double h = 4.0 * d;
  return 14.0 * d * h + 6.0 * b * (d + h);
}

nlohmann::json run_python(const BenchOptions& o, const Shape& s) {
  std::string cmd = o.python + " " + o.ref_script + " --batch " + std::to_string(s.B) + " --heads " + std::to_string(s.H) +
                    " --head-dim " + std::to_string(s.d) + " --mini-batch " + std::to_string(s.b) + " --seq-len " +
                    std::to_string(s.L) + " --inner " + o.inner + " --eta " + s.eta + " --iters " + std::to_string(o.iters) +
                    " --warmup " + std::to_string(o.warmup) + " --threads " + std::to_string(at::get_num_threads());
  std::unique_ptr<FILE, int (*)(FILE*)> p(::popen(cmd.c_str(), "r"), ::pclose);
  if (!p) return {{"error", "cannot run " + cmd}};
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p.get())) > 0) out.append(buf, n);
  try {
    return nlohmann::json::parse(out);
  } catch (const std::exception&) {
    return {{"error", "python reference failed: " + cmd}, {"output", out}};
  }
}

nlohmann::json bench_shape(const BenchOptions& o, const Shape& s) {
  const bool mlp = o.inner == "mlp";
  const int64_t NC = s.L / s.b, h = mlp ? 4 * s.d : s.d;
  at::manual_seed(0);
  auto l2 = [](const at::Tensor& t) { return t / t.norm(2, {-1}, true).clamp_min(1e-12); };
  mtt::ttt::ScanInputs in;
  in.XQ = l2(at::randn({s.B, s.H, NC, s.b, s.d}));
  in.XK = l2(at::randn({s.B, s.H, NC, s.b, s.d}));
  in.XV = at::randn({s.B, s.H, NC, s.b, s.d});
  at::Tensor lr = at::sigmoid(at::randn({s.B, s.H, NC, 1, s.b})) / static_cast<double>(s.d);
  if (s.eta == "causal") {
    at::Tensor tok = 1.0 / at::arange(1, s.b + 1, at::kFloat);
    in.eta = at::tril(tok.view({1, 1, 1, s.b, 1}) * lr);
  } else {
    in.eta = (lr / static_cast<double>(s.b)).expand({s.B, s.H, NC, s.b, s.b}).contiguous();
  }
  in.ln_weight = 1.0 + 0.1 * at::randn({s.H, s.d});
  in.ln_bias = 0.1 * at::randn({s.H, s.d});
  in.ln_eps = 1e-6;
  std::vector<int64_t> dims = mlp ? std::vector<int64_t>{s.d, h, s.d} : std::vector<int64_t>{s.d, s.d};
  std::vector<at::Tensor> W0, B0;
  for (size_t k = 0; k + 1 < dims.size(); ++k) {
    W0.push_back(0.02 * at::randn({s.H, dims[k], dims[k + 1]}));
    B0.push_back(at::zeros({s.H, 1, dims[k + 1]}));
  }
  auto tile = [&](const std::vector<at::Tensor>& v) {
    std::vector<at::Tensor> r;
    for (auto& t : v) {
      std::vector<int64_t> shape{s.B};
      shape.insert(shape.end(), t.sizes().begin(), t.sizes().end());
      r.push_back(t.unsqueeze(0).expand(shape));
    }
    return r;
  };

  using ScanFn = mtt::ttt::ScanOutputs (*)(const mtt::ttt::ScanInputs&, const std::vector<at::Tensor>&,
                                             const std::vector<at::Tensor>&);
  auto time_fwd = [&](ScanFn scan) {
    return median_timing([&] {
      at::NoGradGuard ng;
      scan(in, tile(W0), tile(B0));
    }, o.warmup, o.iters);
  };

  mtt::ttt::ScanInputs ig = in;
  for (at::Tensor* t : {&ig.XQ, &ig.XK, &ig.XV, &ig.ln_weight, &ig.ln_bias}) *t = t->detach().clone().requires_grad_(true);
  std::vector<at::Tensor> Wl, Bl;
  for (auto& t : W0) Wl.push_back(t.clone().requires_grad_(true));
  for (auto& t : B0) Bl.push_back(t.clone().requires_grad_(true));
  at::Tensor G = at::randn(in.XQ.sizes());
  auto time_fb = [&](ScanFn scan) {
    return median_timing([&] {
      at::AutoGradMode on(true);
      auto out = scan(ig, tile(Wl), tile(Bl));
      (out.XQW * G).sum().backward();
      for (at::Tensor* t : {&ig.XQ, &ig.XK, &ig.XV, &ig.ln_weight, &ig.ln_bias}) t->mutable_grad() = at::Tensor();
      for (auto& t : Wl) t.mutable_grad() = at::Tensor();
      for (auto& t : Bl) t.mutable_grad() = at::Tensor();
    }, o.warmup, o.iters);
  };
  const Timing tf = time_fwd(mtt::ttt::ttt_scan), tb = time_fb(mtt::ttt::ttt_scan);
  const double t_fwd = tf.wall, t_fb = tb.wall;
  // Which path ttt_scan took for these inputs (the fused CPU path unless MTT_TTT_SCAN=reference).
  const bool fused = mtt::ttt::cpu_fused_scan_enabled() &&
                     mtt::ttt::cpu_fused_unsupported_reason(in, tile(W0), tile(B0)).empty();

  // Plain batched matmul of the dominant GEMM size ([B*H, b, d] x [B*H, d, h]), NC times.
  at::Tensor a = at::randn({s.B * s.H, s.b, s.d}), bm = at::randn({s.B * s.H, s.d, h});
  double t_mm = median_seconds([&] {
    at::NoGradGuard ng;
    for (int64_t i = 0; i < NC; ++i) (void)at::bmm(a, bm);
  }, o.warmup, o.iters);
  const double mm_gflops = 2.0 * s.B * s.H * s.b * s.d * h * NC / t_mm / 1e9;

  const double tokens = static_cast<double>(s.B * s.L);
  const double fwd_flops = flops_per_token_head(s.d, s.b, mlp) * s.H * tokens;
  nlohmann::json r = {{"shape", s.name},
                      {"B", s.B}, {"H", s.H}, {"d", s.d}, {"b", s.b}, {"L", s.L}, {"eta", s.eta}, {"inner", o.inner},
                      {"threads", at::get_num_threads()}, {"scan", fused ? "fused" : "reference"},
                      {"cpp", {{"fwd_s", t_fwd}, {"fwdbwd_s", t_fb}, {"fwd_cpu_s", tf.cpu}, {"fwdbwd_cpu_s", tb.cpu},
                               {"fwd_min_s", tf.min_wall}, {"fwdbwd_min_s", tb.min_wall},
                               {"fwd_tokens_per_s", tokens / t_fwd},
                               {"fwdbwd_tokens_per_s", tokens / t_fb}, {"fwd_gflops", fwd_flops / t_fwd / 1e9},
                               {"fwdbwd_gflops", 3.0 * fwd_flops / t_fb / 1e9}}},
                      {"matmul_gflops", mm_gflops},
                      {"fwd_fraction_of_matmul", fwd_flops / t_fwd / 1e9 / mm_gflops}};
  if (o.with_reference) {
    const Timing rtf = time_fwd(mtt::ttt::ttt_scan_reference), rtb = time_fb(mtt::ttt::ttt_scan_reference);
    const double rf = rtf.wall, rb = rtb.wall;
    r["cpp_reference"] = {{"fwd_s", rf}, {"fwdbwd_s", rb}, {"fwd_cpu_s", rtf.cpu}, {"fwdbwd_cpu_s", rtb.cpu},
                          {"fwd_tokens_per_s", tokens / rf}, {"fwdbwd_tokens_per_s", tokens / rb}};
    r["speedup_vs_cpp_reference_fwd"] = rf / t_fwd;
    r["speedup_vs_cpp_reference_fwdbwd"] = rb / t_fb;
  }
  if (!o.no_python && !o.python.empty()) {
    nlohmann::json py = run_python(o, s);
    r["python"] = py;
    if (py.contains("fwd_s")) {
      r["speedup_fwd"] = py["fwd_s"].get<double>() / t_fwd;
      r["speedup_fwdbwd"] = py["fwdbwd_s"].get<double>() / t_fb;
    }
    if (py.contains("fwd_min_s")) {
      r["speedup_fwd_min"] = py["fwd_min_s"].get<double>() / tf.min_wall;
      r["speedup_fwdbwd_min"] = py["fwdbwd_min_s"].get<double>() / tb.min_wall;
    }
    if (py.contains("fwd_cpu_s")) {
      r["speedup_fwd_cpu"] = py["fwd_cpu_s"].get<double>() / tf.cpu;
      r["speedup_fwdbwd_cpu"] = py["fwdbwd_cpu_s"].get<double>() / tb.cpu;
    }
  }
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"ttt_bench: TTT scan throughput vs the op-by-op Python reference"};
  BenchOptions o;
  // The reference script sits beside this source file; the torch venv python comes from
  // --python, $MTT_PYTHON or the conventional venv path (docs/conventions.md).
  o.ref_script = (std::filesystem::path(__FILE__).parent_path() / "ref" / "ttt_ref.py").string();
  if (const char* p = std::getenv("MTT_PYTHON")) o.python = p;
  if (o.python.empty())
    if (const char* home = std::getenv("HOME")) {
      std::string venv = std::string(home) + "/.cache/moshi-ttt/torch-venv/bin/python";
      if (std::filesystem::exists(venv)) o.python = venv;
    }
  app.add_option("--shapes", o.shapes, "moshi and/or dit")->check(CLI::IsMember({"moshi", "dit"}));
  app.add_option("--seq-len", o.seq_len, "tokens per sequence (default 2048)");
  app.add_option("--iters", o.iters, "timed iterations (median)");
  app.add_option("--warmup", o.warmup, "untimed iterations");
  app.add_option("--threads", o.threads, "intra-op threads (0: LibTorch default)");
  app.add_option("--inner", o.inner, "mlp or linear")->check(CLI::IsMember({"mlp", "linear"}));
  app.add_option("--python", o.python, "python of the torch venv for bench/ref/ttt_ref.py (env MTT_PYTHON)");
  app.add_flag("--no-python", o.no_python, "skip the Python reference");
  app.add_flag("--with-reference", o.with_reference, "also time the C++ op-by-op path (ttt_scan_reference)");
  app.add_flag("--json", o.json, "print JSON");
  CLI11_PARSE(app, argc, argv);
  try {
    if (o.threads > 0) at::set_num_threads(o.threads);
    nlohmann::json all = nlohmann::json::array();
    for (auto& name : o.shapes) {
      Shape s = name == "moshi" ? Shape{"moshi", 1, 32, 128, 32, o.seq_len, "causal"}
                                : Shape{"dit", 1, 48, 64, 64, o.seq_len, "dit"};
      if (s.L % s.b != 0) throw mtt::Error("", "--seq-len", "must be a multiple of b = " + std::to_string(s.b), mtt::ErrorKind::Usage);
      nlohmann::json r = bench_shape(o, s);
      if (!o.json) {
        std::printf("%-6s cpp fwd %.0f tok/s, fwd+bwd %.0f tok/s, %.1f GFLOP/s (matmul %.1f)", name.c_str(),
                    r["cpp"]["fwd_tokens_per_s"].get<double>(), r["cpp"]["fwdbwd_tokens_per_s"].get<double>(),
                    r["cpp"]["fwd_gflops"].get<double>(), r["matmul_gflops"].get<double>());
        if (r.contains("speedup_fwd"))
          std::printf("; vs python x%.2f fwd, x%.2f fwd+bwd (best of %d: x%.2f, x%.2f; cpu time x%.2f, x%.2f)",
                      r["speedup_fwd"].get<double>(), r["speedup_fwdbwd"].get<double>(), o.iters,
                      r.value("speedup_fwd_min", 0.0), r.value("speedup_fwdbwd_min", 0.0),
                      r.value("speedup_fwd_cpu", 0.0), r.value("speedup_fwdbwd_cpu", 0.0));
        std::printf("\n");
      }
      all.push_back(r);
    }
    if (o.json) std::cout << all.dump(2) << "\n";
    return 0;
  } catch (const mtt::Error& e) {
    std::cerr << "ttt_bench: " << e.what() << "\n";
    return e.exit_status();
  }
}
