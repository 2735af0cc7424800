#pragma once
// The top level every app shares (README "Exit status"): CLI11 parse errors exit 0 for --help and
// 64 otherwise; an mtt::Error prints its one line on stderr and exits with its kind's status;
// anything else is a bug in the library: one line, exit 70. Every app gets --version (the project
// version and the git commit of the build, core/version.h).
#include <CLI/CLI.hpp>

#include <cstdio>
#include <functional>

#include "core/error.h"
#include "core/version.h"

namespace mtt::app {

inline int run(CLI::App& cli, int argc, char** argv, const char* name, const std::function<int()>& body,
               const std::function<void(const Error&)>& on_error = {}) {
  cli.set_version_flag("--version", version_line(name), "print the version and the git commit of this build, then exit");
  try {
    cli.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return cli.exit(e) == 0 ? kExitOk : kExitUsage;
  }
  try {
    return body();
  } catch (const Error& e) {
    std::fprintf(stderr, "%s: %s\n", name, e.what());
    if (on_error) on_error(e);
    return e.exit_status();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s: internal error: %s\n", name, e.what());
    return kExitInternal;
  }
}

}  // namespace mtt::app
