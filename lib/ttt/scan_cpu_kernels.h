#pragma once
// Raw-pointer building blocks of the fused CPU TTT scan (lib/ttt/scan_cpu_fused.*): a row-major
// GEMM on the BLAS LibTorch links, and single-pass row/elementwise kernels for the helpers of
// docs/ttt.md §2 (GELU(tanh) with its derivatives sharing one tanh, ln_fwd + residual,
// ln_fused_l2_bwd and their vector-Jacobian products). All take contiguous row-major data of one
// (batch, head); T is float or double and every reduction runs in T (fp32 statistics for fp32).
#include <cstdint>

namespace mtt::ttt::cpu {

// C[M,N] = alpha * op(A)[M,K] * op(B)[K,N] + beta * C, row-major with leading dimensions
// (op = transpose when ta / tb). Single-threaded when called inside at::parallel_for.
template <typename T>
void gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, T alpha, const T* A, int64_t lda, const T* B,
          int64_t ldb, T beta, T* C, int64_t ldc);

// While alive, BLAS calls of this thread run single-threaded (MKL's thread-local setting and this
// thread's OpenMP team size; a no-op with other BLAS). The fused scan already runs one (batch, head) per intra-op thread, and MKL
// called from inside that parallel region would otherwise start nested thread teams that spin
// against each other on a 2-core machine.
class SingleThreadBlas {
 public:
  SingleThreadBlas();
  ~SingleThreadBlas();
  SingleThreadBlas(const SingleThreadBlas&) = delete;
  SingleThreadBlas& operator=(const SingleThreadBlas&) = delete;

 private:
  int previous_ = 0, previous_omp_ = 0;
};

// While alive, no OpenMP parallel region starts anywhere in the process (max-active-levels 0;
// restored after). MKL sizes its GEMM teams by its global thread count even in threads that asked
// for one thread, and its k-split teams spin against the fused scan's own threads.
class NoOpenMpTeams {
 public:
  NoOpenMpTeams();
  ~NoOpenMpTeams();
  NoOpenMpTeams(const NoOpenMpTeams&) = delete;
  NoOpenMpTeams& operator=(const NoOpenMpTeams&) = delete;

 private:
  int previous_ = -1;
};

// tanh in place (ATen's vectorised kernel, the one the reference path uses).
template <typename T>
void tanh_inplace(T* x, int64_t n);

// Key side of the inner MLP (§2 helpers): x = gelu(z), d = gelu'(z) (the spec's formula), one tanh;
// t is scratch of n elements.
template <typename T>
void gelu_fwd_with_grad(const T* z, int64_t n, T* x, T* d, T* t);
// Query side: x = gelu(z).
template <typename T>
void gelu_fwd(const T* z, int64_t n, T* x, T* t);
// For the backward pass: x = gelu(z) and dx = d gelu/dz (exact derivative of the forward ops);
// when d and d2 are non-null also d = gelu'(z) (the spec's formula) and d2 = d(gelu'(z))/dz.
template <typename T>
void gelu_bwd_prep(const T* z, int64_t n, T* x, T* dx, T* d, T* d2, T* t);

// G[r] = ln_fused_l2_bwd(z[r], xv[r] - xk[r]) per row (§2 helpers); loss[r] = mean_f
// (LN(z[r]) - (xv[r] - xk[r]))^2 when loss is non-null; G may be null (loss only).
template <typename T>
void ln_l2_grad_rows(const T* z, const T* xv, const T* xk, const T* gamma, const T* beta, double eps, int64_t rows,
                     int64_t D, T* G, T* loss);
// out[r] = xq[r] + gamma * zhat[r] + beta (§2.1 step 7: LN of the last layer plus the residual).
template <typename T>
void ln_out_rows(const T* z, const T* xq, const T* gamma, const T* beta, double eps, int64_t rows, int64_t D,
                 T* out);
// VJP of ln_out_rows w.r.t. z (dz, written), gamma and beta (accumulated), given dout.
template <typename T>
void ln_out_bwd_rows(const T* dout, const T* z, const T* gamma, double eps, int64_t rows, int64_t D, T* dz,
                     T* dgamma, T* dbeta);
// VJP of ln_l2_grad_rows' G given dG: dz and dt (the target xv - xk) written, dgamma/dbeta
// accumulated.
template <typename T>
void ln_l2_grad_vjp_rows(const T* z, const T* xv, const T* xk, const T* gamma, const T* beta, double eps,
                         const T* dG, int64_t rows, int64_t D, T* dz, T* dt, T* dgamma, T* dbeta);

}  // namespace mtt::ttt::cpu
