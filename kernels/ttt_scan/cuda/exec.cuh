#pragma once
// CUDA side of the TTT scan: the block executor (GEMMs on bf16 tensor cores with fp32 accumulation,
// or fp32 FMA), the kernels and their launch. Included by the one-kernel .cu files only.
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <mma.h>

#include "kernels/ttt_scan/algo.h"
#include "kernels/ttt_scan/cuda/launch.h"

namespace mtt::kernels::cuda_impl {

inline constexpr int kThreads = 256;
inline constexpr int kWarps = kThreads / 32;
// Per warp: a 16x16 bf16 tile of A and of B (2 x 512 B) and a 16x16 fp32 result tile (1 KiB).
inline constexpr size_t kStageBytesPerWarp = 2048;
inline constexpr size_t kStageBytes = kStageBytesPerWarp * kWarps;

struct GpuExec {
  int tid, nt;
  bool tc;
  unsigned char* stage;  // kStageBytes of shared memory, 32-byte aligned

  __host__ __device__ void sync() {
#ifdef __CUDA_ARCH__
    __syncthreads();
#endif
  }

  // Same contract as CpuExec::mm (../cpu_ref/scan_cpu_ref.cpp); ends with a block barrier.
  __host__ __device__ void mm(float* C, int ldc, const float* A, int lda, bool tA, const float* B, int ldb, bool tB,
                              int M, int N, int K, float alpha, bool acc) {
#ifdef __CUDA_ARCH__
    if (tc && M % 16 == 0 && N % 16 == 0 && K % 16 == 0)
      mm_wmma(C, ldc, A, lda, tA, B, ldb, tB, M, N, K, alpha, acc);
    else
      mm_simt(C, ldc, A, lda, tA, B, ldb, tB, M, N, K, alpha, acc);
    __syncthreads();
#endif
  }

#ifdef __CUDA_ARCH__
  __device__ void mm_simt(float* C, int ldc, const float* A, int lda, bool tA, const float* B, int ldb, bool tB, int M,
                          int N, int K, float alpha, bool acc) {
    for (int idx = tid; idx < M * N; idx += nt) {
      const int i = idx / N, j = idx % N;
      float s = 0.f;
      for (int k = 0; k < K; ++k)
        s = fmaf(tA ? A[size_t(k) * lda + i] : A[size_t(i) * lda + k], tB ? B[size_t(j) * ldb + k] : B[size_t(k) * ldb + j], s);
      float& c = C[size_t(i) * ldc + j];
      c = acc ? c + alpha * s : alpha * s;
    }
  }

