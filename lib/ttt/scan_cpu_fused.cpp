// Fused CPU TTT scan (docs/ttt.md §2 dual form, §3 scan and checkpoint groups): forward and a
// hand-written VJP per mini-batch step, parallel over (batch, head). Notation as in ttt_scan.h:
// layer k has input width m_k and output width m_k+1 (m_0 = m_n = d); X_k/Z_k are the key side,
// Xb_k/Zb_k the query side. Per layer the query rows sit on top of the key rows in one buffer
// (XX_k = [Xb_k; X_k], ZZ_k = [Zb_k; Z_k], 2b rows) so layer 0 needs one GEMM for XQ W_0 and
// XK W_0 and, in the backward, one for each of dW_0 and [dXQ; dXK].
#include "ttt/scan_cpu_fused.h"

#include <torch/csrc/autograd/custom_function.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "core/error.h"
#include "ttt/big_buffer_cache.h"
#include "ttt/head_pool.h"
#include "ttt/scan_cpu_kernels.h"

namespace mtt::ttt {

namespace {

namespace K = cpu;

// Sizes and the layout of one saved step ("slot"): the state at the step's start (W_k, b_k) then
// the activations the VJP reads (ZZ_k, G_k, S_k = G_k+1 W_k+1^T for k < n-1, A_k = Xb_k X_k^T).
struct Layout {
  int64_t BH = 0, H = 0, NC = 0, b = 0, d = 0, n = 0;
  double eps = 1e-6;
  // MultiLayerQuery::fork_updated (ttt_scan.h): the query pass uses eta_q[i, j] = eta[i, j] + e[j],
  // e = eta's last row; the carry keeps e.
  bool query_last_row = false;
  std::vector<int64_t> m;  // m[0..n]
  std::vector<int64_t> woff, boff, zzoff, goff, soff, aoff;
  int64_t state = 0, acts = 0, maxm = 0;
  int64_t slot() const { return state + acts; }

  void build() {
    woff.assign(n, 0);
    boff.assign(n, 0);
    zzoff.assign(n, 0);
    goff.assign(n, 0);
    soff.assign(n, 0);
    aoff.assign(n, 0);
    state = 0;
    for (int64_t k = 0; k < n; ++k) {
      woff[k] = state;
      state += m[k] * m[k + 1];
      boff[k] = state;
      state += m[k + 1];
    }
    acts = 0;
    for (int64_t k = 0; k < n; ++k) {
      zzoff[k] = acts;
      acts += 2 * b * m[k + 1];
      goff[k] = acts;
      acts += b * m[k + 1];
      if (k + 1 < n) {
        soff[k] = acts;
        acts += b * m[k + 1];
      }
      aoff[k] = acts;
      acts += b * b;
    }
    maxm = *std::max_element(m.begin(), m.end());
  }
};

// Raw pointers of one call (all contiguous; per (batch, head) strides follow from Layout).
template <typename T>
struct Ptrs {
  const T *XQ = nullptr, *XK = nullptr, *XV = nullptr, *eta = nullptr, *gamma = nullptr, *beta = nullptr;
  std::vector<const T*> W, B;  // initial states [BH, m_k, m_k+1], [BH, m_k+1]
  std::vector<T*> Wout, Bout;  // final states (may be empty)
  T* XQW = nullptr;            // [BH, NC, b, d] (may be null)
  T *lb = nullptr, *la = nullptr;
};

// Per-thread scratch of the forward and backward steps.
template <typename T>
struct Work {
  std::vector<T> live, acts, XX0, tbuf, Mb, eG;
  std::vector<std::vector<T>> XX, D;  // XX_k (k >= 1, 2b x m_k); D_k = gelu'(Z_k) (k < n-1)
  // backward
  std::vector<T> dstate, dXX0, dT, dM, dA, P, Q, de;
  std::vector<std::vector<T>> dZZ, dXX, dG, DT, DL, D2;
  std::vector<T> group;  // recomputed slots of one checkpoint group

  explicit Work(const Layout& L, bool backward, int64_t group_slots) {
    const int64_t b = L.b, n = L.n;
    live.resize(L.state);
    acts.resize(L.acts);
    XX0.resize(2 * b * L.d);
    tbuf.resize(2 * b * L.maxm);
    Mb.resize(b * b);
    eG.resize(b * L.maxm);
    XX.resize(n);
    D.resize(n);
    // k >= 1: a third block of b rows holds dS_k-1 in the backward (see backward_step).
    for (int64_t k = 1; k < n; ++k) XX[k].resize((backward ? 3 : 2) * b * L.m[k]);
    for (int64_t k = 0; k + 1 < n; ++k) D[k].resize(b * L.m[k + 1]);
    if (!backward) return;
    dstate.resize(L.state);
    dXX0.resize(2 * b * L.d);
    dT.resize(b * L.d);
    dM.resize(b * b);
    dA.resize(b * b);
    P.resize(b * L.maxm);
    Q.resize(b * L.maxm);
    de.resize(b);
    dZZ.resize(n);
    dXX.resize(n);
    dG.resize(n);
    DT.resize(n);
    DL.resize(n);
    D2.resize(n);
    for (int64_t k = 0; k < n; ++k) {
      dZZ[k].resize((k >= 1 ? 3 : 2) * b * L.m[k + 1]);
      dG[k].resize(b * L.m[k + 1]);
      if (k >= 1) dXX[k].resize(2 * b * L.m[k]);
      if (k + 1 < n) {
        DT[k].resize(2 * b * L.m[k + 1]);
        DL[k].resize(b * L.m[k + 1]);
        D2[k].resize(b * L.m[k + 1]);
      }
    }
    group.resize(group_slots * L.slot());
  }
};

template <typename T>
void add_bias_rows(T* Z, const T* bias, int64_t rows, int64_t cols) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) Z[r * cols + c] += bias[c];
}

