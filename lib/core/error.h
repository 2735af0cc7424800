#pragma once
// One exception type for the whole library (docs/architecture.md "Errors carry context"):
// the file, the key or line inside it, and the reason. Apps catch it at the top, print
// what() as one line and exit with the status of its kind.
#include <stdexcept>
#include <string>

namespace mtt {

enum class ErrorKind {
  Input,     // unreadable or malformed input (checkpoint, WAV, YAML, JSON): exit 2
  Usage,     // bad flags or arguments: exit 64
  Internal,  // a broken invariant inside the library: exit 70
};

// Exit statuses shared by every app (README "Exit status").
inline constexpr int kExitOk = 0;
inline constexpr int kExitFindings = 1;  // ran, found problems (audit)
inline constexpr int kExitInput = 2;
inline constexpr int kExitUsage = 64;
inline constexpr int kExitInternal = 70;

class Error : public std::runtime_error {
 public:
  Error(std::string file, std::string key, std::string reason, ErrorKind kind = ErrorKind::Input);

  const std::string& file() const { return file_; }
  const std::string& key() const { return key_; }
  const std::string& reason() const { return reason_; }
  ErrorKind kind() const { return kind_; }
  int exit_status() const;

 private:
  std::string file_, key_, reason_;
  ErrorKind kind_;
};

// Formats "file: key: reason" with empty parts left out and newlines folded, so the message
// is always a single line.
std::string format_error_line(const std::string& file, const std::string& key, const std::string& reason);

// Throws Error(kind Internal) when cond is false; for invariants, not for input checks.
void check_internal(bool cond, const std::string& what);

}  // namespace mtt
