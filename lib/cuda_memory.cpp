// Compiled into the product library only when LibTorch has CUDA and the CUDA toolkit headers are
// there (lib/CMakeLists.txt): registers the CUDA caching allocator's statistics as the memory
// figures of CUDA training runs (experiments/memory_stats.h), torch.cuda.max_memory_allocated()'s
// source.
#include <c10/cuda/CUDACachingAllocator.h>

#include "experiments/memory_stats.h"

namespace {

bool cuda_allocator_stats(int device, int64_t* peak, int64_t* current) {
  try {
    const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(static_cast<c10::DeviceIndex>(device));
    const auto& all = stats.allocated_bytes[static_cast<size_t>(c10::CachingAllocator::StatType::AGGREGATE)];
    *peak = all.peak;
    *current = all.current;
    return true;
  } catch (...) {
    return false;
  }
}

[[maybe_unused]] const bool registered = (mtt::experiments::set_cuda_memory_query(&cuda_allocator_stats), true);

}  // namespace