template <typename T>
void colsum_acc(const T* X, int64_t rows, int64_t cols, T* acc, T scale = T(1)) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) acc[c] += scale * X[r * cols + c];
}

// ---------------------------------------------------------------- forward of one mini-batch step
// State (W_k, b_k) in `live` is updated in place; activations are written to `acts` (a saved slot
// or scratch). out/lb/la may be null.
template <typename T>
void forward_step(const Layout& L, const Ptrs<T>& p, int64_t bh, int64_t i, T* live, T* acts, Work<T>& w, T* out,
                  T* lb, T* la) {
  const int64_t b = L.b, d = L.d, n = L.n;
  const auto& m = L.m;
  const int64_t io = (bh * L.NC + i) * b * d;
  const T *xq = p.XQ + io, *xk = p.XK + io, *xv = p.XV + io;
  const T* et = p.eta + (bh * L.NC + i) * b * b;
  const T *gam = p.gamma + (bh % L.H) * d, *bet = p.beta + (bh % L.H) * d;
  std::memcpy(w.XX0.data(), xq, sizeof(T) * b * d);
  std::memcpy(w.XX0.data() + b * d, xk, sizeof(T) * b * d);
  auto XXk = [&](int64_t k) -> T* { return k == 0 ? w.XX0.data() : w.XX[k].data(); };

  // Keys through the inner model at the step's start weights (§2.1 step 1).
  for (int64_t k = 0; k < n; ++k) {
    T *Wk = live + L.woff[k], *bk = live + L.boff[k], *ZZ = acts + L.zzoff[k];
    if (k == 0) {  // [XQ; XK] W_0: the query half is Zb_0's first term
      K::gemm<T>(false, false, 2 * b, m[1], d, 1, w.XX0.data(), d, Wk, m[1], 0, ZZ, m[1]);
      add_bias_rows(ZZ, bk, 2 * b, m[1]);
    } else {
      K::gemm<T>(false, false, b, m[k + 1], m[k], 1, XXk(k) + b * m[k], m[k], Wk, m[k + 1], 0, ZZ + b * m[k + 1],
                 m[k + 1]);
      add_bias_rows(ZZ + b * m[k + 1], bk, b, m[k + 1]);
    }
    if (k + 1 < n)
      K::gelu_fwd_with_grad(ZZ + b * m[k + 1], b * m[k + 1], XXk(k + 1) + b * m[k + 1], w.D[k].data(), w.tbuf.data());
  }
  // Inner gradients (§2.1 step 3): G_n-1 = ln_fused_l2_bwd(Z_n-1, XV - XK), G_k = (G_k+1 W_k+1^T) * gelu'(Z_k).
  K::ln_l2_grad_rows(acts + L.zzoff[n - 1] + b * d, xv, xk, gam, bet, L.eps, b, d, acts + L.goff[n - 1], lb);
  for (int64_t k = n - 2; k >= 0; --k) {
    T *S = acts + L.soff[k], *G = acts + L.goff[k];
    K::gemm<T>(false, true, b, m[k + 1], m[k + 2], 1, acts + L.goff[k + 1], m[k + 2], live + L.woff[k + 1], m[k + 2], 0,
               S, m[k + 1]);
    const T* Dk = w.D[k].data();
    for (int64_t j = 0; j < b * m[k + 1]; ++j) G[j] = S[j] * Dk[j];
  }
  // Queries (§2.1 steps 4-5): Zb_k = Xb_k W_k + b_k - (eta * (Xb_k X_k^T + 1)) G_k.
  const T* e = et + (b - 1) * b;
  for (int64_t k = 0; k < n; ++k) {
    T *A = acts + L.aoff[k], *ZZ = acts + L.zzoff[k], *M = w.Mb.data();
    const T *Xb = XXk(k), *X = XXk(k) + b * m[k];
    K::gemm<T>(false, true, b, b, m[k], 1, Xb, m[k], X, m[k], 0, A, b);
    if (L.query_last_row) {
      for (int64_t r = 0; r < b; ++r)
        for (int64_t j = 0; j < b; ++j) M[r * b + j] = (et[r * b + j] + e[j]) * (A[r * b + j] + T(1));
    } else {
      for (int64_t j = 0; j < b * b; ++j) M[j] = et[j] * (A[j] + T(1));
    }
    if (k >= 1) {
      K::gemm<T>(false, false, b, m[k + 1], m[k], 1, Xb, m[k], live + L.woff[k], m[k + 1], 0, ZZ, m[k + 1]);
      add_bias_rows(ZZ, live + L.boff[k], b, m[k + 1]);
    }
    K::gemm<T>(false, false, b, m[k + 1], b, -1, M, b, acts + L.goff[k], m[k + 1], 1, ZZ, m[k + 1]);
    if (k + 1 < n) K::gelu_fwd(ZZ, b * m[k + 1], XXk(k + 1), w.tbuf.data());
  }
  // Output rows (§2.1 step 7).
  if (out) K::ln_out_rows(acts + L.zzoff[n - 1], xq, gam, bet, L.eps, b, d, out);
  // Carry with the last row of eta (§2.1 step 6): W_k -= (e * X_k)^T G_k, b_k -= e^T G_k.
  for (int64_t k = 0; k < n; ++k) {
    const T* G = acts + L.goff[k];
    T* eG = w.eG.data();
    const int64_t c = m[k + 1];
    for (int64_t r = 0; r < b; ++r)
      for (int64_t j = 0; j < c; ++j) eG[r * c + j] = e[r] * G[r * c + j];
    K::gemm<T>(true, false, m[k], c, b, -1, XXk(k) + b * m[k], m[k], eG, c, 1, live + L.woff[k], c);
    colsum_acc(eG, b, c, live + L.boff[k], T(-1));
  }
  if (la) {
    // Loss after the update (Figure 5): the keys through the new state; scratch = the slot's A/S
    // space is still needed, so the key buffers of this step are reused (the step is finished).
    for (int64_t k = 0; k < n; ++k) {
      T* Z = w.tbuf.data();  // b x m_k+1 <= 2b x maxm
      const T* X = k == 0 ? xk : XXk(k) + b * m[k];
      K::gemm<T>(false, false, b, m[k + 1], m[k], 1, X, m[k], live + L.woff[k], m[k + 1], 0, Z, m[k + 1]);
      add_bias_rows(Z, live + L.boff[k], b, m[k + 1]);
      if (k + 1 < n) {
        T* t = w.eG.data();  // b x maxm
        K::gelu_fwd(Z, b * m[k + 1], XXk(k + 1) + b * m[k + 1], t);
      } else {
        K::ln_l2_grad_rows<T>(Z, xv, xk, gam, bet, L.eps, b, d, nullptr, la);
      }
    }
  }
}

