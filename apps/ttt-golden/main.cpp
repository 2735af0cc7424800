// ttt-golden: runs golden reference files (shared/golden format) through our implementation and
// prints, per case, the max absolute and relative error of every output and gradient against the
// README tolerance. Arguments are files or folders (every *.safetensors in them; a Moshi LM triple
// counts once). Exit 0 all pass, 1 any case fails, 2 a file cannot be run, 64 bad usage.
#include <CLI/CLI.hpp>

#include <cstdio>
#include <filesystem>
#include <iostream>
#include <limits>
#include <string>
#include <vector>

#include "app_main.h"
#include "flags.h"
#include "core/error.h"
#include "core/progress.h"
#include "golden/golden_runner.h"

namespace {

struct GoldenOptions {
  std::vector<std::string> paths;
  std::string dtype = "f32";
  std::string against = "f64";
  bool json = false;
  bool verbose = false;
  bool progress = false;
  double tol_out = -1, tol_grad = -1;
};

void declare(CLI::App& app, GoldenOptions& o) {
  app.add_option("paths", o.paths, "golden safetensors files or folders of them")->required();
  app.add_option("--dtype", o.dtype, "dtype our implementation runs in (both: one report per dtype)")
      ->check(CLI::IsMember({"f32", "f64", "both"}));
  app.add_option("--against", o.against,
                 "reference tensors: f64 (out.*/grad.*), f32 (out_f32.*/grad_f32.*) or both")
      ->check(CLI::IsMember({"f32", "f64", "both"}));
  app.add_flag("--json", o.json, "a JSON array, one object per case and run: case, family, per-tensor errors, tolerance, pass");
  app.add_flag("-v,--verbose", o.verbose, "table: every tensor, not only the failing ones");
  app.add_flag("--progress", o.progress, "progress line on stderr (runs done, rate, ETA)");
  app.add_option("--tol-out", o.tol_out, "relative tolerance for outputs (default: README, by dtype and fidelity class)")
      ->check(mtt::app::number_range(0, std::numeric_limits<double>::max(), /*open_lo=*/true))
      ->default_str("README");
  app.add_option("--tol-grad", o.tol_grad, "relative tolerance for gradients (default: README)")
      ->check(mtt::app::number_range(0, std::numeric_limits<double>::max(), /*open_lo=*/true))
      ->default_str("README");
}

void print_row(const mtt::golden::Report& r, bool verbose) {
  if (!r.error.empty()) {
    std::printf("%-40s %-24s %s/%s  ERROR  %s\n", r.case_name.c_str(), r.family.c_str(), r.dtype.c_str(),
                r.reference.c_str(), r.error.c_str());
    return;
  }
  double wo = 0, wg = 0;
  int no = 0, ng = 0;
  for (const auto& t : r.tensors) (t.is_grad ? wg : wo) = std::max(t.is_grad ? wg : wo, t.rel), ++(t.is_grad ? ng : no);
  std::printf("%-40s %-24s %s/%s  out %2d worst %.2e (tol %.0e)  grad %2d worst %.2e (tol %.0e)  %s\n",
              r.case_name.c_str(), r.family.c_str(), r.dtype.c_str(), r.reference.c_str(), no, wo, r.tol_out, ng, wg,
              r.tol_grad, r.pass() ? "pass" : "FAIL");
  for (const auto& t : r.tensors)
    if (verbose || !t.pass)
      std::printf("    %-50s rel %.3e  abs %.3e  ref max %.3e  tol %.0e%s  %s\n", t.name.c_str(), t.rel, t.max_abs,
                  t.ref_max_abs, t.tol, t.exact_zero ? " (exact zero)" : "", t.pass ? "pass" : "FAIL");
}

int run(const GoldenOptions& o) {
  std::vector<at::ScalarType> dtypes;
  if (o.dtype != "f64") dtypes.push_back(at::kFloat);
  if (o.dtype != "f32") dtypes.push_back(at::kDouble);
  std::vector<bool> refs;
  if (o.against != "f32") refs.push_back(false);
  if (o.against != "f64") refs.push_back(true);

  // Cases first, so that a bad path is a usage-free input error before any work.
  std::vector<std::string> cases;
  for (const auto& p : o.paths) {
    if (std::filesystem::is_directory(p)) {
      auto c = mtt::golden::golden_cases(p);
      if (c.empty()) throw mtt::Error(p, "", "no *.safetensors golden files in this folder");
      cases.insert(cases.end(), c.begin(), c.end());
    } else if (std::filesystem::is_regular_file(p)) {
      cases.push_back(p);
    } else {
      throw mtt::Error(p, "", "no such file or folder");
    }
  }

  bool any_fail = false, any_error = false, first = true;
  mtt::Progress bar("ttt-golden", cases.size() * dtypes.size() * refs.size(), o.progress, "run");
  if (o.json) std::cout << "[\n";
  for (const auto& c : cases) {
    for (at::ScalarType dt : dtypes) {
      for (bool f32 : refs) {
        mtt::golden::RunOptions ro;
        ro.dtype = dt;
        ro.against_f32 = f32;
        ro.tol_out = o.tol_out;
        ro.tol_grad = o.tol_grad;
        mtt::golden::Report r;
        try {
          r = mtt::golden::run_golden(c, ro);
        } catch (const mtt::Error& e) {
          if (e.kind() != mtt::ErrorKind::Input) throw;
          r.file = c;
          r.case_name = std::filesystem::path(c).stem().string();
          r.dtype = dt == at::kDouble ? "f64" : "f32";
          r.reference = f32 ? "f32" : "f64";
          r.error = e.what();
          std::fprintf(stderr, "ttt-golden: %s\n", e.what());
        }
        any_error = any_error || !r.error.empty();
        any_fail = any_fail || !r.pass();
        if (o.json) {
          std::cout << (first ? "" : ",\n") << r.to_json();
        } else {
          print_row(r, o.verbose);
        }
        first = false;
        bar.advance();
      }
    }
  }
  bar.finish();
  if (o.json) std::cout << "\n]\n";
  if (any_error) return mtt::kExitInput;
  return any_fail ? mtt::kExitFindings : mtt::kExitOk;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"ttt-golden: compare golden reference files (files or folders) with our implementation"};
  GoldenOptions o;
  declare(app, o);
  return mtt::app::run(app, argc, argv, "ttt-golden", [&] { return run(o); });
}
