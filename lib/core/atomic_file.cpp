#include "core/atomic_file.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <algorithm>
#include <climits>
#include <cstring>
#include <mutex>

#include "core/error.h"

namespace mtt {

namespace {
std::atomic<unsigned> g_counter{0};

std::string dir_of(const std::string& path) {
  auto pos = path.find_last_of('/');
  if (pos == std::string::npos) return ".";
  if (pos == 0) return "/";
  return path.substr(0, pos);
}

std::string errno_text(int err) { return std::strerror(err); }

// read_file() of something that is not a regular file stops here (the whole input is held).
constexpr std::size_t kMaxStreamBytes = std::size_t{1} << 30;

// ---- live temporaries, unlinked by a fatal signal --------------------------------------------
// Fixed slots written before a temporary exists and cleared once it is renamed or unlinked, so
// the handler only reads memory that stays valid (no allocation, no lock in the handler).
constexpr int kSlots = 128;
constexpr std::size_t kSlotPath = PATH_MAX;
struct Slot {
  std::atomic<int> state{0};  // 0 free, 1 being filled, 2 holds a path
  char path[kSlotPath];
};
Slot g_slots[kSlots];

void unlink_live_temporaries(int sig) {
  for (auto& s : g_slots)
    if (s.state.load(std::memory_order_acquire) == 2) ::unlink(s.path);
  // SA_RESETHAND restored the default action: the re-raised signal ends the process as before.
  ::raise(sig);
}

void install_signal_cleanup() {
  static std::once_flag once;
  std::call_once(once, [] {
    for (int sig : {SIGINT, SIGTERM, SIGHUP}) {
      struct sigaction old {};
      if (::sigaction(sig, nullptr, &old) != 0) continue;
      // Only where nobody chose a disposition: an app's own handler or an inherited SIG_IGN stays.
      if (old.sa_handler != SIG_DFL || (old.sa_flags & SA_SIGINFO)) continue;
      struct sigaction sa {};
      sa.sa_handler = unlink_live_temporaries;
      sigemptyset(&sa.sa_mask);
      sa.sa_flags = SA_RESETHAND;
      ::sigaction(sig, &sa, nullptr);
    }
  });
}

int register_temporary(const std::string& p) {
  if (p.size() >= kSlotPath) return -1;
  install_signal_cleanup();
  for (int i = 0; i < kSlots; ++i) {
    int expected = 0;
    if (g_slots[i].state.compare_exchange_strong(expected, 1, std::memory_order_acq_rel)) {
      std::memcpy(g_slots[i].path, p.c_str(), p.size() + 1);
      g_slots[i].state.store(2, std::memory_order_release);
      return i;
    }
  }
  return -1;  // more than kSlots outputs at once: the rest are cleaned by destructors only
}

void unregister_temporary(const std::string& p) {
  for (auto& s : g_slots)
    if (s.state.load(std::memory_order_acquire) == 2 && p == s.path) {
      s.state.store(0, std::memory_order_release);
      return;
    }
}

// ---- special files -------------------------------------------------------------------------

// The file a (chain of) symbolic link(s) names; `path` itself when it is not a link.
std::string resolve_links(const std::string& path) {
  std::string cur = path;
  for (int depth = 0; depth < 40; ++depth) {
    struct stat st {};
    if (::lstat(cur.c_str(), &st) != 0 || !S_ISLNK(st.st_mode)) return cur;
    char buf[PATH_MAX];
    const ssize_t n = ::readlink(cur.c_str(), buf, sizeof buf - 1);
    if (n < 0) return cur;
    std::string t(buf, static_cast<std::size_t>(n));
    cur = (t.empty() || t[0] == '/') ? t : dir_of(cur) + "/" + t;
  }
  throw Error(path, "", "too many levels of symbolic links");
}

bool special_mode(mode_t m) { return S_ISCHR(m) || S_ISBLK(m) || S_ISFIFO(m); }

int open_fifo_for_writing(const std::string& path) {
  // O_NONBLOCK: ENXIO instead of blocking while nobody reads; retried for kFifoWaitSeconds.
  const auto deadline = ::time(nullptr) + kFifoWaitSeconds;
  while (true) {
    int fd = ::open(path.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd >= 0) {
      const int fl = ::fcntl(fd, F_GETFL);
      if (fl >= 0) ::fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);  // the reader sets the pace from here on
      return fd;
    }
    if (errno == EINTR) continue;
    if (errno != ENXIO) throw Error(path, "", "cannot open for writing: " + errno_text(errno));
    if (::time(nullptr) >= deadline)
      throw Error(path, "", "FIFO has no reader (waited " + std::to_string(kFifoWaitSeconds) + " s)");
    ::poll(nullptr, 0, 20);
  }
}

// write(2) with SIGPIPE held back, so a reader that went away is an EPIPE error, not a silent
// death of the process (the pending SIGPIPE of this write is consumed).
ssize_t write_no_sigpipe(int fd, const void* p, std::size_t n) {
  sigset_t pipe_set, old;
  sigemptyset(&pipe_set);
  sigaddset(&pipe_set, SIGPIPE);
  sigset_t pending;
  sigemptyset(&pending);
  ::sigpending(&pending);
  const bool was_pending = sigismember(&pending, SIGPIPE);
  ::pthread_sigmask(SIG_BLOCK, &pipe_set, &old);
  ssize_t w = ::write(fd, p, n);
  const int err = errno;
  // A reader leaving during a blocked write raises SIGPIPE too, with a partial count returned:
  // consume whatever this write raised (the next write reports EPIPE).
  sigemptyset(&pending);
  ::sigpending(&pending);
  if (!was_pending && sigismember(&pending, SIGPIPE)) {
    struct timespec zero {};
    while (::sigtimedwait(&pipe_set, nullptr, &zero) < 0 && errno == EINTR) {
    }
  }
  ::pthread_sigmask(SIG_SETMASK, &old, nullptr);
  errno = err;
  return w;
}

}  // namespace

