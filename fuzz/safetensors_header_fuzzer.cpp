// libFuzzer target for the safetensors header parser (io::parse_header), the code that sees
// untrusted bytes first. Built and run by scripts/fuzz.sh under ASan + UBSan; the seeds are the
// hostile corpus in tests/fixtures/hostile/ and the dictionary fuzz/safetensors.dict.
//
// Besides "no crash, no leak, no UB, only mtt::Error", every accepted header must satisfy the
// invariants the rest of the library relies on (traps otherwise, so libFuzzer reports it).
#include <cstddef>
#include <cstdint>
#include <string>

#include "core/error.h"
#include "io/safetensors.h"

namespace {

void check_invariants(const mtt::io::Header& h, uint64_t file_size) {
  // Tensors tile the data area exactly: sorted, contiguous from 0, ending at the file's end.
  uint64_t pos = 0;
  for (const auto& t : h.tensors) {
    if (t.begin != pos || t.end < t.begin) __builtin_trap();
    uint64_t numel = 1;
    for (int64_t d : t.shape) {
      if (d < 0) __builtin_trap();
      if (__builtin_mul_overflow(numel, static_cast<uint64_t>(d), &numel)) __builtin_trap();
    }
    if (numel != t.numel()) __builtin_trap();
    if (numel * mtt::dtype_size(t.dtype) != t.nbytes()) __builtin_trap();
    pos = t.end;
  }
  if (h.data_start < 8 || h.data_start > file_size) __builtin_trap();
  if (pos != file_size - h.data_start) __builtin_trap();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // 1. The whole input is the file.
  try {
    auto h = mtt::io::parse_header(data, size, size, "fuzz.safetensors");
    check_invariants(h, size);
  } catch (const mtt::Error&) {
  }
  // 2. The input is only the readable prefix of a longer file (the streaming/prefix contract):
  //    must never read past `size`.
  try {
    auto h = mtt::io::parse_header(data, size, static_cast<uint64_t>(size) + 4096, "fuzz.safetensors");
    check_invariants(h, static_cast<uint64_t>(size) + 4096);
  } catch (const mtt::Error&) {
  }
  return 0;
}
