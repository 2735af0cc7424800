#pragma once
// Safetensors checkpoint files: strict header validation (as strict as the format's reference
// implementation), mmap, zero-copy tensor views, and an atomic writer.
//
// Layout: [u64 little-endian N][N bytes of JSON header][data area]. The header maps tensor names
// to {"dtype", "shape", "data_offsets": [begin, end]} (offsets relative to the data area) and may
// hold "__metadata__": {string: string}.
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/dtype.h"

namespace mtt::io {

// The reference implementation caps the header at 100 MB.
inline constexpr uint64_t kMaxHeaderSize = 100'000'000;

struct TensorInfo {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  uint64_t begin = 0;  // byte offsets inside the data area
  uint64_t end = 0;
  uint64_t numel() const;
  uint64_t nbytes() const { return end - begin; }
};

struct Header {
  std::vector<TensorInfo> tensors;  // sorted by begin offset (file order)
  std::map<std::string, std::string> metadata;
  uint64_t data_start = 0;  // 8 + N
};

// Parses and validates the header of a file of `file_size` bytes whose first bytes are `bytes`
// (at least min(file_size, 8 + N) of them). Throws mtt::Error naming `file_name` and the tensor.
// This is the libFuzzer entry point.
Header parse_header(const uint8_t* bytes, std::size_t available, uint64_t file_size, const std::string& file_name);

class SafetensorsFile;

// A tensor inside a mapped file: valid while its file is alive (hold the shared_ptr).
struct TensorView {
  const TensorInfo* info = nullptr;
  const uint8_t* data = nullptr;
  std::shared_ptr<const SafetensorsFile> file;
  const std::string& name() const { return info->name; }
  DType dtype() const { return info->dtype; }
  const std::vector<int64_t>& shape() const { return info->shape; }
  uint64_t numel() const { return info->numel(); }
  uint64_t nbytes() const { return info->nbytes(); }
};

class SafetensorsFile : public std::enable_shared_from_this<SafetensorsFile> {
 public:
  // mmaps `path` read-only and validates it; throws mtt::Error on any violation.
  static std::shared_ptr<SafetensorsFile> open(const std::string& path);
  ~SafetensorsFile();

  const std::string& path() const { return path_; }
  const Header& header() const { return header_; }
  const std::vector<TensorInfo>& tensors() const { return header_.tensors; }
  const std::map<std::string, std::string>& metadata() const { return header_.metadata; }
  const TensorInfo* find(const std::string& name) const;
  TensorView view(const TensorInfo& info) const;
  TensorView view(const std::string& name) const;  // throws Error naming the key if missing
  uint64_t file_size() const { return size_; }
  // Advises the kernel that a tensor's pages are no longer needed (bounded RSS when streaming).
  void release(const TensorInfo& info) const;
  // Starts reading file bytes [from, to) into the page cache without waiting (MADV_WILLNEED):
  // the read-ahead of a streaming pass, so the disk works while the CPU computes.
  void prefetch(uint64_t from, uint64_t to) const;

 private:
  SafetensorsFile() = default;
  std::string path_;
  Header header_;
  std::map<std::string, std::size_t> index_;
  const uint8_t* base_ = nullptr;
  uint64_t size_ = 0;
};

// A tensor to write: raw little-endian bytes of `dtype` with `shape`.
struct TensorToWrite {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  const void* data = nullptr;  // numel * dtype_size bytes
};

// Writes a safetensors file atomically (temporary file, fsync, rename). Tensors are stored in
// name order, as torch/safetensors do; `metadata` becomes "__metadata__".
void write_safetensors(const std::string& path, const std::vector<TensorToWrite>& tensors,
                       const std::map<std::string, std::string>& metadata = {});

}  // namespace mtt::io
