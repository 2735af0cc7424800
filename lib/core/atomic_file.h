#pragma once
// Outputs are atomic (docs/architecture.md): bytes go to "<path>.tmp.<pid>.<n>" in the same
// directory, are fsync'd, then renamed over <path>. A failure or crash leaves <path> untouched
// and removes the temporary (also on SIGINT/SIGTERM/SIGHUP: the signal is re-raised after the
// live temporaries are unlinked).
//
// Special files are written in place (issue 15): a character or block device (/dev/null,
// /dev/full, a tty) or a FIFO cannot be replaced through a rename without destroying it, so it
// is opened and written directly. A FIFO waits a bounded time (kFifoWaitSeconds) for a reader
// instead of hanging. Write errors (ENOSPC on /dev/full, EPIPE when the reader went away, EFBIG)
// are mtt::Errors naming the path, never a silent success or a signal. A symbolic link is
// followed: the file it names is replaced, the link stays.
#include <cstddef>
#include <string>
#include <string_view>

namespace mtt {

inline constexpr int kFifoWaitSeconds = 20;

class OutputSet;

class AtomicFile {
 public:
  // Opens the temporary (or the special file) now, so an unwritable output fails before the work.
  explicit AtomicFile(std::string path);
  ~AtomicFile();  // discards (unlinks the temporary) unless commit() succeeded
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;

  void write(const void* data, std::size_t n);
  void write(std::string_view s) { write(s.data(), s.size()); }
  // Writes n bytes at an absolute offset (the temporary is a plain file; a FIFO cannot seek).
  void pwrite(const void* data, std::size_t n, std::size_t offset);
  // fsync and close the temporary, keeping it for commit(): frees the descriptor early when many
  // outputs wait to be committed together (OutputSet). Writing after seal() is an internal error.
  void seal();
  void commit();  // seal, rename, fsync the directory (special files: close, checking for errors)

  // The output is a device or a FIFO, written in place: temp_path() is empty.
  bool special() const { return special_; }
  const std::string& temp_path() const { return tmp_; }
  const std::string& path() const { return path_; }

 private:
  friend class OutputSet;
  void rename_into_place();  // the rename of commit(); throws naming path_
  std::string path_;    // as given (errors name it)
  std::string target_;  // what the rename replaces: path_, or the file a symlink points to
  std::string tmp_;
  int fd_ = -1;
  bool special_ = false, sealed_ = false, committed_ = false;
};

// Whole-file helpers.
void write_file_atomic(const std::string& path, std::string_view content);
std::string read_file(const std::string& path);

// True when `path` names an existing character/block device or FIFO (after symlinks).
bool is_special_file(const std::string& path);

}  // namespace mtt
