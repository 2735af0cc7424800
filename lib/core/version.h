#pragma once
// What build this is: the project version (CMake's project VERSION) and the git commit the build was
// made from (cmake/git_commit.cmake, refreshed at every build; "-dirty" when tracked files differed
// from it, "unknown" outside a git checkout). Every app prints them with --version, and every run
// records them (sweep.json, result.json, a run dir's args.yaml) so a result names the code behind it.
#include <nlohmann/json.hpp>
#include <string>

namespace mtt {

const char* version();
const char* git_commit();
// "ttt-sweep 0.1.0 (moshi-ttt, commit 3beaffb1c2d4)"
std::string version_line(const std::string& app);
// {"version": "0.1.0", "commit": "3beaffb1c2d4"}
nlohmann::json build_info();

}  // namespace mtt
