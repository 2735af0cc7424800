#pragma once
// Runs golden reference files (shared/golden format) through our implementation and reports, for
// every stored output (out.* / out_f32.*) and gradient (grad.* / grad_f32.*), the max absolute
// error, the error relative to max|ref| and the README tolerance of the file's fidelity class.
// The family and every shape and hyper-parameter come from the file (golden_families.h), so a new
// file of a known family needs no code change. A verification tool: not part of libmoshi_ttt.
#include <ATen/ATen.h>

#include <optional>
#include <string>
#include <vector>

#include "golden/golden_families.h"

namespace mtt::golden {

struct TensorError {
  std::string name;        // "out.XQW", "grad.W1", "mask", "ce.codebook0", ...
  bool is_grad = false;
  bool exact_zero = false; // the reference is exactly zero: ours must be too (dead parameters)
  double max_abs = 0;      // max |ours - ref|
  double ref_max_abs = 0;  // max |ref|
  double rel = 0;          // max_abs / max|ref| (max_abs when ref is all zero)
  double tol = 0;          // relative tolerance applied
  bool pass = false;
};

struct Report {
  std::string file, case_name, family, fidelity;
  std::string dtype;      // the port's compute dtype: f32 | f64
  std::string reference;  // f64 (out.*/grad.*) or f32 (out_f32.*/grad_f32.*)
  double tol_out = 0, tol_grad = 0;
  std::vector<TensorError> tensors;
  std::string error;      // set when the file could not be run (unreadable, unknown family)
  bool pass() const;
  std::string to_json(int indent = -1) const;
};

struct RunOptions {
  at::ScalarType dtype = at::kFloat;  // the port's compute dtype (kFloat or kDouble)
  bool against_f32 = false;           // compare with out_f32.*/grad_f32.* instead of out.*/grad.*
  double tol_out = -1, tol_grad = -1; // < 0: README tolerances for dtype and fidelity class
};

// One golden case. `path` is a TTT golden file, or any file of a Moshi LM triple
// (<stem>_model / _codes / _out.safetensors). Throws mtt::Error (kind Input) for unreadable files,
// unknown families and files whose tensors do not fit their family.
Report run_golden(const std::string& path, const RunOptions& opt = {});

// The cases in a folder (every *.safetensors, sorted; a Moshi LM triple counts once). Files that
// cannot be run give a Report with `error` set instead of throwing.
std::vector<std::string> golden_cases(const std::string& dir);
std::vector<Report> run_golden_dir(const std::string& dir, const RunOptions& opt = {});

// The cases of one family in the given folders (folders that do not exist are skipped); files whose
// family cannot be read are left out (run_golden_dir reports them).
std::vector<std::string> golden_cases_of(const std::vector<std::string>& dirs, Family family);

// The Moshi LM triple a path belongs to: {model, codes, out}; nullopt when it is not one.
struct MoshiLMFiles {
  std::string stem, model, codes, out;
};
std::optional<MoshiLMFiles> moshi_lm_files(const std::string& path);

}  // namespace mtt::golden
