#pragma once
// The memory figures of moshi-finetune's metrics (peak_allocated_mem, allocated_mem, in bytes
// here): torch.cuda.max_memory_allocated() / memory_allocated() when training on a CUDA device, the
// process's peak and current resident set size on the CPU. The CUDA caching allocator is reached
// through a query that the product library registers when LibTorch has CUDA (lib/cuda_memory.cpp),
// so the component archives need no CUDA libraries; without it, CUDA runs report the RSS.
#include <cstdint>
#include <string>

namespace mtt::experiments {

struct MemoryStats {
  int64_t peak_bytes = 0;
  int64_t current_bytes = 0;
  std::string source;  // "cuda allocator" | "process RSS"
};

// device_index < 0: the CPU.
MemoryStats memory_stats(int device_index);

using CudaMemoryQuery = bool (*)(int device_index, int64_t* peak, int64_t* current);
void set_cuda_memory_query(CudaMemoryQuery q);

}  // namespace mtt::experiments