// ---------------------------------------------------------------- VJP of one mini-batch step
// slot: the step's start state and activations. w.dstate holds dL/d(state after the step) on entry
// (`carry` false: zero) and dL/d(state at the step's start) on exit. dO may be null (zero).
template <typename T>
void backward_step(const Layout& L, const Ptrs<T>& p, int64_t bh, int64_t i, const T* slot, const T* dO, bool carry,
                   Work<T>& w, T* dXQ, T* dXK, T* dXV, T* deta, T* dgam, T* dbet) {
  const int64_t b = L.b, d = L.d, n = L.n;
  const auto& m = L.m;
  const int64_t io = (bh * L.NC + i) * b * d;
  const T *xq = p.XQ + io, *xk = p.XK + io, *xv = p.XV + io;
  const T* et = p.eta + (bh * L.NC + i) * b * b;
  const T *gam = p.gamma + (bh % L.H) * d, *bet = p.beta + (bh % L.H) * d;
  const T* acts = slot + L.state;
  T* ds = w.dstate.data();
  std::memcpy(w.XX0.data(), xq, sizeof(T) * b * d);
  std::memcpy(w.XX0.data() + b * d, xk, sizeof(T) * b * d);
  auto XXk = [&](int64_t k) -> T* { return k == 0 ? w.XX0.data() : w.XX[k].data(); };
  auto dXXk = [&](int64_t k) -> T* { return k == 0 ? w.dXX0.data() : w.dXX[k].data(); };
  // Layer inputs and GELU derivatives from the saved pre-activations (one tanh per layer).
  for (int64_t k = 0; k + 1 < n; ++k) {
    const int64_t c = m[k + 1];
    const T* ZZ = acts + L.zzoff[k];
    K::gelu_bwd_prep<T>(ZZ, b * c, XXk(k + 1), w.DT[k].data(), nullptr, nullptr, w.tbuf.data());
    K::gelu_bwd_prep<T>(ZZ + b * c, b * c, XXk(k + 1) + b * c, w.DT[k].data() + b * c, w.DL[k].data(), w.D2[k].data(),
                        w.tbuf.data());
  }
  std::fill(deta, deta + b * b, T(0));
  // Output: XQW = XQ + LN(Zb_n-1).
  if (dO) {
    K::ln_out_bwd_rows(dO, acts + L.zzoff[n - 1], gam, L.eps, b, d, w.dZZ[n - 1].data(), dgam, dbet);
  } else {
    std::fill(w.dZZ[n - 1].begin(), w.dZZ[n - 1].begin() + b * d, T(0));
  }
  // Carry: W_k' = W_k - X_k^T diag(e) G_k, b_k' = b_k - e^T G_k (gradient passes to W_k, b_k as is).
  const T* e = et + (b - 1) * b;
  std::fill(w.de.begin(), w.de.end(), T(0));
  for (int64_t k = 0; k < n; ++k) {
    const int64_t c = m[k + 1], r = m[k];
    T *dG = w.dG[k].data(), *dX = dXXk(k);
    std::fill(dX, dX + b * r, T(0));  // dXb_k
    if (!carry) {
      std::fill(dG, dG + b * c, T(0));
      std::fill(dX + b * r, dX + 2 * b * r, T(0));
      continue;
    }
    const T *G = acts + L.goff[k], *X = XXk(k) + b * r;
    T *Pm = w.P.data(), *Qm = w.Q.data();
    // P = X_k dW' + 1 db'; Q = G_k dW'^T; dG_k = -e * P; dX_k = -e * Q; de_j = -<P_j, G_j>.
    K::gemm<T>(false, false, b, c, r, 1, X, r, ds + L.woff[k], c, 0, Pm, c);
    add_bias_rows(Pm, ds + L.boff[k], b, c);
    K::gemm<T>(false, true, b, r, c, 1, G, c, ds + L.woff[k], c, 0, Qm, r);
    for (int64_t j = 0; j < b; ++j) {
      T acc = 0;
      for (int64_t q = 0; q < c; ++q) {
        acc += Pm[j * c + q] * G[j * c + q];
        dG[j * c + q] = -e[j] * Pm[j * c + q];
      }
      w.de[j] -= acc;
      for (int64_t q = 0; q < r; ++q) dX[b * r + j * r + q] = -e[j] * Qm[j * r + q];
    }
  }
  // Queries, last layer first: Zb_k = Xb_k W_k + b_k - M_k G_k, M_k = eta * (A_k + 1), A_k = Xb_k X_k^T.
  for (int64_t k = n - 1; k >= 0; --k) {
    const int64_t c = m[k + 1], r = m[k];
    const T *G = acts + L.goff[k], *A = acts + L.aoff[k], *Xb = XXk(k), *X = XXk(k) + b * r;
    const T* dZb = w.dZZ[k].data();
    T *M = w.Mb.data(), *dM = w.dM.data(), *dA = w.dA.data(), *dX = dXXk(k);
    if (L.query_last_row) {
      for (int64_t q = 0; q < b; ++q)
        for (int64_t j = 0; j < b; ++j) M[q * b + j] = (et[q * b + j] + e[j]) * (A[q * b + j] + T(1));
    } else {
      for (int64_t j = 0; j < b * b; ++j) M[j] = et[j] * (A[j] + T(1));
    }
    K::gemm<T>(false, true, b, b, c, -1, dZb, c, G, c, 0, dM, b);
    K::gemm<T>(true, false, b, c, b, -1, M, b, dZb, c, 1, w.dG[k].data(), c);
    if (L.query_last_row) {
      // eta_q[q, j] = eta[q, j] + eta[b-1, j]: every row's gradient also flows into the last row.
      T* dlast = deta + (b - 1) * b;
      for (int64_t q = 0; q < b; ++q)
        for (int64_t j = 0; j < b; ++j) {
          const T g = dM[q * b + j] * (A[q * b + j] + T(1));
          deta[q * b + j] += g;
          dlast[j] += g;
          dA[q * b + j] = dM[q * b + j] * (et[q * b + j] + e[j]);
        }
    } else {
      for (int64_t j = 0; j < b * b; ++j) {
        deta[j] += dM[j] * (A[j] + T(1));
        dA[j] = dM[j] * et[j];
      }
    }
    K::gemm<T>(false, false, b, r, b, 1, dA, b, X, r, 1, dX, r);
    K::gemm<T>(true, false, b, r, b, 1, dA, b, Xb, r, 1, dX + b * r, r);
    if (k >= 1) {
      // dXb_k += dZb_k W_k^T, then through Xb_k = gelu(Zb_k-1).
      K::gemm<T>(false, true, b, r, c, 1, dZb, c, slot + L.woff[k], c, 1, dX, r);
      const T* DT = w.DT[k - 1].data();
      T* dZprev = w.dZZ[k - 1].data();
      for (int64_t j = 0; j < b * r; ++j) dZprev[j] = dX[j] * DT[j];
    }
  }
  // Key path: G_k = S_k * gelu'(Z_k), S_k = G_k+1 W_k+1^T (k < n-1), then G_n-1 = ln_fused_l2_bwd(Z_n-1, T).
  for (int64_t k = 0; k + 1 < n; ++k) {
    const int64_t c = m[k + 1], c2 = m[k + 2];
    const T *dG = w.dG[k].data(), *S = acts + L.soff[k], *DL = w.DL[k].data(), *D2 = w.D2[k].data();
    T *dS = XXk(k + 1) + 2 * b * c, *dZ = w.dZZ[k].data() + b * c;
    for (int64_t j = 0; j < b * c; ++j) {
      dS[j] = dG[j] * DL[j];
      dZ[j] = dG[j] * S[j] * D2[j];
    }
    K::gemm<T>(false, false, b, c2, c, 1, dS, c, slot + L.woff[k + 1], c2, 1, w.dG[k + 1].data(), c2);
    std::memcpy(w.dZZ[k + 1].data() + 2 * b * c2, acts + L.goff[k + 1], sizeof(T) * b * c2);
  }
  K::ln_l2_grad_vjp_rows(acts + L.zzoff[n - 1] + b * d, xv, xk, gam, bet, L.eps, w.dG[n - 1].data(), b, d,
                         w.dZZ[n - 1].data() + b * d, w.dT.data(), dgam, dbet);
  // Keys, last layer first: Z_k = X_k W_k + b_k, X_k = gelu(Z_k-1).
  for (int64_t k = n - 1; k >= 1; --k) {
    const int64_t c = m[k + 1], r = m[k];
    const T* dZ = w.dZZ[k].data() + b * c;
    T* dX = dXXk(k) + b * r;
    // dW_k += Xb_k^T dZb_k + X_k^T dZ_k + dS_k-1^T G_k in one GEMM over the stacked 3b rows
    // (one pass over dW_k instead of three); b_k gets the query and key rows.
    K::gemm<T>(true, false, r, c, 3 * b, 1, XXk(k), r, w.dZZ[k].data(), c, 1, ds + L.woff[k], c);
    colsum_acc(w.dZZ[k].data(), 2 * b, c, ds + L.boff[k]);
    K::gemm<T>(false, true, b, r, c, 1, dZ, c, slot + L.woff[k], c, 1, dX, r);
    const T* DT = w.DT[k - 1].data() + b * r;
    T* dZprev = w.dZZ[k - 1].data() + b * r;
    for (int64_t j = 0; j < b * r; ++j) dZprev[j] += dX[j] * DT[j];
  }
  // Layer 0, both halves at once: dW_0 += [XQ; XK]^T [dZb_0; dZ_0], [dXQ; dXK] += [dZb_0; dZ_0] W_0^T.
  K::gemm<T>(true, false, d, m[1], 2 * b, 1, w.XX0.data(), d, w.dZZ[0].data(), m[1], 1, ds + L.woff[0], m[1]);
  colsum_acc(w.dZZ[0].data(), 2 * b, m[1], ds + L.boff[0]);
  K::gemm<T>(false, true, 2 * b, d, m[1], 1, w.dZZ[0].data(), m[1], slot + L.woff[0], m[1], 1, w.dXX0.data(), d);
  const T* dT = w.dT.data();
  for (int64_t j = 0; j < b * d; ++j) {
    dXQ[j] = (dO ? dO[j] : T(0)) + w.dXX0[j];
    dXK[j] = w.dXX0[b * d + j] - dT[j];
    dXV[j] = dT[j];
  }
  for (int64_t j = 0; j < b; ++j) deta[(b - 1) * b + j] += w.de[j];
}