bool is_special_file(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && special_mode(st.st_mode);
}

AtomicFile::AtomicFile(std::string path) : path_(std::move(path)) {
  if (path_.empty()) throw Error("", "", "an output path is empty", ErrorKind::Usage);
  struct stat st {};
  if (::stat(path_.c_str(), &st) == 0) {
    if (S_ISDIR(st.st_mode)) throw Error(path_, "", "is a directory, cannot write the output there");
    if (special_mode(st.st_mode)) {
      special_ = true;
      if (S_ISFIFO(st.st_mode)) {
        fd_ = open_fifo_for_writing(path_);
      } else {
        fd_ = ::open(path_.c_str(), O_WRONLY | O_CLOEXEC);
        if (fd_ < 0) throw Error(path_, "", "cannot open for writing: " + errno_text(errno));
      }
      return;
    }
    if (!S_ISREG(st.st_mode)) throw Error(path_, "", "exists and is not a regular file, a device or a FIFO");
  }
  target_ = resolve_links(path_);
  for (int attempt = 0;; ++attempt) {
    tmp_ = target_ + ".tmp." + std::to_string(::getpid()) + "." + std::to_string(g_counter++);
    register_temporary(tmp_);
    fd_ = ::open(tmp_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd_ >= 0) break;
    const int err = errno;
    unregister_temporary(tmp_);
    // EEXIST: a stale temporary of an earlier process that had our pid; take the next name.
    if (err != EEXIST || attempt >= 100) throw Error(path_, "", "cannot create output: " + errno_text(err));
  }
}

AtomicFile::~AtomicFile() {
  if (fd_ >= 0) ::close(fd_);
  if (!special_ && !committed_) {
    ::unlink(tmp_.c_str());
    unregister_temporary(tmp_);
  }
}

void AtomicFile::write(const void* data, std::size_t n) {
  if (fd_ < 0) throw Error(path_, "", "write after the output was closed", ErrorKind::Internal);
  const char* p = static_cast<const char*>(data);
  while (n > 0) {
    ssize_t w = special_ ? write_no_sigpipe(fd_, p, n) : ::write(fd_, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      if (errno == EPIPE) throw Error(path_, "", "write failed: the reading end was closed (EPIPE)");
      throw Error(path_, "", "write failed: " + errno_text(errno));
    }
    if (w == 0) throw Error(path_, "", "write failed: no byte accepted");
    p += w;
    n -= static_cast<std::size_t>(w);
  }
}

