#include "core/version.h"

#ifndef MTT_VERSION
#define MTT_VERSION "0.0.0"
#endif

namespace mtt {

namespace detail {
extern const char* const kGitCommit;  // generated: <build>/generated/git_commit.cpp
}

const char* version() { return MTT_VERSION; }
const char* git_commit() { return detail::kGitCommit; }

std::string version_line(const std::string& app) {
  return app + " " + version() + " (moshi-ttt, commit " + git_commit() + ")";
}

nlohmann::json build_info() { return {{"version", version()}, {"commit", git_commit()}}; }

}  // namespace mtt