// ---------------------------------------------------------------- drivers over (batch, head)

struct Prepared {
  Layout L;
  at::ScalarType dtype;
  at::Tensor XQ, XK, XV, eta, gamma, beta;  // contiguous, [BH, NC, ...] / [H, d]
  std::vector<at::Tensor> W, B;             // contiguous [BH, m_k, m_k+1] / [BH, m_k+1]
};

Prepared prepare(const at::Tensor& XQ, const at::Tensor& XK, const at::Tensor& XV, const at::Tensor& eta,
                 const at::Tensor& lnw, const at::Tensor& lnb, const std::vector<at::Tensor>& W,
                 const std::vector<at::Tensor>& Bv, double eps, bool query_last_row) {
  Prepared r;
  Layout& L = r.L;
  L.query_last_row = query_last_row;
  L.H = XQ.size(1);
  L.BH = XQ.size(0) * L.H;
  L.NC = XQ.size(2);
  L.b = XQ.size(3);
  L.d = XQ.size(4);
  L.n = static_cast<int64_t>(W.size());
  L.eps = eps;
  L.m.push_back(L.d);
  for (auto& w : W) L.m.push_back(w.size(3));
  L.build();
  r.dtype = XQ.scalar_type();
  r.XQ = XQ.contiguous();
  r.XK = XK.contiguous();
  r.XV = XV.contiguous();
  r.eta = eta.contiguous();
  r.gamma = lnw.contiguous();
  r.beta = lnb.contiguous();
  for (auto& w : W) r.W.push_back(w.contiguous());
  for (auto& b : Bv) r.B.push_back(b.contiguous());
  return r;
}

