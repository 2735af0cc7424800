// Per-token fp64 forward of the TTT scan. For mini-batch t of one (batch, head), with start state
// (W_k, b_k) of each layer k and the learning-rate matrix E (b x b):
//   keys:    X_0 = XK, Z_k = X_k W_k + b_k, X_k+1 = gelu(Z_k); the last Z against T = XV - XK
//   grads:   G_last = d/dZ 1/2 |LN(Z) - T|^2 per token (LayerNorm backward),
//            G_k = (G_k+1 W_k+1^T) * gelu'(Z_k)
//   queries: token i sees the weights after the tokens j it may see, W_k(i) = W_k - sum_j E_ij X_k,j^T G_k,j
//            and b_k(i) = b_k - sum_j E_ij G_k,j, so Zbar_k,i = Xbar_k,i W_k(i) + b_k(i), which we
//            evaluate as Xbar_k,i W_k + b_k - sum_j E_ij (Xbar_k,i . X_k,j + 1) G_k,j;
//            Xbar_0 = XQ, Xbar_k+1 = gelu(Zbar_k); out_i = XQ_i + LN(Zbar_last,i)
//   update:  the state after the mini-batch is the last token's, W_k(b-1), b_k(b-1).
// Losses: mean over features of (LN(Z) - T)^2 at the start state (before) and the updated one (after).
#include "kernels/ttt_scan/cpu_ref/naive_f64.h"

#include <algorithm>
#include <cmath>
#include <cstddef>

#include "kernels/common/gelu.h"

