#pragma once
// The top level every app shares (README "Exit status"): --help and --version exit 0; any other
// CLI11 parse error is one line "<app>: <flag>: <reason>" and exit 64, like every other error;
// an mtt::Error prints its one line on stderr and exits with its kind's status; a filesystem error
// names its path and is an input fault (exit 2: a file where a folder belongs, no permission);
// anything else is a bug in the library: one line, exit 70. Every app gets --version (the project
// version and the git commit of the build, core/version.h).
#include <CLI/CLI.hpp>

#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <functional>
#include <iostream>
#include <string>

#include "core/error.h"
#include "core/version.h"

namespace mtt::app {

// Standard output that could not be written (`> /dev/full`, a full disk, a closed pipe) is an
// error like any other output's, not a silent success: one line naming it, exit 2.
inline int check_stdout(const char* name, int status) {
  // A write that failed earlier (a full buffer flushed mid-run) left its errno, unless another
  // failure came after it: only a write error is taken from there.
  const int earlier = errno;
  std::cout.flush();
  errno = 0;
  const bool flush_failed = std::fflush(stdout) != 0;
  int err = flush_failed ? errno : 0;
  if (!flush_failed && !std::ferror(stdout) && std::cout) return status;
  if (!err && (earlier == ENOSPC || earlier == EIO || earlier == EFBIG || earlier == EDQUOT || earlier == EPIPE))
    err = earlier;
  std::fprintf(stderr, "%s: %s\n", name,
               format_error_line("<stdout>", "", std::string("write failed: ") +
                                                     (err ? std::strerror(err) : "output lost (device error or disk full)"))
                   .c_str());
  return status == kExitOk || status == kExitFindings ? kExitInput : status;
}

// The first line of an exception's text (LibTorch appends a backtrace on the next lines).
inline std::string first_line(const std::string& s) { return s.substr(0, s.find('\n')); }

// "cannot create directories: Not a directory" out of std::filesystem's
// "filesystem error: cannot create directories: Not a directory [out/runs]".
inline std::string filesystem_reason(const std::filesystem::filesystem_error& e) {
  std::string w = first_line(e.what());
  const std::string prefix = "filesystem error: ";
  if (w.rfind(prefix, 0) == 0) w = w.substr(prefix.size());
  if (const auto b = w.find(" ["); b != std::string::npos) w = w.substr(0, b);
  return w;
}

// --help shows every option's default (issue 14): the value each variable holds before parsing,
// for the app and all its subcommands. An option that states its default itself (default_str:
// "README", "the run's args.yaml") keeps that text.
inline void show_defaults(CLI::App& cli) {
  for (CLI::Option* opt : cli.get_options([](CLI::Option*) { return true; })) {
    if (!opt->nonpositional() || !opt->get_default_str().empty()) continue;
    opt->capture_default_str();
    if (opt->get_default_str() == "[]") opt->default_str("");  // an empty list: nothing to show
  }
  for (CLI::App* sub : cli.get_subcommands([](CLI::App*) { return true; })) show_defaults(*sub);
}

inline int run(CLI::App& cli, int argc, char** argv, const char* name, const std::function<int()>& body,
               const std::function<void(const Error&)>& on_error = {}) {
  // An output over RLIMIT_FSIZE is a write error (EFBIG) to report, not a core dump; SIGPIPE on
  // stdout stays as it is (`| head` ends the app quietly, as for any Unix tool).
  std::signal(SIGXFSZ, SIG_IGN);
  cli.set_version_flag("--version", version_line(name), "print the version and the git commit of this build, then exit");
  show_defaults(cli);
  try {
    cli.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return check_stdout(name, cli.exit(e) == 0 ? kExitOk : kExitUsage);  // --help, --version
    std::string why = first_line(e.what());
    // CLI11's "--threads: At Most 1 required but received 3" for a flag given twice.
    if (const auto at = why.find(": At Most 1 required but received "); at != std::string::npos)
      why = why.substr(0, at) + ": given more than once (it takes one value)";
    std::fprintf(stderr, "%s: %s\n", name, format_error_line("", "", why).c_str());
    return kExitUsage;
  }
  try {
    return check_stdout(name, body());
  } catch (const Error& e) {
    std::fprintf(stderr, "%s: %s\n", name, e.what());
    if (on_error) on_error(e);
    return e.exit_status();
  } catch (const std::filesystem::filesystem_error& e) {
    std::fprintf(stderr, "%s: %s\n", name, format_error_line(e.path1().string(), "", filesystem_reason(e)).c_str());
    return kExitInput;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s: internal error: %s\n", name, format_error_line("", "", first_line(e.what())).c_str());
    return kExitInternal;
  }
}

}  // namespace mtt::app