template <typename T>
Ptrs<T> input_ptrs(const Prepared& P) {
  Ptrs<T> p;
  p.XQ = P.XQ.data_ptr<T>();
  p.XK = P.XK.data_ptr<T>();
  p.XV = P.XV.data_ptr<T>();
  p.eta = P.eta.data_ptr<T>();
  p.gamma = P.gamma.data_ptr<T>();
  p.beta = P.beta.data_ptr<T>();
  for (auto& w : P.W) p.W.push_back(w.data_ptr<T>());
  for (auto& b : P.B) p.B.push_back(b.data_ptr<T>());
  return p;
}

template <typename T>
void load_state(const Layout& L, const Ptrs<T>& p, int64_t bh, T* live) {
  for (int64_t k = 0; k < L.n; ++k) {
    const int64_t ws = L.m[k] * L.m[k + 1], bs = L.m[k + 1];
    std::memcpy(live + L.woff[k], p.W[k] + bh * ws, sizeof(T) * ws);
    std::memcpy(live + L.boff[k], p.B[k] + bh * bs, sizeof(T) * bs);
  }
}

template <typename T>
void store_state(const Layout& L, const T* live, int64_t bh, const std::vector<T*>& W, const std::vector<T*>& B) {
  for (int64_t k = 0; k < L.n; ++k) {
    const int64_t ws = L.m[k] * L.m[k + 1], bs = L.m[k + 1];
    std::memcpy(W[k] + bh * ws, live + L.woff[k], sizeof(T) * ws);
    std::memcpy(B[k] + bh * bs, live + L.boff[k], sizeof(T) * bs);
  }
}

// Where the forward keeps what the backward needs: every step's slot (group <= 0) or the state at
// each group boundary (group > 0).
struct Saved {
  int64_t group = 0;      // <= 0: slots of every step
  at::Tensor slots;       // [BH, NC, slot]
  at::Tensor boundaries;  // [BH, ngroups, state]
};

template <typename T>
void run_forward(const Prepared& P, Ptrs<T>& p, Saved* saved) {
  const Layout& L = P.L;
  const int64_t g = saved && saved->group > 0 ? std::min(saved->group, L.NC) : 0;
  T* slots = saved && g == 0 ? saved->slots.data_ptr<T>() : nullptr;
  T* bnd = saved && g > 0 ? saved->boundaries.data_ptr<T>() : nullptr;
  const int64_t ngroups = g > 0 ? (L.NC + g - 1) / g : 0;
  for_each_head(L.BH, [&](auto&& next) {
    Work<T> w(L, false, 0);
    for (int64_t bh; (bh = next()) >= 0;) {
      T* live = w.live.data();
      load_state(L, p, bh, live);
      for (int64_t i = 0; i < L.NC; ++i) {
        T* acts = w.acts.data();
        if (slots) {
          T* slot = slots + (bh * L.NC + i) * L.slot();
          std::memcpy(slot, live, sizeof(T) * L.state);
          acts = slot + L.state;
        }
        if (bnd && i % g == 0) std::memcpy(bnd + (bh * ngroups + i / g) * L.state, live, sizeof(T) * L.state);
        const int64_t o = bh * L.NC + i;
        forward_step(L, p, bh, i, live, acts, w, p.XQW ? p.XQW + o * L.b * L.d : nullptr,
                     p.lb ? p.lb + o * L.b : nullptr, p.la ? p.la + o * L.b : nullptr);
      }
      if (!p.Wout.empty()) store_state(L, live, bh, p.Wout, p.Bout);
    }
  });
}

