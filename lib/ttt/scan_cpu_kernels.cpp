// Row/elementwise kernels and the GEMM wrapper of the fused CPU TTT scan (docs/ttt.md §2 helpers).
// The loops are plain C++ the compiler vectorises; target_clones builds AVX-512, AVX2+FMA and
// baseline versions and picks one at load time (the project compiles without -march).
#include "ttt/scan_cpu_kernels.h"

#include <ATen/ATen.h>

#include <cmath>
#include <type_traits>

#include "kernels/common/gelu.h"

// Fortran BLAS of the MKL/OpenBLAS that LibTorch's wheel links and exports. Weak: a LibTorch
// without them falls back to at::addmm_out on views.
extern "C" {
void sgemm_(const char* ta, const char* tb, const int* m, const int* n, const int* k, const float* alpha,
            const float* a, const int* lda, const float* b, const int* ldb, const float* beta, float* c,
            const int* ldc) __attribute__((weak));
void dgemm_(const char* ta, const char* tb, const int* m, const int* n, const int* k, const double* alpha,
            const double* a, const int* lda, const double* b, const int* ldb, const double* beta, double* c,
            const int* ldc) __attribute__((weak));
// MKL's per-thread thread count (returns the previous one; 0 = the global setting).
int MKL_Set_Num_Threads_Local(int n) __attribute__((weak));  // the C entry (mkl.h maps mkl_set_num_threads_local to it)
// The OpenMP runtime LibTorch loads: MKL's GNU-threaded layer sizes its teams by the calling
// thread's omp_get_max_threads() too.
int omp_get_max_threads() __attribute__((weak));
void omp_set_num_threads(int n) __attribute__((weak));
int omp_get_max_active_levels() __attribute__((weak));
void omp_set_max_active_levels(int n) __attribute__((weak));
}

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define MTT_SIMD_CLONES __attribute__((target_clones("arch=skylake-avx512", "arch=haswell", "default")))
#else
#define MTT_SIMD_CLONES
#endif