  // One warp per 16x16 output tile; fp32 operands are rounded to bf16 into the warp's staging tiles
  // (the state itself stays fp32), products accumulate in fp32 on the tensor cores (WMMA, sm_80+).
  __device__ void mm_wmma(float* C, int ldc, const float* A, int lda, bool tA, const float* B, int ldb, bool tB, int M,
                          int N, int K, float alpha, bool acc) {
    using namespace nvcuda;
    const int warp = tid / 32, lane = tid % 32, nwarps = nt / 32;
    __nv_bfloat16* sa = reinterpret_cast<__nv_bfloat16*>(stage + size_t(warp) * kStageBytesPerWarp);
    __nv_bfloat16* sb = sa + 256;
    float* sc = reinterpret_cast<float*>(sb + 256);
    const int tn_count = N / 16, tiles = (M / 16) * tn_count;
    for (int tile = warp; tile < tiles; tile += nwarps) {
      const int tm = tile / tn_count, tn = tile % tn_count;
      wmma::fragment<wmma::accumulator, 16, 16, 16, float> fc;
      wmma::fill_fragment(fc, 0.f);
      for (int k0 = 0; k0 < K; k0 += 16) {
        for (int e = lane; e < 256; e += 32) {
          const int r = e / 16, q = e % 16;
          const int i = tm * 16 + r, k = k0 + q;
          sa[e] = __float2bfloat16(tA ? A[size_t(k) * lda + i] : A[size_t(i) * lda + k]);
          const int kk = k0 + r, j = tn * 16 + q;
          sb[e] = __float2bfloat16(tB ? B[size_t(j) * ldb + kk] : B[size_t(kk) * ldb + j]);
        }
        __syncwarp();
        wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, wmma::row_major> fa;
        wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::row_major> fb;
        wmma::load_matrix_sync(fa, sa, 16);
        wmma::load_matrix_sync(fb, sb, 16);
        wmma::mma_sync(fc, fa, fb, fc);
        __syncwarp();
      }
      wmma::store_matrix_sync(sc, fc, 16, wmma::mem_row_major);
      __syncwarp();
      for (int e = lane; e < 256; e += 32) {
        float& c = C[size_t(tm * 16 + e / 16) * ldc + tn * 16 + e % 16];
        c = acc ? c + alpha * sc[e] : alpha * sc[e];
      }
      __syncwarp();
    }
  }
#endif
};

// One CTA per (batch, head): blockIdx.x = batch * H + head. The inner state stays in shared memory
// for the whole scan when the plan placed it there (spec §5.4), otherwise in the CTA's workspace.
template <int DEPTH>
__global__ void __launch_bounds__(kThreads) ttt_scan_fwd_kernel(TTTScanParams p, algo::Plan pl) {
  extern __shared__ __align__(128) unsigned char smem_raw[];
  GpuExec x{static_cast<int>(threadIdx.x), static_cast<int>(blockDim.x), p.tensor_cores, smem_raw};
  algo::Ctx c{&p, pl, reinterpret_cast<float*>(smem_raw + kStageBytes),
              static_cast<float*>(p.workspace) + size_t(blockIdx.x) * pl.global_floats,
              static_cast<int>(blockIdx.x) / p.H, static_cast<int>(blockIdx.x) % p.H};
  algo::forward_scan(x, c);
}

__global__ void __launch_bounds__(kThreads) ttt_linear_scan_bwd_kernel(TTTScanParams p, TTTScanGradParams g,
                                                                      algo::Plan pl);

// Shared-memory budget (floats) for the plan: the opt-in per-block maximum minus the staging tiles,
// at most p.smem_cap_floats when that is set.
inline KernelStatus smem_budget(const TTTScanParams& p, size_t& floats) {
  int dev = 0, optin = 0;
  if (cudaGetDevice(&dev) != cudaSuccess) {
    cudaGetLastError();
    return {2, "cudaGetDevice failed (no device?)"};
  }
  if (cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev) != cudaSuccess) {
    cudaGetLastError();
    return {2, "cudaDeviceGetAttribute(MaxSharedMemoryPerBlockOptin) failed"};
  }
  floats = optin > static_cast<int>(kStageBytes) ? (size_t(optin) - kStageBytes) / sizeof(float) : 0;
  if (p.smem_cap_floats >= 0 && size_t(p.smem_cap_floats) < floats) floats = size_t(p.smem_cap_floats);
  return {};
}

template <class Kernel>
inline KernelStatus prepare(Kernel kernel, const algo::Plan& pl, size_t& smem_bytes) {
  smem_bytes = kStageBytes + pl.smem_floats * sizeof(float);
  if (cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem_bytes)) !=
      cudaSuccess) {
    return {2, cudaGetErrorString(cudaGetLastError())};  // cudaFuncSetAttribute(MaxDynamicSharedMemorySize)
  }
  return {};
}

template <int DEPTH>
inline KernelStatus launch_forward(const TTTScanParams& p, void* stream) {
  if (const char* why = ttt_scan_unsupported(p)) return {1, why};
  if (p.depth != DEPTH) return {1, DEPTH == 1 ? "ttt_linear_scan_forward needs depth 1" : "ttt_mlp_scan_forward needs depth 2"};
  if (!p.workspace || p.workspace_bytes < ttt_scan_workspace_bytes(p)) return {1, "workspace missing or too small"};
  size_t budget = 0, smem = 0;
  if (KernelStatus s = smem_budget(p, budget); !s.ok()) return s;
  const algo::Plan pl = algo::fwd_plan(p, budget);
  if (KernelStatus s = prepare(ttt_scan_fwd_kernel<DEPTH>, pl, smem); !s.ok()) return s;
  ttt_scan_fwd_kernel<DEPTH><<<p.B * p.H, kThreads, smem, static_cast<cudaStream_t>(stream)>>>(p, pl);
  if (cudaError_t e = cudaGetLastError(); e != cudaSuccess) return {2, cudaGetErrorString(e)};  // static strings
  return {};
}

}  // namespace mtt::kernels::cuda_impl