struct Grads {
  at::Tensor dXQ, dXK, dXV, deta, dgamma, dbeta;  // dgamma/dbeta [BH, d] (summed over B by the caller)
  std::vector<at::Tensor> dW, dB;
};

template <typename T>
void run_backward(const Prepared& P, const Ptrs<T>& p, const Saved& saved, const at::Tensor& dXQW,
                  const std::vector<at::Tensor>& dWout, const std::vector<at::Tensor>& dBout, Grads& gr) {
  const Layout& L = P.L;
  const int64_t g = saved.group > 0 ? std::min(saved.group, L.NC) : 0;
  const int64_t ngroups = g > 0 ? (L.NC + g - 1) / g : 1;
  const T* slots = g == 0 ? saved.slots.data_ptr<T>() : nullptr;
  const T* bnd = g > 0 ? saved.boundaries.data_ptr<T>() : nullptr;
  const T* dO = dXQW.defined() ? dXQW.data_ptr<T>() : nullptr;
  bool final_grads = false;
  std::vector<const T*> dWo(L.n, nullptr), dBo(L.n, nullptr);
  for (int64_t k = 0; k < L.n; ++k) {
    if (dWout[k].defined()) dWo[k] = dWout[k].data_ptr<T>(), final_grads = true;
    if (dBout[k].defined()) dBo[k] = dBout[k].data_ptr<T>(), final_grads = true;
  }
  T *dXQ = gr.dXQ.data_ptr<T>(), *dXK = gr.dXK.data_ptr<T>(), *dXV = gr.dXV.data_ptr<T>();
  T *deta = gr.deta.data_ptr<T>(), *dgam = gr.dgamma.data_ptr<T>(), *dbet = gr.dbeta.data_ptr<T>();
  std::vector<T*> dW, dB;
  for (auto& t : gr.dW) dW.push_back(t.data_ptr<T>());
  for (auto& t : gr.dB) dB.push_back(t.data_ptr<T>());
  for_each_head(L.BH, [&](auto&& next) {
    Work<T> w(L, true, g);
    for (int64_t bh; (bh = next()) >= 0;) {
      T* ds = w.dstate.data();
      std::fill(ds, ds + L.state, T(0));
      for (int64_t k = 0; k < L.n; ++k) {
        const int64_t ws = L.m[k] * L.m[k + 1], bs = L.m[k + 1];
        if (dWo[k]) std::memcpy(ds + L.woff[k], dWo[k] + bh * ws, sizeof(T) * ws);
        if (dBo[k]) std::memcpy(ds + L.boff[k], dBo[k] + bh * bs, sizeof(T) * bs);
      }
      bool carry = final_grads;
      T* dg = dgam + bh * L.d;
      T* db = dbet + bh * L.d;
      std::fill(dg, dg + L.d, T(0));
      std::fill(db, db + L.d, T(0));
      for (int64_t grp = ngroups - 1; grp >= 0; --grp) {
        const int64_t s0 = g > 0 ? grp * g : 0, s1 = g > 0 ? std::min(L.NC, s0 + g) : L.NC;
        const T* base;
        if (g > 0) {
          // Recompute the group's forward from its boundary state, keeping every slot (§3).
          T* live = w.live.data();
          std::memcpy(live, bnd + (bh * ngroups + grp) * L.state, sizeof(T) * L.state);
          for (int64_t i = s0; i < s1; ++i) {
            T* slot = w.group.data() + (i - s0) * L.slot();
            std::memcpy(slot, live, sizeof(T) * L.state);
            forward_step<T>(L, p, bh, i, live, slot + L.state, w, nullptr, nullptr, nullptr);
          }
          base = w.group.data() - s0 * L.slot();
        } else {
          base = slots + bh * L.NC * L.slot();
        }
        for (int64_t i = s1 - 1; i >= s0; --i) {
          const int64_t o = bh * L.NC + i;
          const int64_t io = o * L.b * L.d;
          backward_step(L, p, bh, i, base + i * L.slot(), dO ? dO + io : nullptr, carry, w, dXQ + io, dXK + io,
                        dXV + io, deta + o * L.b * L.b, dg, db);
          carry = true;
        }
      }
      store_state(L, static_cast<const T*>(ds), bh, dW, dB);
    }
  });
}

at::Tensor alloc_like_state(const Layout& L, int64_t k, bool bias, const at::TensorOptions& opt, int64_t B) {
  return bias ? at::empty({B, L.H, 1, L.m[k + 1]}, opt) : at::empty({B, L.H, L.m[k], L.m[k + 1]}, opt);
}

