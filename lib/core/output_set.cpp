#include "core/output_set.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <set>

#include "core/error.h"

namespace mtt {

namespace fs = std::filesystem;

namespace {

std::string normal_abs(const std::string& p) {
  std::error_code ec;
  fs::path a = fs::absolute(p, ec);
  return (ec ? fs::path(p) : a).lexically_normal().string();
}

bool same_file(const std::string& a, const std::string& b) {
  if (normal_abs(a) == normal_abs(b)) return true;
  struct stat sa {}, sb {};
  return ::stat(a.c_str(), &sa) == 0 && ::stat(b.c_str(), &sb) == 0 && sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

}  // namespace

OutputSet::~OutputSet() = default;  // each AtomicFile unlinks its temporary unless committed

AtomicFile& OutputSet::add(const std::string& path, const std::string& what) {
  if (committed_) throw Error(path, what, "output added after commit", ErrorKind::Internal);
  auto f = std::make_unique<AtomicFile>(path);
  if (!f->special()) {
    for (std::size_t i = 0; i < files_.size(); ++i)
      if (!files_[i]->special() && same_file(files_[i]->target_, f->target_)) {
        const std::string a = whats_[i].empty() ? files_[i]->path() : whats_[i];
        const std::string b = what.empty() ? path : what;
        throw Error(path, what, "the same file as " + a + " (" + files_[i]->path() + "): give " + b +
                                    " another path", ErrorKind::Usage);
      }
  }
  files_.push_back(std::move(f));
  whats_.push_back(what);
  return *files_.back();
}

void OutputSet::commit() {
  // 1. Every output complete and on disk (deferred write errors surface here), none in place yet.
  for (auto& f : files_) f->seal();
  // 2. Renames. An existing file is kept as a hard link until all renames succeeded, so a
  //    failure can put it back.
  struct Done {
    AtomicFile* f;
    std::string backup;  // "" when there was nothing to keep (or no hard links there)
  };
  std::vector<Done> done;
  auto roll_back = [&] {
    for (auto it = done.rbegin(); it != done.rend(); ++it) {
      if (!it->backup.empty()) ::rename(it->backup.c_str(), it->f->target_.c_str());
      else ::unlink(it->f->target_.c_str());
    }
  };
  for (auto& f : files_) {
    if (f->special()) {
      f->committed_ = true;
      continue;
    }
    Done d{f.get(), ""};
    struct stat st {};
    if (::lstat(f->target_.c_str(), &st) == 0) {
      const std::string b = f->tmp_ + ".old";
      if (::link(f->target_.c_str(), b.c_str()) == 0) d.backup = b;
    }
    try {
      f->rename_into_place();
    } catch (...) {
      if (!d.backup.empty()) ::unlink(d.backup.c_str());
      roll_back();
      throw;
    }
    done.push_back(d);
  }
  for (const auto& d : done)
    if (!d.backup.empty()) ::unlink(d.backup.c_str());
  std::set<std::string> dirs;
  for (auto& f : files_)
    if (!f->special()) dirs.insert(fs::path(normal_abs(f->target_)).parent_path().string());
  for (const auto& d : dirs) {
    int dfd = ::open(d.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
      ::fsync(dfd);  // best effort: makes the renames durable
      ::close(dfd);
    }
  }
  committed_ = true;
}

bool make_output_dir(const std::string& dir, const std::string& what) {
  if (dir.empty()) throw Error("", what, "an output directory is required", ErrorKind::Usage);
  std::error_code ec;
  const auto st = fs::status(dir, ec);
  if (fs::is_directory(st)) return false;
  if (fs::exists(st)) throw Error(dir, what, "exists and is not a directory");
  // The first component that exists must be a directory: name it when it is a file.
  fs::path p = fs::path(dir).lexically_normal();
  for (fs::path cur = p.parent_path(); !cur.empty(); cur = cur.parent_path()) {
    const auto cs = fs::status(cur, ec);
    if (fs::exists(cs)) {
      if (!fs::is_directory(cs)) throw Error(dir, what, cur.string() + " is not a directory");
      break;
    }
    if (cur == cur.parent_path()) break;
  }
  fs::create_directories(dir, ec);
  if (ec) throw Error(dir, what, "cannot create the directory: " + ec.message());
  return true;
}

}  // namespace mtt
