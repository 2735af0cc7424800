#pragma once
// The TTT scan algorithm, written once for the CUDA kernels (cuda/) and for their CPU copy (cpu_ref/,
// test code), so the algorithm, the buffer plan and the layouts that the kernels run are tested on
// machines without a GPU. Framework-free (no LibTorch).
//
// An `Exec` supplies the parallelism: tid/nt (this thread and the thread count of the block; 0/1 on
// the CPU), sync() (__syncthreads / nothing) and mm() (a block-wide GEMM: SIMT fp32 or bf16 tensor
// cores with fp32 accumulation on the GPU, float loops on the CPU). Every primitive ends in a sync.
//
// Math (docs/ttt.md §2, per (batch, head), per mini-batch, inner model of depth n = 1 or 2):
//   X0 = XK, Zk = Xk Wk + bk, X1 = gelu(Z0); T = XV - XK
//   G_{n-1} = ln_fused_l2_bwd(Z_{n-1}, T); G0 = (G1 W1^T) * gelu'(Z0)         (§2.1 step 3)
//   Xbar0 = XQ, Mk = eta * (Xbar_k X_k^T + 1)  [(eta*A) G + eta G, §2.1 steps 4-5, one GEMM]
//   Zbar_k = Xbar_k W_k + b_k - Mk G_k, Xbar1 = gelu(Zbar0); XQW = XQ + LN(Zbar_{n-1}) (step 7)
//   W_k -= X_k^T (e * G_k), b_k -= sum_j e_j G_k,j with e = eta[b-1, :]             (step 6)
// eta arrives as the full b x b matrix, so the causal form (tril + token factor, §2.2) and the DiT
// form (identical rows, §1.1 step 7) are the same code; we never "update first, then evaluate", which
// would only be right for identical rows (golden *_op_general_eta files check this).
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "kernels/common/gelu.h"
#include "kernels/ttt_scan/params.h"

#if defined(__CUDACC__)
#define MTT_FN __host__ __device__ inline
#else
#define MTT_FN inline
#endif

