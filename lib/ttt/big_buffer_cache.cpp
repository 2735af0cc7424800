#include "ttt/big_buffer_cache.h"

#include <sys/mman.h>

#include <cstdint>
#include <mutex>
#include <utility>

namespace mtt::ttt {

namespace {

struct Region {
  void* raw = nullptr;
  size_t len = 0;
};
std::mutex g_cache_mu;
Region g_cache;

void unmap(Region r) {
  if (r.raw) ::munmap(r.raw, r.len);
}

void give_back(Region r) {
  Region old;
  {
    std::lock_guard<std::mutex> lk(g_cache_mu);
    if (r.len > g_cache.len) std::swap(r, g_cache);
    old = r;
  }
  unmap(old);
}

}  // namespace

at::Tensor cached_big_buffer(at::IntArrayRef sizes, const at::TensorOptions& opt) {
  int64_t numel = 1;
  for (int64_t s : sizes) numel *= s;
  const size_t bytes = static_cast<size_t>(numel) * opt.dtype().itemsize();
  constexpr size_t kAlign = size_t(2) << 20;
  if (bytes < 4 * kAlign) return at::empty(sizes, opt);
  const size_t len = (bytes + kAlign - 1) / kAlign * kAlign + kAlign;
  Region r;
  {
    std::lock_guard<std::mutex> lk(g_cache_mu);
    if (g_cache.len >= len) std::swap(r, g_cache);
  }
  if (!r.raw) {
    void* raw = ::mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (raw == MAP_FAILED) return at::empty(sizes, opt);
    r = {raw, len};
  }
  const uintptr_t start = (reinterpret_cast<uintptr_t>(r.raw) + kAlign - 1) / kAlign * kAlign;
  return at::from_blob(reinterpret_cast<void*>(start), sizes, [r](void*) { give_back(r); }, opt);
}

void release_big_buffer_cache() {
  Region r;
  {
    std::lock_guard<std::mutex> lk(g_cache_mu);
    std::swap(r, g_cache);
  }
  unmap(r);
}

size_t big_buffer_cache_bytes() {
  std::lock_guard<std::mutex> lk(g_cache_mu);
  return g_cache.len;
}

}  // namespace mtt::ttt
