// ttt-golden: checks golden reference files (shared/golden format) against our TTT implementation
// and prints, as JSON, the max absolute and relative error of every output and gradient.
#include <CLI/CLI.hpp>
#include <iostream>
#include <string>
#include <vector>

#include "app_main.h"
#include "core/error.h"
#include "ttt/golden_runner.h"

namespace {

struct GoldenOptions {
  std::vector<std::string> files;
  std::string dtype = "f32";
  std::string against = "f64";
  double tol_out = -1, tol_grad = -1;
};

void declare(CLI::App& app, GoldenOptions& o) {
  app.add_option("files", o.files, "golden safetensors files")->required()->check(CLI::ExistingFile);
  app.add_option("--dtype", o.dtype, "dtype our implementation runs in")->check(CLI::IsMember({"f32", "f64"}));
  app.add_option("--against", o.against, "reference tensors: f64 (out.*/grad.*) or f32 (out_f32.*/grad_f32.*)")
      ->check(CLI::IsMember({"f32", "f64"}));
  app.add_option("--tol-out", o.tol_out, "relative tolerance for outputs (default: README, by dtype and fidelity class)");
  app.add_option("--tol-grad", o.tol_grad, "relative tolerance for gradients (default: README)");
}

int run(const GoldenOptions& o) {
  mtt::ttt::GoldenRunOptions ro;
  ro.dtype = o.dtype == "f64" ? at::kDouble : at::kFloat;
  ro.against_f32 = o.against == "f32";
  ro.tol_out = o.tol_out;
  ro.tol_grad = o.tol_grad;
  bool all_pass = true;
  std::cout << "[\n";
  for (size_t i = 0; i < o.files.size(); ++i) {
    mtt::ttt::GoldenReport r = mtt::ttt::run_golden(o.files[i], ro);
    all_pass = all_pass && r.pass();
    std::cout << r.to_json(2) << (i + 1 < o.files.size() ? ",\n" : "\n");
  }
  std::cout << "]\n";
  return all_pass ? mtt::kExitOk : mtt::kExitFindings;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"ttt-golden: compare golden reference files with the TTT implementation (JSON)"};
  GoldenOptions o;
  declare(app, o);
  return mtt::app::run(app, argc, argv, "ttt-golden", [&] { return run(o); });
}
