#pragma once
// Parameters shared by the TTT scan launchers (CUDA: cuda/launch.h; their CPU copy, test code:
// cpu_ref/scan_cpu_ref.h). Framework-free: raw pointers, sizes, plain enums (docs/architecture.md
// "Kernels stay framework-free"). All arrays are contiguous, row-major.
//
// Shapes (docs/ttt.md notation): B batch, H heads, NC mini-batches, b mini-batch size, d head dim,
// hidden = TTT-MLP hidden width (4d). depth 1 = TTT-Linear (W1 [d,d]), depth 2 = TTT-MLP
// (W1 [d,hidden], W2 [hidden,d]).
#include <cstddef>
#include <cstdint>

namespace mtt::kernels {

enum class IoType : int { f32 = 0, bf16 = 1 };  // element type of XQ/XK/XV/XQW (state is always fp32)

struct TTTScanParams {
  int B = 0, H = 0, NC = 0, b = 0, d = 0;
  int depth = 1;   // 1: TTT-Linear, 2: TTT-MLP
  int hidden = 0;  // depth 2 only: hidden width of the inner MLP
  IoType io = IoType::f32;

  const void* XQ = nullptr;  // [B,H,NC,b,d]
  const void* XK = nullptr;  // [B,H,NC,b,d]
  const void* XV = nullptr;  // [B,H,NC,b,d], target form: the scan trains on XV - XK (§1.1 step 4)
  // [B,H,NC,b,b] fp32, the full learning-rate matrix of each mini-batch: lower-triangular (tril with
  // the token factor 1/(i+1)+tau_i) for the causal LM form (§2.2), identical rows for the DiT (§1.1 step 7).
  const float* eta = nullptr;
  const float* ln_weight = nullptr;  // [H,d] ttt_norm gamma
  const float* ln_bias = nullptr;    // [H,d] ttt_norm beta
  float ln_eps = 1e-6f;

  // Initial state per (batch, head), fp32: W_in[0] [B,H,d,m1], b_in[0] [B,H,1,m1], and for depth 2
  // W_in[1] [B,H,hidden,d], b_in[1] [B,H,1,d] (m1 = d for depth 1, hidden for depth 2).
  const float* W_in[2] = {nullptr, nullptr};
  const float* b_in[2] = {nullptr, nullptr};
  // Final state (streaming carry), same shapes; must not alias the inputs.
  float* W_out[2] = {nullptr, nullptr};
  float* b_out[2] = {nullptr, nullptr};

  void* XQW = nullptr;  // [B,H,NC,b,d] output, io type: XQ + LN(Zbar) (§2.1 step 7)
  // Optional per-token inner losses [B,H,NC,b] (Figure 5): mean_f (LN(f(XK;W)) - (XV-XK))^2 at the
  // mini-batch start weights (before) and at the updated weights (after).
  float* loss_before = nullptr;
  float* loss_after = nullptr;

  // Optional: the state at the start of every checkpoint group (mini-batches 0, g, 2g, ...),
  // [B,H,ceil(NC/g),state_floats]; written by the forward, read by the backward when given.
  int checkpoint_group = 0;  // g; <= 0 or > NC means one group
  float* checkpoints = nullptr;

  bool tensor_cores = true;  // CUDA: bf16 MMA with fp32 accumulation where the shape allows (sm_80+)
  // Testing: caps the shared memory the buffer plan may use, in floats (< 0: the device's limit),
  // so that small shapes also run with their state and tiles in the global workspace. The results
  // do not depend on it; the workspace sizes above already cover a zero budget.
  long long smem_cap_floats = -1;

  // Device (CUDA) or host (CPU reference) scratch of ttt_scan_workspace_bytes() bytes; the CPU
  // reference allocates its own when null.
  void* workspace = nullptr;
  size_t workspace_bytes = 0;
};

// Gradients for the backward launchers: inputs are the cotangents of XQW and of the final state;
// outputs are fp32, laid out like the corresponding forward inputs.
struct TTTScanGradParams {
  const float* dXQW = nullptr;                  // [B,H,NC,b,d]
  const float* dW_out[2] = {nullptr, nullptr};  // cotangent of the final state (null = 0)
  const float* db_out[2] = {nullptr, nullptr};
  float* dXQ = nullptr;
  float* dXK = nullptr;
  float* dXV = nullptr;
  float* deta = nullptr;                       // [B,H,NC,b,b]
  float* dln_weight = nullptr;                 // [B,H,d] per batch element (caller sums over B)
  float* dln_bias = nullptr;                   // [B,H,d]
  float* dW_in[2] = {nullptr, nullptr};        // of the initial state
  float* db_in[2] = {nullptr, nullptr};
};

struct KernelStatus {
  int code = 0;  // 0 ok, 1 unsupported shape/options, 2 CUDA error, 3 not built with CUDA
  const char* message = "ok";
  bool ok() const { return code == 0; }
};

// Limits of the kernels (spec §5.4: Moshi d = 128, b = 16..64).
inline constexpr int kMaxHeadDim = 128;
inline constexpr int kMaxMiniBatch = 64;

// Floats of one (batch, head) state: d*m1 + m1 (+ hidden*d + d).
size_t ttt_state_floats(const TTTScanParams& p);
// nullptr when the launchers accept p (shapes, pointers), else a one-line reason.
const char* ttt_scan_unsupported(const TTTScanParams& p);
// Scratch bytes the forward / backward launchers need (0 when p is unsupported).
size_t ttt_scan_workspace_bytes(const TTTScanParams& p);
size_t ttt_scan_bwd_workspace_bytes(const TTTScanParams& p);

}  // namespace mtt::kernels