// Forward into fresh output tensors; `saved` (may be null) receives what the backward needs.
ScanOutputs forward_outputs(const Prepared& P, bool record, Saved* saved) {
  const Layout& L = P.L;
  const int64_t Bsz = L.BH / L.H;
  auto opt = P.XQ.options();
  ScanOutputs out;
  out.XQW = at::empty({Bsz, L.H, L.NC, L.b, L.d}, opt);
  for (int64_t k = 0; k < L.n; ++k) {
    out.weights.push_back(alloc_like_state(L, k, false, opt, Bsz));
    out.biases.push_back(alloc_like_state(L, k, true, opt, Bsz));
  }
  if (record) {
    out.loss_before = at::empty({Bsz, L.H, L.NC, L.b}, opt);
    out.loss_after = at::empty({Bsz, L.H, L.NC, L.b}, opt);
  }
  if (saved) {
    if (saved->group > 0) {
      const int64_t g = std::min(saved->group, L.NC);
      saved->boundaries = at::empty({L.BH, (L.NC + g - 1) / g, L.state}, opt);
    } else {
      saved->slots = cached_big_buffer({L.BH, L.NC, L.slot()}, opt);
    }
  }
  AT_DISPATCH_FLOATING_TYPES(P.dtype, "ttt_scan_cpu_fused", [&] {
    Ptrs<scalar_t> p = input_ptrs<scalar_t>(P);
    p.XQW = out.XQW.data_ptr<scalar_t>();
    for (int64_t k = 0; k < L.n; ++k) {
      p.Wout.push_back(out.weights[k].data_ptr<scalar_t>());
      p.Bout.push_back(out.biases[k].data_ptr<scalar_t>());
    }
    if (record) {
      p.lb = out.loss_before.data_ptr<scalar_t>();
      p.la = out.loss_after.data_ptr<scalar_t>();
    }
    run_forward<scalar_t>(P, p, saved);
  });
  return out;
}

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// The whole scan as one autograd node: inputs XQ, XK, XV, eta, ln weight, ln bias, W_0..W_n-1,
// b_0..b_n-1 (ln weight/bias already in the compute dtype); outputs XQW, final W_k, b_k (+ losses).
struct FusedScanFn : public torch::autograd::Function<FusedScanFn> {
  static variable_list forward(AutogradContext* ctx, at::TensorList inputs, double eps, int64_t group,
                               bool record, bool query_last_row) {
    const size_t n = (inputs.size() - 6) / 2;
    std::vector<at::Tensor> W(inputs.begin() + 6, inputs.begin() + 6 + n), Bv(inputs.begin() + 6 + n, inputs.end());
    Prepared P = prepare(inputs[0], inputs[1], inputs[2], inputs[3], inputs[4], inputs[5], W, Bv, eps, query_last_row);
    Saved saved;
    saved.group = group;
    ScanOutputs o = forward_outputs(P, record, &saved);
    ctx->set_materialize_grads(false);
    ctx->saved_data["XQ"] = P.XQ;
    ctx->saved_data["XK"] = P.XK;
    ctx->saved_data["XV"] = P.XV;
    ctx->saved_data["eta"] = P.eta;
    ctx->saved_data["gamma"] = P.gamma;
    ctx->saved_data["beta"] = P.beta;
    ctx->saved_data["W"] = P.W;
    ctx->saved_data["B"] = P.B;
    ctx->saved_data["eps"] = eps;
    ctx->saved_data["group"] = group;
    ctx->saved_data["query_last_row"] = query_last_row;
    ctx->saved_data["slots"] = saved.slots;
    ctx->saved_data["boundaries"] = saved.boundaries;
    variable_list res{o.XQW};
    for (auto& t : o.weights) res.push_back(t);
    for (auto& t : o.biases) res.push_back(t);
    if (record) {
      ctx->mark_non_differentiable({o.loss_before, o.loss_after});
      res.push_back(o.loss_before);
      res.push_back(o.loss_after);
    }
    return res;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_out) {
    auto& sd = ctx->saved_data;
    std::vector<at::Tensor> W = sd["W"].toTensorVector(), Bv = sd["B"].toTensorVector();
    const size_t n = W.size();
    Prepared P = prepare(sd["XQ"].toTensor(), sd["XK"].toTensor(), sd["XV"].toTensor(), sd["eta"].toTensor(),
                         sd["gamma"].toTensor(), sd["beta"].toTensor(), W, Bv, sd["eps"].toDouble(),
                         sd["query_last_row"].toBool());
    Saved saved;
    saved.group = sd["group"].toInt();
    saved.slots = sd["slots"].toTensor();
    saved.boundaries = sd["boundaries"].toTensor();
    const Layout& L = P.L;
    auto c = [&](size_t i) { return i < grad_out.size() && grad_out[i].defined() ? grad_out[i].contiguous() : at::Tensor(); };
    at::Tensor dXQW = c(0);
    std::vector<at::Tensor> dWo, dBo;
    for (size_t k = 0; k < n; ++k) {
      dWo.push_back(c(1 + k));
      dBo.push_back(c(1 + n + k));
    }
    Grads gr;
    auto opt = P.XQ.options();
    gr.dXQ = at::empty_like(P.XQ);
    gr.dXK = at::empty_like(P.XK);
    gr.dXV = at::empty_like(P.XV);
    gr.deta = at::empty_like(P.eta);
    gr.dgamma = at::empty({L.BH, L.d}, opt);
    gr.dbeta = at::empty({L.BH, L.d}, opt);
    for (size_t k = 0; k < n; ++k) {
      gr.dW.push_back(at::empty_like(P.W[k]));
      gr.dB.push_back(at::empty_like(P.B[k]));
    }
    AT_DISPATCH_FLOATING_TYPES(P.dtype, "ttt_scan_cpu_fused_backward", [&] {
      Ptrs<scalar_t> p = input_ptrs<scalar_t>(P);
      run_backward<scalar_t>(P, p, saved, dXQW, dWo, dBo, gr);
    });
    const int64_t Bsz = L.BH / L.H;
    variable_list res{gr.dXQ, gr.dXK, gr.dXV, gr.deta, gr.dgamma.view({Bsz, L.H, L.d}).sum(0),
                      gr.dbeta.view({Bsz, L.H, L.d}).sum(0)};
    for (auto& t : gr.dW) res.push_back(t);
    for (auto& t : gr.dB) res.push_back(t);
    res.resize(res.size() + 4);  // eps, group, record, query_last_row
    return res;
  }
};