namespace mtt::kernels::algo {

#define MTT_FOR(x, i, n) for (int i = (x).tid; i < (n); i += (x).nt)

// ---- element conversion (bit exact on host and device) ----
MTT_FN float bf16_to_f32(uint16_t h) {
  uint32_t u = static_cast<uint32_t>(h) << 16;
  float f;
  memcpy(&f, &u, 4);
  return f;
}
MTT_FN uint16_t f32_to_bf16(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  if ((u & 0x7f800000u) == 0x7f800000u && (u & 0x007fffffu)) return static_cast<uint16_t>((u >> 16) | 0x40);  // NaN
  u += 0x7fffu + ((u >> 16) & 1u);  // round to nearest even
  return static_cast<uint16_t>(u >> 16);
}
MTT_FN float load_io(const void* p, IoType io, size_t i) {
  return io == IoType::f32 ? static_cast<const float*>(p)[i] : bf16_to_f32(static_cast<const uint16_t*>(p)[i]);
}
MTT_FN void store_io(void* p, IoType io, size_t i, float v) {
  if (io == IoType::f32)
    static_cast<float*>(p)[i] = v;
  else
    static_cast<uint16_t*>(p)[i] = f32_to_bf16(v);
}

// ---- GELU, tanh approximation (kernels/common/gelu.h) ----
inline constexpr float kGeluC = static_cast<float>(gelu_tanh::kC);
inline constexpr float kGeluA = static_cast<float>(gelu_tanh::kA);
inline constexpr float kGeluC3 = static_cast<float>(gelu_tanh::kC3);
// The float constants the kernels were validated with (written as float literals before).
static_assert(static_cast<float>(gelu_tanh::kCForward) == kGeluC, "the two c differ in float");
static_assert(kGeluC == 0.79788456f && kGeluA == 0.044715f && kGeluC3 == 0.1070322243f, "GELU constants changed");
MTT_FN float gelu(float z) { return 0.5f * z * (1.0f + tanhf(kGeluC * (z + kGeluA * z * z * z))); }
MTT_FN float gelu_bwd(float z) {
  float t = tanhf(kGeluC * z * (1.0f + kGeluA * z * z));
  return 0.5f * (1.0f + t) + 0.5f * z * (1.0f - t * t) * (kGeluC + kGeluC3 * z * z);
}

// ---- buffer plan: the same on host (sizing) and device (carving) ----
// Buffers are placed greedily, in this order, into shared memory while they fit the budget and into
// the per-(batch, head) global workspace otherwise: the state first (so it stays on chip across
// mini-batches whenever it fits, spec §5.4), then the small tiles.
enum FwdBuf { fW0, fB0, fW1, fB1, fXq, fXk, fT, fE, fM, fZ0, fG0, fZb0, fX1, fZ1, fG1, fZb1, kFwdBufs };
enum BwdBuf {
  bW, bB, bdW, bdB, bXq, bXk, bT, bE, bM, bA, bZ, bG, bZb, bdO, bdZb, bdG, bdM, bdZ, bdXq, bdXk, bTmp,
  bXh, bDu, bde, bdgam, bdbet, bSaved, bCkpt, kBwdBufs
};

inline constexpr int kMaxBufs = int(kBwdBufs) > int(kFwdBufs) ? int(kBwdBufs) : int(kFwdBufs);
struct Plan {
  size_t off[kMaxBufs];
  bool smem[kMaxBufs];
  size_t smem_floats = 0, global_floats = 0;  // per (batch, head)
};

MTT_FN int group_size(const TTTScanParams& p) {
  return (p.checkpoint_group <= 0 || p.checkpoint_group > p.NC) ? p.NC : p.checkpoint_group;
}
MTT_FN int num_groups(const TTTScanParams& p) {
  int g = group_size(p);
  return (p.NC + g - 1) / g;
}
MTT_FN int inner_width(const TTTScanParams& p) { return p.depth == 2 ? p.hidden : p.d; }
MTT_FN size_t state_floats(const TTTScanParams& p) {
  const size_t d = p.d, m1 = inner_width(p);
  return d * m1 + m1 + (p.depth == 2 ? m1 * d + d : 0);
}

MTT_FN void place(Plan& pl, int idx, size_t n, size_t budget) {
  n = (n + 3) & ~size_t(3);  // 16-byte alignment of every buffer
  if (n > 0 && pl.smem_floats + n <= budget) {
    pl.smem[idx] = true;
    pl.off[idx] = pl.smem_floats;
    pl.smem_floats += n;
  } else {
    pl.smem[idx] = false;
    pl.off[idx] = pl.global_floats;
    pl.global_floats += n;
  }
}

MTT_FN Plan fwd_plan(const TTTScanParams& p, size_t smem_budget_floats) {
  Plan pl{};
  const size_t b = p.b, d = p.d, m1 = inner_width(p), h = p.depth == 2 ? p.hidden : 0;
  const bool two = p.depth == 2;
  size_t sz[kFwdBufs] = {d * m1, m1, two ? h * d : 0, two ? d : 0, b * d, b * d, b * d, b * b, b * b,
                         b * m1, b * m1, b * m1, two ? b * h : 0, two ? b * d : 0, two ? b * d : 0,
                         two ? b * d : 0};
  for (int i = 0; i < kFwdBufs; ++i) place(pl, i, sz[i], smem_budget_floats);
  return pl;
}

// Backward (depth 1): the state and its gradient carry first, then the tiles; the per-group saved
// states (bSaved) last.
MTT_FN Plan bwd_plan(const TTTScanParams& p, size_t smem_budget_floats) {
  Plan pl{};
  const size_t b = p.b, d = p.d, g = group_size(p), sf = d * d + d;
  size_t sz[kBwdBufs] = {d * d, d,     d * d, d,     b * d, b * d, b * d, b * b, b * b, b * b,
                         b * d, b * d, b * d, b * d, b * d, b * d, b * b, b * d, b * d, b * d,
                         b * d, b * d, b * d, b,     d,     d,     g * sf, size_t(num_groups(p)) * sf};
  for (int i = 0; i < kBwdBufs; ++i) place(pl, i, sz[i], smem_budget_floats);
  return pl;
}

MTT_FN float* buf(const Plan& pl, int i, float* smem, float* gmem) { return (pl.smem[i] ? smem : gmem) + pl.off[i]; }

// ---- row-wise LayerNorm pieces (one thread per token row, features in a loop) ----
MTT_FN void row_stats(const float* z, int d, float eps, float& mu, float& sigma) {
  float s = 0.f;
  for (int f = 0; f < d; ++f) s += z[f];
  mu = s / d;
  float v = 0.f;
  for (int f = 0; f < d; ++f) v += (z[f] - mu) * (z[f] - mu);
  sigma = sqrtf(v / d + eps);  // biased variance (ln_fwd in §2)
}

// G = d/dz 1/2||gamma*zhat + beta - t||^2 = (ghat - mean ghat - zhat mean(ghat zhat)) / sigma,
// ghat = gamma*(gamma*zhat + beta - t) (§2 ln_fused_l2_bwd). Returns the loss mean_f (LN(z) - t)^2.
MTT_FN float row_ln_l2_bwd(const float* z, const float* t, const float* gam, const float* bet, int d, float eps,
                           float* G) {
  float mu, sg;
  row_stats(z, d, eps, mu, sg);
  float s1 = 0.f, s2 = 0.f, loss = 0.f;
  for (int f = 0; f < d; ++f) {
    float xh = (z[f] - mu) / sg, g = gam[f] * xh + bet[f] - t[f], gh = gam[f] * g;
    s1 += gh;
    s2 += gh * xh;
    loss += g * g;
  }
  if (G) {
    for (int f = 0; f < d; ++f) {
      float xh = (z[f] - mu) / sg, gh = gam[f] * (gam[f] * xh + bet[f] - t[f]);
      G[f] = (gh - s1 / d - xh * (s2 / d)) / sg;
    }
  }
  return loss / d;
}

MTT_FN float row_ln_l2_loss(const float* z, const float* t, const float* gam, const float* bet, int d, float eps) {
  return row_ln_l2_bwd(z, t, gam, bet, d, eps, nullptr);
}

// ---- one forward mini-batch ----
struct Ctx {
  const TTTScanParams* p;
  Plan pl;
  float* smem;
  float* gmem;
  int bb, hh;
  MTT_FN float* B(int i) const { return buf(pl, i, smem, gmem); }
};

template <class X>
MTT_FN void load_tiles(X& x, const Ctx& c, int t, float* Xq, float* Xk, float* T, float* E) {
  const TTTScanParams& p = *c.p;
  const size_t bd = size_t(p.b) * p.d, bh = size_t(c.bb) * p.H + c.hh;
  const size_t o = (bh * p.NC + t) * bd, oe = (bh * p.NC + t) * size_t(p.b) * p.b;
  MTT_FOR(x, i, static_cast<int>(bd)) {
    Xq[i] = load_io(p.XQ, p.io, o + i);
    float k = load_io(p.XK, p.io, o + i);
    Xk[i] = k;
    T[i] = load_io(p.XV, p.io, o + i) - k;  // target = XV - XK (§2.1 step 2)
  }
  MTT_FOR(x, i, p.b * p.b) E[i] = p.eta[oe + i];
  x.sync();
}

template <class X>
MTT_FN void add_bias(X& x, float* Z, const float* bias, int rows, int cols) {
  MTT_FOR(x, i, rows * cols) Z[i] += bias[i % cols];
  x.sync();
}

// Keys through the inner model at the current state and the inner gradients G (§2.1 steps 1-3).
// Fills Z0 (overwritten by G0's gelu' product for depth 2), X1, Z1, G0, G1 and the loss-before.
template <class X>
MTT_FN void keys_and_grads(X& x, const Ctx& c, int t, bool keep_z0) {
  const TTTScanParams& p = *c.p;
  const int b = p.b, d = p.d, m1 = inner_width(p);
  const float* gam = p.ln_weight + size_t(c.hh) * d;
  const float* bet = p.ln_bias + size_t(c.hh) * d;
  float *Xk = c.B(fXk), *T = c.B(fT), *W0 = c.B(fW0), *b0 = c.B(fB0), *Z0 = c.B(fZ0), *G0 = c.B(fG0);
  x.mm(Z0, m1, Xk, d, false, W0, m1, false, b, m1, d, 1.f, false);
  add_bias(x, Z0, b0, b, m1);
  float* Zl = Z0;
  float* Gl = G0;
  if (p.depth == 2) {
    float *X1 = c.B(fX1), *W1 = c.B(fW1), *b1 = c.B(fB1), *Z1 = c.B(fZ1), *G1 = c.B(fG1);
    MTT_FOR(x, i, b * m1) X1[i] = gelu(Z0[i]);
    x.sync();
    x.mm(Z1, d, X1, m1, false, W1, d, false, b, d, m1, 1.f, false);
    add_bias(x, Z1, b1, b, d);
    Zl = Z1;
    Gl = G1;
  }
  float* lb = p.loss_before ? p.loss_before + ((size_t(c.bb) * p.H + c.hh) * p.NC + t) * b : nullptr;
  MTT_FOR(x, i, b) {
    float l = row_ln_l2_bwd(Zl + size_t(i) * d, T + size_t(i) * d, gam, bet, d, p.ln_eps, Gl + size_t(i) * d);
    if (lb) lb[i] = l;
  }
  x.sync();
  if (p.depth == 2) {
    // G0 = (G1 W1^T) * gelu'(Z0)
    x.mm(G0, m1, c.B(fG1), d, false, c.B(fW1), d, true, b, m1, d, 1.f, false);
    MTT_FOR(x, i, b * m1) G0[i] *= gelu_bwd(Z0[i]);
    x.sync();
  }
  (void)keep_z0;
}

// State update with the last row of eta (§2.1 step 6). Uses the Zbar buffers as scratch for e*G.
template <class X>
MTT_FN void update_state(X& x, const Ctx& c) {
  const TTTScanParams& p = *c.p;
  const int b = p.b, d = p.d, m1 = inner_width(p);
  const float* e = c.B(fE) + size_t(b - 1) * b;
  for (int k = 0; k < p.depth; ++k) {
    const int mo = k == 0 ? m1 : d, mi = k == 0 ? d : m1;
    float* G = c.B(k == 0 ? fG0 : fG1);
    float* Xin = c.B(k == 0 ? fXk : fX1);
    float* W = c.B(k == 0 ? fW0 : fW1);
    float* bias = c.B(k == 0 ? fB0 : fB1);
    float* Ge = c.B(k == 0 ? fZb0 : fZb1);
    MTT_FOR(x, i, b * mo) Ge[i] = e[i / mo] * G[i];
    x.sync();
    x.mm(W, mo, Xin, mi, true, Ge, mo, false, mi, mo, b, -1.f, true);  // W -= X^T (e*G)
    MTT_FOR(x, q, mo) {
      float s = 0.f;
      for (int j = 0; j < b; ++j) s += Ge[size_t(j) * mo + q];
      bias[q] -= s;
    }
    x.sync();
  }
}

// Queries through the dual form (§2.1 steps 4-5, 7); writes XQW of mini-batch t.
template <class X>
MTT_FN void queries(X& x, const Ctx& c, int t) {
  const TTTScanParams& p = *c.p;
  const int b = p.b, d = p.d, m1 = inner_width(p);
  float *E = c.B(fE), *M = c.B(fM), *Xq = c.B(fXq);
  const float* Xb = Xq;
  int mi = d;
  float* Zb = nullptr;
  for (int k = 0; k < p.depth; ++k) {
    const int mo = k == 0 ? m1 : d;
    const float* Xkk = c.B(k == 0 ? fXk : fX1);
    const float* W = c.B(k == 0 ? fW0 : fW1);
    const float* bias = c.B(k == 0 ? fB0 : fB1);
    const float* G = c.B(k == 0 ? fG0 : fG1);
    Zb = c.B(k == 0 ? fZb0 : fZb1);
    x.mm(M, b, Xb, mi, false, Xkk, mi, true, b, b, mi, 1.f, false);  // A = Xbar X^T
    MTT_FOR(x, i, b * b) M[i] = E[i] * (M[i] + 1.f);                 // eta*A + eta (b-bar term)
    x.sync();
    x.mm(Zb, mo, Xb, mi, false, W, mo, false, b, mo, mi, 1.f, false);
    x.mm(Zb, mo, M, b, false, G, mo, false, b, mo, b, -1.f, true);
    add_bias(x, Zb, bias, b, mo);
    if (k + 1 < p.depth) {
      MTT_FOR(x, i, b * mo) Zb[i] = gelu(Zb[i]);  // Xbar1 in place
      x.sync();
      Xb = Zb;
      mi = mo;
    }
  }
  const float* gam = p.ln_weight + size_t(c.hh) * d;
  const float* bet = p.ln_bias + size_t(c.hh) * d;
  const size_t o = ((size_t(c.bb) * p.H + c.hh) * p.NC + t) * size_t(b) * d;
  MTT_FOR(x, i, b) {
    const float* z = Zb + size_t(i) * d;
    float mu, sg;
    row_stats(z, d, p.ln_eps, mu, sg);
    for (int f = 0; f < d; ++f)
      store_io(p.XQW, p.io, o + size_t(i) * d + f, Xq[size_t(i) * d + f] + gam[f] * (z[f] - mu) / sg + bet[f]);
  }
  x.sync();
}

template <class X>
MTT_FN void loss_after(X& x, const Ctx& c, int t) {
  const TTTScanParams& p = *c.p;
  const int b = p.b, d = p.d, m1 = inner_width(p);
  float *Z0 = c.B(fZ0), *Xk = c.B(fXk), *T = c.B(fT);
  x.mm(Z0, m1, Xk, d, false, c.B(fW0), m1, false, b, m1, d, 1.f, false);
  add_bias(x, Z0, c.B(fB0), b, m1);
  float* Zl = Z0;
  if (p.depth == 2) {
    float *X1 = c.B(fX1), *Z1 = c.B(fZ1);
    MTT_FOR(x, i, b * m1) X1[i] = gelu(Z0[i]);
    x.sync();
    x.mm(Z1, d, X1, m1, false, c.B(fW1), d, false, b, d, m1, 1.f, false);
    add_bias(x, Z1, c.B(fB1), b, d);
    Zl = Z1;
  }
  const float* gam = p.ln_weight + size_t(c.hh) * d;
  const float* bet = p.ln_bias + size_t(c.hh) * d;
  float* la = p.loss_after + ((size_t(c.bb) * p.H + c.hh) * p.NC + t) * b;
  MTT_FOR(x, i, b) la[i] = row_ln_l2_loss(Zl + size_t(i) * d, T + size_t(i) * d, gam, bet, d, p.ln_eps);
  x.sync();
}

// State pointers <-> contiguous state record [W0 | b0 | W1 | b1].
template <class X>
MTT_FN void copy_state(X& x, const Ctx& c, float* rec, bool to_rec) {
  const TTTScanParams& p = *c.p;
  const int m1 = inner_width(p);
  const size_t n[4] = {size_t(p.d) * m1, size_t(m1), p.depth == 2 ? size_t(m1) * p.d : 0, p.depth == 2 ? size_t(p.d) : 0};
  const int ids[4] = {fW0, fB0, fW1, fB1};
  size_t o = 0;
  for (int k = 0; k < 4; ++k) {
    float* s = c.B(ids[k]);
    MTT_FOR(x, i, static_cast<int>(n[k])) {
      if (to_rec)
        rec[o + i] = s[i];
      else
        s[i] = rec[o + i];
    }
    o += n[k];
  }
  x.sync();
}

// The whole forward scan of one (batch, head).
template <class X>
MTT_FN void forward_scan(X& x, const Ctx& c) {
  const TTTScanParams& p = *c.p;
  const int m1 = inner_width(p);
  const size_t bh = size_t(c.bb) * p.H + c.hh;
  // Initial state -> working state.
  const size_t n[2][2] = {{size_t(p.d) * m1, size_t(m1)}, {size_t(m1) * p.d, size_t(p.d)}};
  for (int k = 0; k < p.depth; ++k) {
    float* W = c.B(k == 0 ? fW0 : fW1);
    float* bias = c.B(k == 0 ? fB0 : fB1);
    MTT_FOR(x, i, static_cast<int>(n[k][0])) W[i] = p.W_in[k][bh * n[k][0] + i];
    MTT_FOR(x, i, static_cast<int>(n[k][1])) bias[i] = p.b_in[k][bh * n[k][1] + i];
  }
  x.sync();
  const int g = group_size(p), ng = num_groups(p);
  const size_t sf = state_floats(p);
  for (int t = 0; t < p.NC; ++t) {
    if (p.checkpoints && t % g == 0) copy_state(x, c, p.checkpoints + (bh * ng + t / g) * sf, true);
    load_tiles(x, c, t, c.B(fXq), c.B(fXk), c.B(fT), c.B(fE));
    keys_and_grads(x, c, t, false);
    queries(x, c, t);
    update_state(x, c);
    if (p.loss_after) loss_after(x, c, t);
  }
  for (int k = 0; k < p.depth; ++k) {
    float* W = c.B(k == 0 ? fW0 : fW1);
    float* bias = c.B(k == 0 ? fB0 : fB1);
    MTT_FOR(x, i, static_cast<int>(n[k][0])) p.W_out[k][bh * n[k][0] + i] = W[i];
    MTT_FOR(x, i, static_cast<int>(n[k][1])) p.b_out[k][bh * n[k][1] + i] = bias[i];
  }
  x.sync();
}


// ---- backward of the TTT-Linear scan (depth 1), recompute per checkpoint group (spec §3, §5.2) ----
// For one mini-batch with start state (W, b), Z = XK W + b, G = ln_fused_l2_bwd(Z, T), A = XQ XK^T,
// M = eta * (A + 1), Zbar = XQ W + b - M G, out = XQ + LN(Zbar), W' = W - XK^T (e*G), b' = b - e^T G.
// Given dout and the cotangent (dW', db') of the next state this produces dXQ, dXK, dXV, deta,
// dgamma, dbeta and (dW, db) of the start state, which becomes the carry for the mini-batch before.

// Keys, inner gradient and state update of mini-batch t (no output): the recompute step.
template <class X>
MTT_FN void lin_recompute_step(X& x, const Ctx& c, int t, bool update) {
  const TTTScanParams& p = *c.p;
  const int b = p.b, d = p.d;
  const float* gam = p.ln_weight + size_t(c.hh) * d;
  const float* bet = p.ln_bias + size_t(c.hh) * d;
  float *Xk = c.B(bXk), *T = c.B(bT), *W = c.B(bW), *bias = c.B(bB), *Z = c.B(bZ), *G = c.B(bG);
  load_tiles(x, c, t, c.B(bXq), Xk, T, c.B(bE));
  x.mm(Z, d, Xk, d, false, W, d, false, b, d, d, 1.f, false);
  add_bias(x, Z, bias, b, d);
  MTT_FOR(x, i, b) row_ln_l2_bwd(Z + size_t(i) * d, T + size_t(i) * d, gam, bet, d, p.ln_eps, G + size_t(i) * d);
  x.sync();
  if (!update) return;
  const float* e = c.B(bE) + size_t(b - 1) * b;
  float* Ge = c.B(bTmp);
  MTT_FOR(x, i, b * d) Ge[i] = e[i / d] * G[i];
  x.sync();
  x.mm(W, d, Xk, d, true, Ge, d, false, d, d, b, -1.f, true);
  MTT_FOR(x, q, d) {
    float s = 0.f;
    for (int j = 0; j < b; ++j) s += Ge[size_t(j) * d + q];
    bias[q] -= s;
  }
  x.sync();
}

template <class X>
MTT_FN void copy_lin_state(X& x, const Ctx& c, float* rec, bool to_rec) {
  const int d = c.p->d;
  float *W = c.B(bW), *bias = c.B(bB);
  MTT_FOR(x, i, d * d + d) {
    float* s = i < d * d ? W + i : bias + (i - d * d);
    if (to_rec)
      rec[i] = *s;
    else
      *s = rec[i];
  }
  x.sync();
}

template <class X>
MTT_FN void lin_backward_step(X& x, const Ctx& c, const TTTScanGradParams& gp, int t) {
  const TTTScanParams& p = *c.p;
  const int b = p.b, d = p.d;
  const float* gam = p.ln_weight + size_t(c.hh) * d;
  const float* bet = p.ln_bias + size_t(c.hh) * d;
  const size_t bh = size_t(c.bb) * p.H + c.hh;
  const size_t o = (bh * p.NC + t) * size_t(b) * d, oe = (bh * p.NC + t) * size_t(b) * b;
  float *Xq = c.B(bXq), *Xk = c.B(bXk), *T = c.B(bT), *E = c.B(bE), *M = c.B(bM), *A = c.B(bA);
  float *W = c.B(bW), *bias = c.B(bB), *dW = c.B(bdW), *dB = c.B(bdB);
  float *Z = c.B(bZ), *G = c.B(bG), *Zb = c.B(bZb), *dO = c.B(bdO), *dZb = c.B(bdZb), *dG = c.B(bdG);
  float *dM = c.B(bdM), *dZ = c.B(bdZ), *dXq = c.B(bdXq), *dXk = c.B(bdXk), *Tmp = c.B(bTmp);
  float *Xh = c.B(bXh), *Du = c.B(bDu), *de = c.B(bde), *dgam = c.B(bdgam), *dbet = c.B(bdbet);

  // Recompute the forward of this mini-batch (Z, G, A, M, Zbar) from the start state.
  lin_recompute_step(x, c, t, false);
  x.mm(A, b, Xq, d, false, Xk, d, true, b, b, d, 1.f, false);
  MTT_FOR(x, i, b * b) M[i] = E[i] * (A[i] + 1.f);
  x.sync();
  x.mm(Zb, d, Xq, d, false, W, d, false, b, d, d, 1.f, false);
  x.mm(Zb, d, M, b, false, G, d, false, b, d, b, -1.f, true);
  add_bias(x, Zb, bias, b, d);
  MTT_FOR(x, i, b * d) dO[i] = gp.dXQW[o + i];
  x.sync();

  // Output LN: out = XQ + gamma*xhat + beta -> dZbar, dgamma, dbeta; dXQ = dout (residual).
  MTT_FOR(x, j, b) {
    const float* z = Zb + size_t(j) * d;
    float mu, sg;
    row_stats(z, d, p.ln_eps, mu, sg);
    float s1 = 0.f, s2 = 0.f;
    for (int f = 0; f < d; ++f) {
      float xh = (z[f] - mu) / sg, dx = dO[size_t(j) * d + f] * gam[f];
      Xh[size_t(j) * d + f] = xh;
      s1 += dx;
      s2 += dx * xh;
    }
    for (int f = 0; f < d; ++f) {
      float xh = Xh[size_t(j) * d + f], dx = dO[size_t(j) * d + f] * gam[f];
      dZb[size_t(j) * d + f] = (dx - s1 / d - xh * (s2 / d)) / sg;
      dXq[size_t(j) * d + f] = dO[size_t(j) * d + f];
    }
  }
  x.sync();
  MTT_FOR(x, f, d) {
    float sg = 0.f, sb = 0.f;
    for (int j = 0; j < b; ++j) {
      sg += dO[size_t(j) * d + f] * Xh[size_t(j) * d + f];
      sb += dO[size_t(j) * d + f];
    }
    dgam[f] += sg;
    dbet[f] += sb;
  }
  x.sync();

  // Zbar -= M G: dM = -dZbar G^T, dG = -M^T dZbar.
  x.mm(dM, b, dZb, d, false, G, d, true, b, b, d, -1.f, false);
  x.mm(dG, d, M, b, true, dZb, d, false, b, d, b, -1.f, false);

  // Carry W' = W - XK^T (e*G), b' = b - e^T G with cotangent (dW', db') = (dW, dB) before this step.
  const float* e = E + size_t(b - 1) * b;
  x.mm(Tmp, d, Xk, d, false, dW, d, false, b, d, d, 1.f, false);  // XK dW'
  MTT_FOR(x, i, b * d) dG[i] -= e[i / d] * (Tmp[i] + dB[i % d]);
  x.sync();
  x.mm(Tmp, d, G, d, false, dW, d, true, b, d, d, 1.f, false);  // P = G dW'^T
  MTT_FOR(x, j, b) {
    float s = 0.f;
    for (int f = 0; f < d; ++f) {
      s += Xk[size_t(j) * d + f] * Tmp[size_t(j) * d + f] + G[size_t(j) * d + f] * dB[f];
      dXk[size_t(j) * d + f] = -e[j] * Tmp[size_t(j) * d + f];
    }
    de[j] = -s;
  }
  x.sync();

  // M = eta * (A + 1): deta = dM * (A + 1) (+ de on the last row), dA = dM * eta.
  MTT_FOR(x, i, b * b) {
    float v = dM[i] * (A[i] + 1.f);
    if (i / b == b - 1) v += de[i % b];
    gp.deta[oe + i] = v;
    dM[i] *= E[i];
  }
  x.sync();
  x.mm(dXq, d, dM, b, false, Xk, d, false, b, d, b, 1.f, true);  // dXQ += dA XK
  x.mm(dXk, d, dM, b, true, Xq, d, false, b, d, b, 1.f, true);   // dXK += dA^T XQ

  // G = ln_fused_l2_bwd(Z, T): backward to Z, T, gamma, beta (the derivation is in the comment of
  // row_ln_l2_bwd: G = P(u)/sigma with u = gamma*(gamma*zhat + beta - t), P the LN projection).
  MTT_FOR(x, j, b) {
    const float* z = Z + size_t(j) * d;
    const float* tt = T + size_t(j) * d;
    const float* dg = dG + size_t(j) * d;
    const float* gg = G + size_t(j) * d;
    float mu, sg;
    row_stats(z, d, p.ln_eps, mu, sg);
    float a = 0.f, c2 = 0.f, cu = 0.f, dsig = 0.f;
    for (int f = 0; f < d; ++f) {
      float xh = (z[f] - mu) / sg, u = gam[f] * (gam[f] * xh + bet[f] - tt[f]);
      a += dg[f];
      c2 += dg[f] * xh;
      cu += u * xh;
      dsig -= dg[f] * gg[f];
    }
    a /= d;
    c2 /= d;
    cu /= d;
    dsig /= sg;
    float m1 = 0.f, m2 = 0.f;
    for (int f = 0; f < d; ++f) {
      float xh = (z[f] - mu) / sg, u = gam[f] * (gam[f] * xh + bet[f] - tt[f]);
      float du = (dg[f] - a - xh * c2) / sg;
      float dxh = gam[f] * gam[f] * du - (dg[f] * cu + u * c2) / sg;
      Du[size_t(j) * d + f] = du;
      Xh[size_t(j) * d + f] = xh;
      dZ[size_t(j) * d + f] = dxh;  // dxhat for now
      m1 += dxh;
      m2 += dxh * xh;
    }
    m1 /= d;
    m2 /= d;
    for (int f = 0; f < d; ++f) {
      float xh = Xh[size_t(j) * d + f], dxh = dZ[size_t(j) * d + f];
      dZ[size_t(j) * d + f] = (dxh - m1 - xh * m2) / sg + dsig * xh / d;
      float dT = -gam[f] * Du[size_t(j) * d + f];
      gp.dXV[o + size_t(j) * d + f] = dT;          // T = XV - XK
      dXk[size_t(j) * d + f] -= dT;
    }
  }
  x.sync();
  MTT_FOR(x, f, d) {
    float sg = 0.f, sb = 0.f;
    for (int j = 0; j < b; ++j) {
      float du = Du[size_t(j) * d + f], xh = Xh[size_t(j) * d + f];
      sg += du * (2.f * gam[f] * xh + bet[f] - T[size_t(j) * d + f]);
      sb += gam[f] * du;
    }
    dgam[f] += sg;
    dbet[f] += sb;
  }
  x.sync();

  // Z = XK W + b, Zbar = XQ W + b - ...: input gradients, then the state gradient (new carry).
  x.mm(dXq, d, dZb, d, false, W, d, true, b, d, d, 1.f, true);
  x.mm(dXk, d, dZ, d, false, W, d, true, b, d, d, 1.f, true);
  x.mm(dW, d, Xq, d, true, dZb, d, false, d, d, b, 1.f, true);
  x.mm(dW, d, Xk, d, true, dZ, d, false, d, d, b, 1.f, true);
  MTT_FOR(x, q, d) {
    float s = 0.f;
    for (int j = 0; j < b; ++j) s += dZb[size_t(j) * d + q] + dZ[size_t(j) * d + q];
    dB[q] += s;
  }
  MTT_FOR(x, i, b * d) {
    gp.dXQ[o + i] = dXq[i];
    gp.dXK[o + i] = dXk[i];
  }
  x.sync();
}

template <class X>
MTT_FN void linear_backward_scan(X& x, const Ctx& c, const TTTScanGradParams& gp) {
  const TTTScanParams& p = *c.p;
  const int d = p.d, g = group_size(p), ng = num_groups(p);
  const size_t bh = size_t(c.bb) * p.H + c.hh, sf = size_t(d) * d + d;
  float* ck = p.checkpoints ? p.checkpoints + bh * ng * sf : c.B(bCkpt);
  if (!p.checkpoints) {
    // Group-start states by a forward pass without outputs.
    float *W = c.B(bW), *bias = c.B(bB);
    MTT_FOR(x, i, d * d) W[i] = p.W_in[0][bh * d * d + i];
    MTT_FOR(x, i, d) bias[i] = p.b_in[0][bh * d + i];
    x.sync();
    for (int t = 0; t < p.NC; ++t) {
      if (t % g == 0) copy_lin_state(x, c, ck + size_t(t / g) * sf, true);
      if (t + 1 < p.NC) lin_recompute_step(x, c, t, true);
    }
  }
  float *dW = c.B(bdW), *dB = c.B(bdB), *dgam = c.B(bdgam), *dbet = c.B(bdbet), *saved = c.B(bSaved);
  MTT_FOR(x, i, d * d) dW[i] = gp.dW_out[0] ? gp.dW_out[0][bh * d * d + i] : 0.f;
  MTT_FOR(x, i, d) {
    dB[i] = gp.db_out[0] ? gp.db_out[0][bh * d + i] : 0.f;
    dgam[i] = 0.f;
    dbet[i] = 0.f;
  }
  x.sync();
  for (int grp = ng - 1; grp >= 0; --grp) {
    const int t0 = grp * g, t1 = (t0 + g < p.NC) ? t0 + g : p.NC;
    copy_lin_state(x, c, ck + size_t(grp) * sf, false);
    for (int t = t0; t < t1; ++t) {
      copy_lin_state(x, c, saved + size_t(t - t0) * sf, true);
      if (t + 1 < t1) lin_recompute_step(x, c, t, true);
    }
    for (int t = t1 - 1; t >= t0; --t) {
      copy_lin_state(x, c, saved + size_t(t - t0) * sf, false);
      lin_backward_step(x, c, gp, t);
    }
  }
  MTT_FOR(x, i, d * d) gp.dW_in[0][bh * d * d + i] = dW[i];
  MTT_FOR(x, i, d) {
    gp.db_in[0][bh * d + i] = dB[i];
    gp.dln_weight[bh * d + i] = dgam[i];
    gp.dln_bias[bh * d + i] = dbet[i];
  }
  x.sync();
}

}  // namespace mtt::kernels::algo
