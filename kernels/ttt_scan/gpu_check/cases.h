#pragma once
// Inputs, host buffers and comparisons of the standalone GPU check (gpu_check.cpp): no LibTorch, no
// libraries beyond the C++ standard library (and, for the GPU half, the CUDA runtime and cuBLAS).
#include <cstdint>
#include <string>
#include <vector>

#include "kernels/ttt_scan/cpu_ref/naive_f64.h"
#include "kernels/ttt_scan/cpu_ref/scan_cpu_ref.h"
#include "kernels/ttt_scan/params.h"

namespace mtt::kernels::check {

struct Shape {
  std::string name;  // "moshi", "dit", ...
  int B, H, NC, b, d;
  bool causal;  // causal LM eta (tril with the token factor) or DiT eta (identical rows)
};

// Inputs of one scan in host memory, float values (bf16 runs round XQ/XK/XV to bf16 first, so the
// CPU and the GPU read identical numbers).
struct Inputs {
  Shape s;
  int depth = 1, hidden = 0;
  IoType io = IoType::f32;
  std::vector<float> XQ, XK, XV, eta, lnw, lnb, W[2], bias[2];
  std::vector<uint16_t> XQ16, XK16, XV16;  // bf16 images when io == bf16
  size_t state_w(int k) const;  // floats of W_k / b_k of one (batch, head)
  size_t state_b(int k) const;
  size_t tokens() const { return size_t(s.B) * s.H * s.NC * s.b * s.d; }
};

Inputs make_inputs(const Shape& s, int depth, IoType io, uint64_t seed);

// Outputs of one forward run in host memory (fp32; XQW widened from bf16 when io == bf16).
struct FwdOut {
  std::vector<float> XQW, W[2], bias[2], loss_before, loss_after, checkpoints;
};
struct BwdOut {
  std::vector<float> dXQ, dXK, dXV, deta, dlnw, dlnb, dW, db;
};
// Cotangents of the backward: of XQW and of the final state.
struct Cotangents {
  std::vector<float> dXQW, dW, db;
};
Cotangents make_cotangents(const Inputs& in, uint64_t seed);

// Where the arrays of one run live (host for the CPU copy, device for the kernels).
struct Ptrs {
  const void *XQ = nullptr, *XK = nullptr, *XV = nullptr;
  const float *eta = nullptr, *lnw = nullptr, *lnb = nullptr, *W[2] = {nullptr, nullptr}, *b[2] = {nullptr, nullptr};
  float *Wo[2] = {nullptr, nullptr}, *bo[2] = {nullptr, nullptr};
  void* XQW = nullptr;
  float *lb = nullptr, *la = nullptr, *ck = nullptr;
};
TTTScanParams make_params(const Inputs& in, const Ptrs& q, int group);
size_t checkpoint_floats(const Inputs& in, int group);

FwdOut run_cpu_forward(const Inputs& in, const CpuRefOptions& o, int group = 0, bool checkpoints = false);
// The backward with the checkpoints of `fwd` when given (else recomputed).
BwdOut run_cpu_backward(const Inputs& in, const Cotangents& c, int group, const FwdOut* fwd, const CpuRefOptions& o);

naive::Problem to_naive(const Inputs& in);

// max |a - r| / max |r| over all elements (0/0 counts as 0); the relative error every comparison uses.
double rel_err(const std::vector<double>& a, const std::vector<double>& r);
std::vector<double> widen(const std::vector<float>& v);
std::vector<double> minus(const std::vector<double>& a, const std::vector<double>& b);
bool bit_equal(const std::vector<float>& a, const std::vector<float>& b);

// Errors of one forward against a reference, each relative to the reference's max magnitude: the
// state update dW = W_out - W_in and db (not W_out: the update is ~0.3 % of |W|), the output, the
// inner losses before and after the update.
struct FwdErr {
  double dW = 0, db = 0, out = 0, lb = 0, la = 0;
  double max() const;
  std::string str() const;
};
FwdErr fwd_err(const Inputs& in, const FwdOut& a, const FwdOut& ref);
FwdErr fwd_err64(const Inputs& in, const FwdOut& a, const naive::Result& ref);

struct BwdErr {
  double dXQ = 0, dXK = 0, dXV = 0, deta = 0, dln = 0, dW = 0, db = 0;
  double max() const;
  std::string str() const;
};
BwdErr bwd_err(const BwdOut& a, const BwdOut& ref);

// Central differences of the fp64 forward's scalar sum(XQW * dXQW) + sum(W_out * dW) + sum(b_out * db)
// (depth 1), laid out like BwdOut (dlnw/dlnb summed over the batch, as [H, d]).
BwdOut finite_differences(const Inputs& in, const Cotangents& c, double h);
// The CPU backward's per-batch ln gradients summed over the batch ([H, d], like finite_differences).
BwdOut sum_ln_over_batch(const Inputs& in, BwdOut g);

// One verdict line: "PASS  name  detail" (or FAIL / SKIP); counted for the exit status.
struct Verdicts {
  int pass = 0, fail = 0, skip = 0;
  void line(const char* status, const std::string& name, const std::string& detail);
  void check(bool ok, const std::string& name, const std::string& detail) { line(ok ? "PASS" : "FAIL", name, detail); }
};

std::string fmt(const char* f, ...);

}  // namespace mtt::kernels::check
