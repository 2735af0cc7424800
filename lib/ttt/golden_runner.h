#pragma once
// Runs a golden reference file (shared/golden/README.md format) through our TTT implementation and
// reports, for every stored output (out.*) and gradient (grad.*), the max absolute error and the
// error relative to max|ref|, with the README tolerance for the file's fp64 fidelity class.
// The case family is taken from the metadata "case" and everything else (shapes, eps, base_lr,
// checkpoint group, RoPE mode, depth) from the metadata and the stored tensors, so new files of a
// supported family need no code change.
//
// Supported families: vdit_ttt_{mlp,linear}_op[_general_eta], vdit_ttt_*_layer_*, lmpt_ttt_*_dual,
// lmpt_ttt_*_layer[_remainder], ln_reconstruction_target.
#include <ATen/ATen.h>

#include <map>
#include <string>
#include <vector>

namespace mtt::ttt {

struct GoldenTensorError {
  std::string name;        // "out.XQW", "grad.W1", ...
  bool is_grad = false;
  double max_abs = 0;      // max |port - ref|
  double ref_max_abs = 0;  // max |ref|
  double rel = 0;          // max_abs / max|ref| (max_abs when ref is all zero)
  double tol = 0;          // relative tolerance applied
  bool pass = false;
};

struct GoldenReport {
  std::string file, case_name, family, fidelity;  // fidelity: exact | rope32 | tokidx32 | fp32
  std::string dtype;                              // dtype the port ran in: f32 | f64
  std::string reference;                          // f64 (out.*/grad.*) or f32 (out_f32.*/grad_f32.*)
  std::vector<GoldenTensorError> tensors;
  bool pass() const;
  std::string to_json(int indent = 2) const;
};

struct GoldenRunOptions {
  at::ScalarType dtype = at::kFloat;  // the port's compute dtype
  bool against_f32 = false;           // compare with out_f32.*/grad_f32.* instead of out.*/grad.*
  double tol_out = -1, tol_grad = -1; // < 0: README tolerances for dtype and fidelity class
};

// Throws mtt::Error (file, key, reason) for unreadable files and unsupported case families.
GoldenReport run_golden(const std::string& path, const GoldenRunOptions& opt = {});

// "1e-8 (VDIT ...)" -> 1e-8; key=value lookups in metadata strings ("B=2 H=2 ...", "TTTConfig(a=1, ...)").
double parse_leading_number(const std::string& s, double fallback);
bool find_kv(const std::string& s, const std::string& key, std::string& value);

}  // namespace mtt::ttt
