// The fused CPU scan's one-buffer cache (lib/ttt/big_buffer_cache.h): a large buffer returns to the
// cache when its tensor dies and serves the next request that fits; small requests bypass it.
#include <gtest/gtest.h>

#include "ttt/big_buffer_cache.h"

namespace {

TEST(BigBufferCache, KeepsTheLargestBufferForTheNextRequest) {
  mtt::ttt::release_big_buffer_cache();
  const auto opt = at::TensorOptions().dtype(at::kFloat);
  void* first = nullptr;
  {
    at::Tensor t = mtt::ttt::cached_big_buffer({4, 1 << 20}, opt);  // 16 MiB
    first = t.data_ptr();
    EXPECT_EQ(reinterpret_cast<uintptr_t>(first) % (size_t(2) << 20), 0u);  // huge-page aligned
    t.fill_(1.f);
    EXPECT_EQ(mtt::ttt::big_buffer_cache_bytes(), 0u);  // in use, not cached
  }
  EXPECT_GE(mtt::ttt::big_buffer_cache_bytes(), size_t(16) << 20);
  {
    at::Tensor t = mtt::ttt::cached_big_buffer({3, 1 << 20}, opt);  // fits: the same memory
    EXPECT_EQ(t.data_ptr(), first);
    EXPECT_EQ(mtt::ttt::big_buffer_cache_bytes(), 0u);
    at::Tensor small = mtt::ttt::cached_big_buffer({16}, opt);  // below 8 MiB: plain at::empty
    EXPECT_NE(small.data_ptr(), first);
  }
  mtt::ttt::release_big_buffer_cache();
  EXPECT_EQ(mtt::ttt::big_buffer_cache_bytes(), 0u);
}

}  // namespace