bool needs_grad(const ScanInputs& in, const std::vector<at::Tensor>& W, const std::vector<at::Tensor>& Bv) {
  if (!at::GradMode::is_enabled()) return false;
  for (const at::Tensor* t : {&in.XQ, &in.XK, &in.XV, &in.eta, &in.ln_weight, &in.ln_bias})
    if (t->requires_grad()) return true;
  for (auto& t : W)
    if (t.requires_grad()) return true;
  for (auto& t : Bv)
    if (t.requires_grad()) return true;
  return false;
}

}  // namespace

void cpu_fused_scan_release_cache() { release_big_buffer_cache(); }

bool cpu_fused_scan_enabled() {
  const char* v = std::getenv("MTT_TTT_SCAN");
  return !(v && std::string(v) == "reference");
}

std::string cpu_fused_unsupported_reason(const ScanInputs& in, const std::vector<at::Tensor>& W,
                                         const std::vector<at::Tensor>& Bv) {
  for (const at::Tensor* t : {&in.XQ, &in.XK, &in.XV, &in.eta, &in.ln_weight, &in.ln_bias})
    if (!t->defined()) return "undefined scan input";
  if (in.XQ.dim() != 5) return "XQ must be [B, H, NC, b, d]";
  const auto st = in.XQ.scalar_type();
  if (st != at::kFloat && st != at::kDouble) return "dtype must be float32 or float64";
  const int64_t B = in.XQ.size(0), H = in.XQ.size(1), NC = in.XQ.size(2), b = in.XQ.size(3), d = in.XQ.size(4);
  if (NC == 0 || b == 0 || d == 0 || B == 0 || H == 0) return "empty scan";
  if (in.XK.sizes() != in.XQ.sizes() || in.XV.sizes() != in.XQ.sizes()) return "XQ/XK/XV shapes differ";
  if (in.eta.sizes() != at::IntArrayRef({B, H, NC, b, b})) return "eta must be [B, H, NC, b, b]";
  if (in.ln_weight.sizes() != at::IntArrayRef({H, d}) || in.ln_bias.sizes() != at::IntArrayRef({H, d}))
    return "ttt_norm weight/bias must be [H, d]";
  if (!in.ln_weight.is_floating_point() || !in.ln_bias.is_floating_point()) return "ttt_norm must be floating point";
  for (const at::Tensor* t : {&in.XQ, &in.XK, &in.XV, &in.eta, &in.ln_weight, &in.ln_bias})
    if (!t->device().is_cpu()) return "tensors are not on the CPU";
  for (const at::Tensor* t : {&in.XK, &in.XV, &in.eta})
    if (t->scalar_type() != st) return "XQ/XK/XV/eta dtypes differ";
  if (W.empty() || W.size() != Bv.size()) return "inner weights/biases mismatch";
  int64_t prev = d;
  for (size_t k = 0; k < W.size(); ++k) {
    if (W[k].dim() != 4 || Bv[k].dim() != 4) return "inner state must be [B, H, m, m'] / [B, H, 1, m']";
    const int64_t out = W[k].size(3);
    if (W[k].sizes() != at::IntArrayRef({B, H, prev, out}) || Bv[k].sizes() != at::IntArrayRef({B, H, 1, out}))
      return "inner state shapes do not chain from d to d";
    if (W[k].scalar_type() != st || Bv[k].scalar_type() != st) return "inner state dtype differs from XQ";
    if (!W[k].device().is_cpu() || !Bv[k].device().is_cpu()) return "inner state is not on the CPU";
    prev = out;
  }
  if (prev != d) return "the last inner layer must map back to d";
  return "";
}

std::optional<ScanOutputs> cpu_fused_scan(const ScanInputs& in, const std::vector<at::Tensor>& W,
                                          const std::vector<at::Tensor>& Bv) {
  if (!cpu_fused_unsupported_reason(in, W, Bv).empty()) return std::nullopt;
  const auto st = in.XQ.scalar_type();
  const bool query_last_row = query_uses_updated(in.query, W.size());
  at::Tensor lnw = in.ln_weight.to(st), lnb = in.ln_bias.to(st);  // differentiable casts (head_param)
  if (!needs_grad(in, W, Bv)) {
    at::NoGradGuard ng;
    Prepared P = prepare(in.XQ, in.XK, in.XV, in.eta, lnw, lnb, W, Bv, in.ln_eps, query_last_row);
    return forward_outputs(P, in.record_losses, nullptr);
  }
  torch::autograd::variable_list args{in.XQ, in.XK, in.XV, in.eta, lnw, lnb};
  for (auto& t : W) args.push_back(t);
  for (auto& t : Bv) args.push_back(t);
  auto res = FusedScanFn::apply(at::TensorList(args), in.ln_eps, in.checkpoint_group, in.record_losses,
                                query_last_row);
  const size_t n = W.size();
  ScanOutputs out;
  out.XQW = res[0];
  for (size_t k = 0; k < n; ++k) {
    out.weights.push_back(res[1 + k]);
    out.biases.push_back(res[1 + n + k]);
  }
  if (in.record_losses) {
    out.loss_before = res[1 + 2 * n];
    out.loss_after = res[2 + 2 * n];
  }
  return out;
}

}  // namespace mtt::ttt
