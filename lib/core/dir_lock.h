#pragma once
// An output directory locked for the lifetime of this object (issue 15: two commands writing one
// folder at once): a sweep or a training run holds it alone; Slurm array tasks (one grid point
// each) share it. flock on the directory itself, so no lock file is left behind, and the lock goes
// with the process however it ends.
#include <string>

namespace mtt {

class DirLock {
 public:
  // `in_use` completes "<dir>: ..." when another process holds the lock (a usage error, exit 64).
  DirLock(const std::string& dir, bool shared, const std::string& in_use);
  ~DirLock();
  DirLock(const DirLock&) = delete;
  DirLock& operator=(const DirLock&) = delete;

 private:
  int fd_ = -1;
};

}  // namespace mtt