namespace mtt::kernels::naive {

namespace {

namespace gt = mtt::kernels::gelu_tanh;

double gelu(double z) { return 0.5 * z * (1.0 + std::tanh(gt::kCForward * (z + gt::kA * z * z * z))); }
double gelu_grad(double z) {
  const double t = std::tanh(gt::kC * z * (1.0 + gt::kA * z * z));
  return 0.5 * (1.0 + t) + 0.5 * z * (1.0 - t * t) * (gt::kC + gt::kC3 * z * z);
}

using Mat = std::vector<double>;  // row-major, sizes carried by the caller

// LN(z) over n features with the per-feature affine (gamma, beta); also xhat and sigma.
void layer_norm(const double* z, int n, double eps, const double* gam, const double* bet, double* y, double* xhat,
                double& sigma) {
  double mu = 0;
  for (int f = 0; f < n; ++f) mu += z[f];
  mu /= n;
  double var = 0;
  for (int f = 0; f < n; ++f) var += (z[f] - mu) * (z[f] - mu);
  sigma = std::sqrt(var / n + eps);  // biased variance
  for (int f = 0; f < n; ++f) {
    xhat[f] = (z[f] - mu) / sigma;
    y[f] = gam[f] * xhat[f] + bet[f];
  }
}

// Keys through the layers at state (W, bias): fills Z[k] (b x m_k+1) and X[k] (b x m_k).
void keys(const Problem& p, const double* xk, const Mat* W, const Mat* bias, Mat* X, Mat* Z) {
  const int b = p.b;
  const int m[3] = {p.d, p.depth == 2 ? p.hidden : p.d, p.d};
  X[0].assign(xk, xk + size_t(b) * p.d);
  for (int k = 0; k < p.depth; ++k) {
    const int mi = m[k], mo = m[k + 1];
    Z[k].resize(size_t(b) * mo);
    for (int i = 0; i < b; ++i) {
      double* z = &Z[k][size_t(i) * mo];
      for (int o = 0; o < mo; ++o) z[o] = bias[k][o];
      for (int q = 0; q < mi; ++q) {
        const double x = X[k][size_t(i) * mi + q];
        const double* w = &W[k][size_t(q) * mo];
        for (int o = 0; o < mo; ++o) z[o] += x * w[o];
      }
    }
    if (k + 1 < p.depth) {
      X[k + 1].resize(Z[k].size());
      for (size_t e = 0; e < Z[k].size(); ++e) X[k + 1][e] = gelu(Z[k][e]);
    }
  }
}

}  // namespace

Result forward(const Problem& p) {
  const int b = p.b, d = p.d, L = p.depth;
  const int m[3] = {d, L == 2 ? p.hidden : d, d};
  Result r;
  r.XQW.assign(size_t(p.B) * p.H * p.NC * b * d, 0.0);
  r.loss_before.assign(size_t(p.B) * p.H * p.NC * b, 0.0);
  r.loss_after = r.loss_before;
  for (int k = 0; k < L; ++k) {
    r.W[k].resize(p.W[k].size());
    r.bias[k].resize(p.bias[k].size());
  }
  std::vector<double> y(d), xh(d), dxh(d);
  for (int bb = 0; bb < p.B; ++bb)
    for (int hh = 0; hh < p.H; ++hh) {
      const size_t bh = size_t(bb) * p.H + hh;
      const double* gam = p.ln_w.data() + size_t(hh) * d;
      const double* bet = p.ln_b.data() + size_t(hh) * d;
      Mat W[2], bias[2];
      for (int k = 0; k < L; ++k) {
        const size_t nw = size_t(m[k]) * m[k + 1], nb = m[k + 1];
        W[k].assign(p.W[k].begin() + bh * nw, p.W[k].begin() + (bh + 1) * nw);
        bias[k].assign(p.bias[k].begin() + bh * nb, p.bias[k].begin() + (bh + 1) * nb);
      }
      for (int t = 0; t < p.NC; ++t) {
        const size_t o = (bh * p.NC + t) * size_t(b) * d;
        const double* E = p.eta.data() + (bh * p.NC + t) * size_t(b) * b;
        const double *xq = p.XQ.data() + o, *xk = p.XK.data() + o, *xv = p.XV.data() + o;
        Mat X[2], Z[2], G[2];
        keys(p, xk, W, bias, X, Z);
        // Gradient of 1/2 |LN(Z_last) - T|^2 per token.
        G[L - 1].assign(size_t(b) * d, 0.0);
        for (int i = 0; i < b; ++i) {
          double sigma;
          layer_norm(&Z[L - 1][size_t(i) * d], d, p.eps, gam, bet, y.data(), xh.data(), sigma);
          double loss = 0, s1 = 0, s2 = 0;
          for (int f = 0; f < d; ++f) {
            const double g = y[f] - (xv[size_t(i) * d + f] - xk[size_t(i) * d + f]);
            loss += g * g;
            dxh[f] = gam[f] * g;
            s1 += dxh[f];
            s2 += dxh[f] * xh[f];
          }
          r.loss_before[(bh * p.NC + t) * b + i] = loss / d;
          for (int f = 0; f < d; ++f) G[L - 1][size_t(i) * d + f] = (dxh[f] - s1 / d - xh[f] * s2 / d) / sigma;
        }
        for (int k = L - 2; k >= 0; --k) {
          const int mo = m[k + 1], mn = m[k + 2];
          G[k].assign(size_t(b) * mo, 0.0);
          for (int i = 0; i < b; ++i)
            for (int q = 0; q < mo; ++q) {
              double s = 0;
              for (int f = 0; f < mn; ++f) s += G[k + 1][size_t(i) * mn + f] * W[k + 1][size_t(q) * mn + f];
              G[k][size_t(i) * mo + q] = s * gelu_grad(Z[k][size_t(i) * mo + q]);
            }
        }
        // Queries, token by token, through the per-token weights.
        Mat Xb(xq, xq + size_t(b) * d), Zb;
        for (int k = 0; k < L; ++k) {
          const int mi = m[k], mo = m[k + 1];
          Zb.assign(size_t(b) * mo, 0.0);
          for (int i = 0; i < b; ++i) {
            double* z = &Zb[size_t(i) * mo];
            for (int oo = 0; oo < mo; ++oo) z[oo] = bias[k][oo];
            for (int q = 0; q < mi; ++q) {
              const double x = Xb[size_t(i) * mi + q];
              const double* w = &W[k][size_t(q) * mo];
              for (int oo = 0; oo < mo; ++oo) z[oo] += x * w[oo];
            }
            for (int j = 0; j < b; ++j) {
              const double e = E[size_t(i) * b + j];
              if (e == 0.0) continue;
              double dot = 1.0;
              for (int q = 0; q < mi; ++q) dot += Xb[size_t(i) * mi + q] * X[k][size_t(j) * mi + q];
              for (int oo = 0; oo < mo; ++oo) Zb[size_t(i) * mo + oo] -= e * dot * G[k][size_t(j) * mo + oo];
            }
          }
          if (k + 1 < L) {
            Xb.resize(Zb.size());
            for (size_t e = 0; e < Zb.size(); ++e) Xb[e] = gelu(Zb[e]);
          }
        }
        for (int i = 0; i < b; ++i) {
          double sigma;
          layer_norm(&Zb[size_t(i) * d], d, p.eps, gam, bet, y.data(), xh.data(), sigma);
          for (int f = 0; f < d; ++f) r.XQW[o + size_t(i) * d + f] = xq[size_t(i) * d + f] + y[f];
        }
        // The last token's weights carry on.
        const double* e = E + size_t(b - 1) * b;
        for (int k = 0; k < L; ++k) {
          const int mi = m[k], mo = m[k + 1];
          for (int j = 0; j < b; ++j) {
            if (e[j] == 0.0) continue;
            for (int q = 0; q < mi; ++q)
              for (int oo = 0; oo < mo; ++oo)
                W[k][size_t(q) * mo + oo] -= e[j] * X[k][size_t(j) * mi + q] * G[k][size_t(j) * mo + oo];
            for (int oo = 0; oo < mo; ++oo) bias[k][oo] -= e[j] * G[k][size_t(j) * mo + oo];
          }
        }
        keys(p, xk, W, bias, X, Z);
        for (int i = 0; i < b; ++i) {
          double sigma, loss = 0;
          layer_norm(&Z[L - 1][size_t(i) * d], d, p.eps, gam, bet, y.data(), xh.data(), sigma);
          for (int f = 0; f < d; ++f) {
            const double g = y[f] - (xv[size_t(i) * d + f] - xk[size_t(i) * d + f]);
            loss += g * g;
          }
          r.loss_after[(bh * p.NC + t) * b + i] = loss / d;
        }
      }
      for (int k = 0; k < L; ++k) {
        std::copy(W[k].begin(), W[k].end(), r.W[k].begin() + bh * W[k].size());
        std::copy(bias[k].begin(), bias[k].end(), r.bias[k].begin() + bh * bias[k].size());
      }
    }
  return r;
}

}  // namespace mtt::kernels::naive
