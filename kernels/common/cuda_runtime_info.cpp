#include "kernels/common/cuda_runtime_info.h"

#ifdef MTT_HAVE_CUDA
#include <cuda_runtime_api.h>
#endif

namespace mtt::kernels {

bool built_with_cuda() {
#ifdef MTT_HAVE_CUDA
  return true;
#else
  return false;
#endif
}

int cuda_device_count() {
#ifdef MTT_HAVE_CUDA
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no device" error
    return 0;
  }
  return n;
#else
  return 0;
#endif
}

std::string cuda_status() {
  if (!built_with_cuda()) return "built without CUDA (nvcc was not found at configure time)";
  int n = cuda_device_count();
  if (n == 0) return "built with CUDA kernels; no CUDA device visible";
  return "built with CUDA kernels; " + std::to_string(n) + " device(s)";
}

bool cuda_set_device(int index) {
#ifdef MTT_HAVE_CUDA
  return cudaSetDevice(index) == cudaSuccess;
#else
  (void)index;
  return false;
#endif
}

int cuda_current_device() {
#ifdef MTT_HAVE_CUDA
  int d = -1;
  if (cudaGetDevice(&d) != cudaSuccess) {
    cudaGetLastError();
    return -1;
  }
  return d;
#else
  return -1;
#endif
}

CudaDeviceScope::CudaDeviceScope(int index) {
  prev_ = cuda_current_device();
  if (prev_ < 0) return;
  ok_ = prev_ == index || cuda_set_device(index);
  if (!ok_) cuda_last_error();  // clear it: the caller reports ok() == false
}

CudaDeviceScope::~CudaDeviceScope() {
  if (ok_ && cuda_current_device() != prev_) cuda_set_device(prev_);
}

bool cuda_synchronize() {
#ifdef MTT_HAVE_CUDA
  return cudaDeviceSynchronize() == cudaSuccess;
#else
  return false;
#endif
}

std::string cuda_last_error() {
#ifdef MTT_HAVE_CUDA
  cudaError_t e = cudaGetLastError();
  return e == cudaSuccess ? std::string() : std::string(cudaGetErrorName(e)) + ": " + cudaGetErrorString(e);
#else
  return {};
#endif
}

}  // namespace mtt::kernels
