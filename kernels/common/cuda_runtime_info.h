#pragma once
// Whether the CUDA kernels were compiled, and whether a device is there to run them; thin runtime
// helpers so that lib/ code never includes CUDA headers. They talk to the CUDA runtime the kernels
// use (the shared libcudart, CMakeLists.txt).
#include <string>

namespace mtt::kernels {
bool built_with_cuda();
int cuda_device_count();  // 0 without a GPU or a driver
std::string cuda_status();  // one line for logs and test skip messages
// false on failure or without CUDA
bool cuda_set_device(int index);
int cuda_current_device();  // -1 on failure or without CUDA
bool cuda_synchronize();  // waits for the current device; false (and the error cleared) on failure
std::string cuda_last_error();  // name of the last CUDA error ("" when none / no CUDA), then cleared

// Makes `index` the current device for the scope and restores the caller's device at its end (a
// launch must not leave the device changed under its caller). ok() is false when the device could
// not be made current (no CUDA, no such device).
class CudaDeviceScope {
 public:
  explicit CudaDeviceScope(int index);
  ~CudaDeviceScope();
  CudaDeviceScope(const CudaDeviceScope&) = delete;
  CudaDeviceScope& operator=(const CudaDeviceScope&) = delete;
  bool ok() const { return ok_; }

 private:
  int prev_ = -1;
  bool ok_ = false;
};
}  // namespace mtt::kernels
