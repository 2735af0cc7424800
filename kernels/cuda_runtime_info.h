#pragma once
// Whether the CUDA kernels were compiled, and whether a device is there to run them.
#include <string>

namespace mtt::kernels {
bool built_with_cuda();
int cuda_device_count();  // 0 without a GPU or a driver
std::string cuda_status();  // one line for logs and test skip messages
}  // namespace mtt::kernels