namespace mtt::ttt::cpu {

namespace {

// GELU constants (one definition for the kernels and lib/ttt: kernels/common/gelu.h).
constexpr double kC = kernels::gelu_tanh::kC;                // gelu'(z), as gelu_bwd writes it
constexpr double kCForward = kernels::gelu_tanh::kCForward;  // gelu(z), F.gelu's sqrt(2/pi)
constexpr double kA = kernels::gelu_tanh::kA;
constexpr double kC3 = kernels::gelu_tanh::kC3;

template <typename T>
void gemm_fallback(bool ta, bool tb, int64_t M, int64_t N, int64_t K, T alpha, const T* A, int64_t lda, const T* B,
                   int64_t ldb, T beta, T* C, int64_t ldc) {
  auto opt = at::TensorOptions().dtype(c10::CppTypeToScalarType<T>::value);
  at::Tensor a = ta ? at::from_blob(const_cast<T*>(A), {K, M}, {lda, 1}, opt).t()
                    : at::from_blob(const_cast<T*>(A), {M, K}, {lda, 1}, opt);
  at::Tensor b = tb ? at::from_blob(const_cast<T*>(B), {N, K}, {ldb, 1}, opt).t()
                    : at::from_blob(const_cast<T*>(B), {K, N}, {ldb, 1}, opt);
  at::Tensor c = at::from_blob(C, {M, N}, {ldc, 1}, opt);
  if (beta == T(0)) c.zero_();
  at::addmm_out(c, c, a, b, beta, alpha);
}

}  // namespace

template <typename T>
void gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, T alpha, const T* A, int64_t lda, const T* B,
          int64_t ldb, T beta, T* C, int64_t ldc) {
  if (M == 0 || N == 0) return;
  // Row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T: swap the operands.
  const char tra = tb ? 'T' : 'N', trb = ta ? 'T' : 'N';
  const int m = static_cast<int>(N), n = static_cast<int>(M), k = static_cast<int>(K);
  const int la = static_cast<int>(ldb), lb = static_cast<int>(lda), lc = static_cast<int>(ldc);
  if constexpr (std::is_same_v<T, float>) {
    if (sgemm_) {
      sgemm_(&tra, &trb, &m, &n, &k, &alpha, B, &la, A, &lb, &beta, C, &lc);
      return;
    }
  } else {
    if (dgemm_) {
      dgemm_(&tra, &trb, &m, &n, &k, &alpha, B, &la, A, &lb, &beta, C, &lc);
      return;
    }
  }
  gemm_fallback(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

SingleThreadBlas::SingleThreadBlas() {
  if (MKL_Set_Num_Threads_Local) previous_ = MKL_Set_Num_Threads_Local(1);
  if (omp_get_max_threads && omp_set_num_threads) {
    previous_omp_ = omp_get_max_threads();
    omp_set_num_threads(1);
  }
}

SingleThreadBlas::~SingleThreadBlas() {
  if (MKL_Set_Num_Threads_Local) MKL_Set_Num_Threads_Local(previous_);
  if (previous_omp_ > 0) omp_set_num_threads(previous_omp_);
}

template <typename T>
void tanh_inplace(T* x, int64_t n) {
  at::Tensor v = at::from_blob(x, {n}, at::TensorOptions().dtype(c10::CppTypeToScalarType<T>::value));
  v.tanh_();
}

namespace {

// u = c z (1 + a z^2), the tanh argument (§2 helpers), c = sqrt(2/pi) as one of the two spellings.
template <typename T>
MTT_SIMD_CLONES void gelu_arg(const T* __restrict z, int64_t n, T* __restrict u, double c_arg) {
  const T c = static_cast<T>(c_arg), a = static_cast<T>(kA);
  for (int64_t i = 0; i < n; ++i) u[i] = c * z[i] * (T(1) + a * z[i] * z[i]);
}

template <typename T>
MTT_SIMD_CLONES void gelu_from_tanh(const T* __restrict z, const T* __restrict t, int64_t n, T* __restrict x,
                                    T* __restrict d) {
  const T c = static_cast<T>(kC), c3 = static_cast<T>(kC3);
  for (int64_t i = 0; i < n; ++i) {
    const T zi = z[i], ti = t[i], h = T(0.5) * (T(1) + ti);
    x[i] = zi * h;
    if (d) d[i] = h + T(0.5) * zi * ((T(1) - ti * ti) * (c + c3 * zi * zi));
  }
}

template <typename T>
MTT_SIMD_CLONES void gelu_bwd_from_tanh(const T* __restrict z, const T* __restrict t, int64_t n, T* __restrict x,
                                        T* __restrict dx, T* __restrict d, T* __restrict d2, double c_arg) {
  const T c = static_cast<T>(c_arg), c3 = static_cast<T>(kC3), c3x = static_cast<T>(3.0 * kA * c_arg);
  for (int64_t i = 0; i < n; ++i) {
    const T zi = z[i], ti = t[i], z2 = zi * zi, h = T(0.5) * (T(1) + ti), s = T(1) - ti * ti;
    const T cl = c + c3 * z2;   // the literal factor of gelu'
    const T ct = c + c3x * z2;  // d u / dz
    x[i] = zi * h;
    dx[i] = h + T(0.5) * zi * s * ct;
    if (d) {
      d[i] = h + T(0.5) * zi * (s * cl);
      d2[i] = s * (T(0.5) * (cl + ct) - zi * ti * cl * ct + c3 * z2);
    }
  }
}

// Row sums with 16 independent partial sums: the compiler may not reorder a single running sum
// (no -ffast-math), and one dependent add per element made these reductions the hot spot of the
// TTT-Linear scan. f(j) gives the j-th term.
constexpr int kLanes = 16;

template <typename T, typename F>
inline __attribute__((always_inline)) T lane_sum(int64_t D, F f) {
  T acc[kLanes] = {};
  int64_t j = 0;
  for (; j + kLanes <= D; j += kLanes)
    for (int l = 0; l < kLanes; ++l) acc[l] += f(j + l);
  T s = 0;
  for (; j < D; ++j) s += f(j);
  for (int l = 0; l < kLanes; ++l) s += acc[l];
  return s;
}

template <typename T>
inline __attribute__((always_inline)) void row_stats(const T* __restrict z, int64_t D, double eps, T& mean,
                                                     T& rstd) {
  const T mu = lane_sum<T>(D, [&](int64_t j) { return z[j]; }) / static_cast<T>(D);
  const T v = lane_sum<T>(D, [&](int64_t j) { return (z[j] - mu) * (z[j] - mu); });
  mean = mu;
  rstd = T(1) / std::sqrt(v / static_cast<T>(D) + static_cast<T>(eps));
}

}  // namespace

// Whether gelu and gelu' need tanh at two values of c: only where they are two numbers in T (float64;
// kernels/common/gelu.h). Then gelu (and its derivative dx) are computed again at F.gelu's c.
template <typename T>
constexpr bool kTwoGeluConstants = static_cast<T>(kC) != static_cast<T>(kCForward);

template <typename T>
void gelu_fwd_with_grad(const T* z, int64_t n, T* x, T* d, T* t) {
  gelu_arg(z, n, t, kC);
  tanh_inplace(t, n);
  gelu_from_tanh(z, t, n, x, d);
  if constexpr (kTwoGeluConstants<T>) gelu_fwd(z, n, x, t);
}

template <typename T>
void gelu_fwd(const T* z, int64_t n, T* x, T* t) {
  gelu_arg(z, n, t, kCForward);
  tanh_inplace(t, n);
  gelu_from_tanh<T>(z, t, n, x, nullptr);
}

template <typename T>
void gelu_bwd_prep(const T* z, int64_t n, T* x, T* dx, T* d, T* d2, T* t) {
  const bool two = kTwoGeluConstants<T> && d != nullptr;
  gelu_arg(z, n, t, two ? kC : kCForward);
  tanh_inplace(t, n);
  gelu_bwd_from_tanh(z, t, n, x, dx, d, d2, two ? kC : kCForward);
  if (two) {  // x and dx again at F.gelu's c, d and d2 kept at gelu_bwd's
    gelu_arg(z, n, t, kCForward);
    tanh_inplace(t, n);
    gelu_bwd_from_tanh<T>(z, t, n, x, dx, nullptr, nullptr, kCForward);
  }
}

template <typename T>
MTT_SIMD_CLONES void ln_l2_grad_rows(const T* z, const T* xv, const T* xk, const T* gamma, const T* beta, double eps,
                                     int64_t rows, int64_t D, T* G, T* loss) {
  const T invD = T(1) / static_cast<T>(D);
  for (int64_t r = 0; r < rows; ++r) {
    const T* zr = z + r * D;
    const T* vr = xv + r * D;
    const T* kr = xk + r * D;
    T mu, rstd;
    row_stats(zr, D, eps, mu, rstd);
    // ghat = gamma (gamma zhat + beta - t); G = (ghat - mean ghat - zhat mean(ghat zhat)) rstd.
    auto g_at = [&](int64_t j) { return gamma[j] * ((zr[j] - mu) * rstd) + beta[j] - (vr[j] - kr[j]); };
    const T sl = lane_sum<T>(D, [&](int64_t j) { const T g = g_at(j); return g * g; });
    const T sg = lane_sum<T>(D, [&](int64_t j) { return g_at(j) * gamma[j]; });
    const T sgz = lane_sum<T>(D, [&](int64_t j) { return g_at(j) * gamma[j] * ((zr[j] - mu) * rstd); });
    if (loss) loss[r] = sl * invD;
    if (!G) continue;
    const T mg = sg * invD, mgz = sgz * invD;
    T* Gr = G + r * D;
    for (int64_t j = 0; j < D; ++j) {
      const T zh = (zr[j] - mu) * rstd;
      const T gh = (gamma[j] * zh + beta[j] - (vr[j] - kr[j])) * gamma[j];
      Gr[j] = (gh - mg - zh * mgz) * rstd;
    }
  }
}

template <typename T>
MTT_SIMD_CLONES void ln_out_rows(const T* z, const T* xq, const T* gamma, const T* beta, double eps, int64_t rows,
                                 int64_t D, T* out) {
  for (int64_t r = 0; r < rows; ++r) {
    const T* zr = z + r * D;
    T mu, rstd;
    row_stats(zr, D, eps, mu, rstd);
    for (int64_t j = 0; j < D; ++j) out[r * D + j] = xq[r * D + j] + gamma[j] * ((zr[j] - mu) * rstd) + beta[j];
  }
}

template <typename T>
MTT_SIMD_CLONES void ln_out_bwd_rows(const T* dout, const T* z, const T* gamma, double eps, int64_t rows, int64_t D,
                                     T* dz, T* dgamma, T* dbeta) {
  const T invD = T(1) / static_cast<T>(D);
  for (int64_t r = 0; r < rows; ++r) {
    const T* zr = z + r * D;
    const T* dr = dout + r * D;
    T mu, rstd;
    row_stats(zr, D, eps, mu, rstd);
    for (int64_t j = 0; j < D; ++j) {
      dgamma[j] += dr[j] * ((zr[j] - mu) * rstd);
      dbeta[j] += dr[j];
    }
    const T s1 = lane_sum<T>(D, [&](int64_t j) { return dr[j] * gamma[j]; });
    const T s2 = lane_sum<T>(D, [&](int64_t j) { return dr[j] * gamma[j] * ((zr[j] - mu) * rstd); });
    const T m1 = s1 * invD, m2 = s2 * invD;
    for (int64_t j = 0; j < D; ++j) {
      const T zh = (zr[j] - mu) * rstd;
      dz[r * D + j] = rstd * (dr[j] * gamma[j] - m1 - zh * m2);
    }
  }
}

template <typename T>
MTT_SIMD_CLONES void ln_l2_grad_vjp_rows(const T* z, const T* xv, const T* xk, const T* gamma, const T* beta,
                                         double eps, const T* dG, int64_t rows, int64_t D, T* dz, T* dt, T* dgamma,
                                         T* dbeta) {
  // Forward (per row): zhat = (z - mu) rstd; g = gamma zhat + beta - t; ghat = gamma g;
  // a = mean ghat; s = mean(ghat zhat); G = rstd (ghat - a - zhat s).
  // Backward: u = dG rstd; dghat = u - mean u - zhat mean(u zhat);
  // dzhat = gamma^2 dghat - u s - ghat mean(u zhat); drstd = sum dG (ghat - a - zhat s);
  // dgamma += dghat (2 gamma zhat + beta - t); dbeta += dghat gamma; dt = -gamma dghat;
  // dz = rstd (dzhat - mean dzhat - zhat mean(dzhat zhat)) - drstd rstd^2 zhat / D.
  const T invD = T(1) / static_cast<T>(D);
  for (int64_t r = 0; r < rows; ++r) {
    const T* zr = z + r * D;
    const T* vr = xv + r * D;
    const T* kr = xk + r * D;
    const T* gr = dG + r * D;
    T mu, rstd;
    row_stats(zr, D, eps, mu, rstd);
    auto zh_at = [&](int64_t j) { return (zr[j] - mu) * rstd; };
    auto gh_at = [&](int64_t j) { return (gamma[j] * zh_at(j) + beta[j] - (vr[j] - kr[j])) * gamma[j]; };
    const T sg = lane_sum<T>(D, gh_at);
    const T sgz = lane_sum<T>(D, [&](int64_t j) { return gh_at(j) * zh_at(j); });
    const T su = lane_sum<T>(D, [&](int64_t j) { return gr[j] * rstd; });
    const T suz = lane_sum<T>(D, [&](int64_t j) { return gr[j] * rstd * zh_at(j); });
    const T a = sg * invD, s = sgz * invD, mu_u = su * invD, mu_uz = suz * invD;
    T* dzr = dz + r * D;
    T* dtr = dt + r * D;
    for (int64_t j = 0; j < D; ++j) {
      const T zh = (zr[j] - mu) * rstd;
      const T tj = vr[j] - kr[j];
      const T gh = (gamma[j] * zh + beta[j] - tj) * gamma[j];
      const T u = gr[j] * rstd;
      const T dgh = u - mu_u - zh * mu_uz;
      dgamma[j] += dgh * (T(2) * gamma[j] * zh + beta[j] - tj);
      dbeta[j] += dgh * gamma[j];
      dtr[j] = -gamma[j] * dgh;
      dzr[j] = gamma[j] * gamma[j] * dgh - u * s - gh * mu_uz;  // dzhat; finished below
    }
    const T drstd = lane_sum<T>(D, [&](int64_t j) { return gr[j] * (gh_at(j) - a - zh_at(j) * s); });
    const T sdzh = lane_sum<T>(D, [&](int64_t j) { return dzr[j]; });
    const T sdzhz = lane_sum<T>(D, [&](int64_t j) { return dzr[j] * zh_at(j); });
    const T m1 = sdzh * invD, m2 = sdzhz * invD, k = drstd * rstd * rstd * invD;
    for (int64_t j = 0; j < D; ++j) {
      const T zh = (zr[j] - mu) * rstd;
      dzr[j] = rstd * (dzr[j] - m1 - zh * m2) - k * zh;
    }
  }
}

#define MTT_INSTANTIATE(T)                                                                                        \
  template void gemm<T>(bool, bool, int64_t, int64_t, int64_t, T, const T*, int64_t, const T*, int64_t, T, T*,   \
                        int64_t);                                                                                 \
  template void tanh_inplace<T>(T*, int64_t);                                                                     \
  template void gelu_fwd_with_grad<T>(const T*, int64_t, T*, T*, T*);                                             \
  template void gelu_fwd<T>(const T*, int64_t, T*, T*);                                                           \
  template void gelu_bwd_prep<T>(const T*, int64_t, T*, T*, T*, T*, T*);                                          \
  template void ln_l2_grad_rows<T>(const T*, const T*, const T*, const T*, const T*, double, int64_t, int64_t, T*, \
                                   T*);                                                                           \
  template void ln_out_rows<T>(const T*, const T*, const T*, const T*, double, int64_t, int64_t, T*);             \
  template void ln_out_bwd_rows<T>(const T*, const T*, const T*, double, int64_t, int64_t, T*, T*, T*);           \
  template void ln_l2_grad_vjp_rows<T>(const T*, const T*, const T*, const T*, const T*, double, const T*,        \
                                       int64_t, int64_t, T*, T*, T*, T*);

MTT_INSTANTIATE(float)
MTT_INSTANTIATE(double)

}  // namespace mtt::ttt::cpu

namespace mtt::ttt::cpu {

NoOpenMpTeams::NoOpenMpTeams() {
  if (omp_get_max_active_levels && omp_set_max_active_levels) {
    previous_ = omp_get_max_active_levels();
    omp_set_max_active_levels(0);
  }
}

NoOpenMpTeams::~NoOpenMpTeams() {
  if (previous_ >= 0) omp_set_max_active_levels(previous_);
}

}  // namespace mtt::ttt::cpu
