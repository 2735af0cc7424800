#pragma once
// Outputs are atomic (design/architecture.md): bytes go to "<path>.tmp.<pid>.<n>" in the same
// directory, are fsync'd, then renamed over <path>. A failure or crash leaves <path> untouched
// and removes the temporary.
#include <functional>
#include <string>
#include <string_view>

namespace mtt {

class AtomicFile {
 public:
  explicit AtomicFile(std::string path);
  ~AtomicFile();  // discards (unlinks the temporary) unless commit() succeeded
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;

  void write(const void* data, std::size_t n);
  void write(std::string_view s) { write(s.data(), s.size()); }
  // Writes n bytes at an absolute offset (the temporary is a plain file).
  void pwrite(const void* data, std::size_t n, std::size_t offset);
  void commit();  // fsync, close, rename, fsync the directory
  const std::string& temp_path() const { return tmp_; }
  const std::string& path() const { return path_; }

 private:
  std::string path_, tmp_;
  int fd_ = -1;
  bool committed_ = false;
};

// Whole-file helpers.
void write_file_atomic(const std::string& path, std::string_view content);
std::string read_file(const std::string& path);

}  // namespace mtt
