#pragma once
// A one-buffer cache for the fused CPU scan's saved-slot buffer (gigabytes at Moshi sizes). Fresh
// anonymous memory costs the kernel's page zeroing, as much as the GEMMs of the scan, so the buffer
// of the last backward is kept for the next forward: one buffer, the largest seen, 2 MiB aligned
// (huge-page boundaries). Transparent huge pages were tried: their first touch costs more here,
// compaction included.
#include <ATen/ATen.h>

namespace mtt::ttt {

// A tensor of `sizes` whose memory comes from the cache when it holds a large enough buffer (else a
// fresh mapping); when the tensor dies its memory returns to the cache (the larger of the two is
// kept). Below 8 MiB a plain at::empty.
at::Tensor cached_big_buffer(at::IntArrayRef sizes, const at::TensorOptions& opt);

// Unmaps the cached buffer (tensors still alive keep theirs).
void release_big_buffer_cache();

// Bytes held by the cache (for tests).
size_t big_buffer_cache_bytes();

}  // namespace mtt::ttt
