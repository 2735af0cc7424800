#include "experiments/memory_stats.h"

#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>

namespace mtt::experiments {

namespace {
std::atomic<CudaMemoryQuery> g_cuda_query{nullptr};

int64_t current_rss_bytes() {
  long pages = 0, resident = 0;
  FILE* f = std::fopen("/proc/self/statm", "r");
  if (!f) return 0;
  const int n = std::fscanf(f, "%ld %ld", &pages, &resident);
  std::fclose(f);
  return n == 2 ? static_cast<int64_t>(resident) * sysconf(_SC_PAGESIZE) : 0;
}
}  // namespace

void set_cuda_memory_query(CudaMemoryQuery q) { g_cuda_query.store(q); }

MemoryStats memory_stats(int device_index) {
  MemoryStats s;
  if (device_index >= 0) {
    if (CudaMemoryQuery q = g_cuda_query.load(); q && q(device_index, &s.peak_bytes, &s.current_bytes)) {
      s.source = "cuda allocator";
      return s;
    }
  }
  struct rusage ru {};
  getrusage(RUSAGE_SELF, &ru);
  s.peak_bytes = static_cast<int64_t>(ru.ru_maxrss) * 1024;  // Linux: kilobytes
  s.current_bytes = current_rss_bytes();
  // The kernel folds the resident count into ru_maxrss lazily: the current size bounds it from below.
  s.peak_bytes = std::max(s.peak_bytes, s.current_bytes);
  s.source = "process RSS";
  return s;
}

}  // namespace mtt::experiments
