#include "core/error.h"

namespace mtt {

namespace {
std::string one_line(std::string s) {
  for (char& c : s)
    if (c == '\n' || c == '\r') c = ' ';
  return s;
}
}  // namespace

std::string format_error_line(const std::string& file, const std::string& key, const std::string& reason) {
  std::string out;
  if (!file.empty()) out += file + ": ";
  if (!key.empty()) out += key + ": ";
  out += reason;
  return one_line(out);
}

Error::Error(std::string file, std::string key, std::string reason, ErrorKind kind)
    : std::runtime_error(format_error_line(file, key, reason)),
      file_(std::move(file)),
      key_(std::move(key)),
      reason_(std::move(reason)),
      kind_(kind) {}

int Error::exit_status() const {
  switch (kind_) {
    case ErrorKind::Input: return kExitInput;
    case ErrorKind::Usage: return kExitUsage;
    case ErrorKind::Internal: return kExitInternal;
  }
  return kExitInternal;
}

void check_internal(bool cond, const std::string& what) {
  if (!cond) throw Error("", "", "internal error: " + what, ErrorKind::Internal);
}

}  // namespace mtt