void AtomicFile::pwrite(const void* data, std::size_t n, std::size_t offset) {
  if (fd_ < 0) throw Error(path_, "", "write after the output was closed", ErrorKind::Internal);
  const char* p = static_cast<const char*>(data);
  while (n > 0) {
    ssize_t w = ::pwrite(fd_, p, n, static_cast<off_t>(offset));
    if (w < 0) {
      if (errno == EINTR) continue;
      if (errno == ESPIPE) throw Error(path_, "", "write failed: the output cannot seek (a FIFO?)");
      throw Error(path_, "", "write failed: " + errno_text(errno));
    }
    if (w == 0) throw Error(path_, "", "write failed: no byte accepted");
    p += w;
    offset += static_cast<std::size_t>(w);
    n -= static_cast<std::size_t>(w);
  }
}

void AtomicFile::seal() {
  if (sealed_) return;
  // Regular files: fsync reports the deferred write errors (ENOSPC, EIO) of a network or
  // delayed-allocation file system. Devices: only block devices have something to flush.
  if (!special_ && ::fsync(fd_) != 0) throw Error(path_, "", "write failed (fsync): " + errno_text(errno));
  const int fd = fd_;
  fd_ = -1;
  if (::close(fd) != 0 && errno != EINTR) throw Error(path_, "", "write failed (close): " + errno_text(errno));
  sealed_ = true;
}

void AtomicFile::rename_into_place() {
  if (::rename(tmp_.c_str(), target_.c_str()) != 0)
    throw Error(path_, "", "cannot put the output in place (rename): " + errno_text(errno));
  committed_ = true;
  unregister_temporary(tmp_);
}

void AtomicFile::commit() {
  seal();
  if (special_) {
    committed_ = true;
    return;
  }
  rename_into_place();
  int dfd = ::open(dir_of(target_).c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);  // best effort: makes the rename durable
    ::close(dfd);
  }
}

void write_file_atomic(const std::string& path, std::string_view content) {
  AtomicFile f(path);
  f.write(content);
  f.commit();
}

std::string read_file(const std::string& path) {
  // O_NONBLOCK: opening a FIFO must not block; its data is then awaited with poll(), for a
  // bounded time (a FIFO nobody writes to is an error, not a hang).
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) throw Error(path, "", "cannot open: " + errno_text(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    throw Error(path, "", "cannot stat: " + errno_text(err));
  }
  if (S_ISDIR(st.st_mode)) {
    ::close(fd);
    throw Error(path, "", "is a directory, expected a file");
  }
  std::string out;
  const bool fifo = S_ISFIFO(st.st_mode);
  if (!fifo) {
    const int fl = ::fcntl(fd, F_GETFL);
    if (fl >= 0) ::fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
    if (S_ISREG(st.st_mode)) out.reserve(static_cast<std::size_t>(st.st_size));
  }
  const auto deadline = ::time(nullptr) + kFifoWaitSeconds;
  char buf[1 << 16];
  while (true) {
    if (fifo) {
      // Linux reports no POLLHUP on a FIFO that never had a writer: this waits for the first
      // writer's data, or for the last writer to close (POLLHUP, then read() returns 0).
      struct pollfd pfd {fd, POLLIN, 0};
      const int remaining = static_cast<int>(deadline - ::time(nullptr));
      const int r = ::poll(&pfd, 1, out.empty() ? std::max(remaining, 0) * 1000 : -1);
      if (r == 0) {
        ::close(fd);
        throw Error(path, "", "FIFO has no writer (waited " + std::to_string(kFifoWaitSeconds) + " s)");
      }
      if (r < 0 && errno == EINTR) continue;
    }
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR || errno == EAGAIN) continue;
      const int err = errno;
      ::close(fd);
      throw Error(path, "", "cannot read: " + errno_text(err));
    }
    if (n == 0) break;
    out.append(buf, static_cast<std::size_t>(n));
    if (!S_ISREG(st.st_mode) && out.size() > kMaxStreamBytes) {  // /dev/zero, an endless FIFO
      ::close(fd);
      throw Error(path, "", "more than " + std::to_string(kMaxStreamBytes >> 20) + " MiB from a device or FIFO");
    }
  }
  ::close(fd);
  return out;
}

}  // namespace mtt
