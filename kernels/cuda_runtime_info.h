#pragma once
// Whether the CUDA kernels were compiled, and whether a device is there to run them.
#include <string>

namespace mtt::kernels {
bool built_with_cuda();
int cuda_device_count();  // 0 without a GPU or a driver
std::string cuda_status();  // one line for logs and test skip messages
// Thin runtime helpers so lib/ code never includes CUDA headers: false on failure or without CUDA.
bool cuda_set_device(int index);
bool cuda_synchronize();  // waits for the current device; false (and the error cleared) on failure
std::string cuda_last_error();  // name of the last CUDA error ("" when none / no CUDA), then cleared
}  // namespace mtt::kernels
