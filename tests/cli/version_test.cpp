// --version on every app: the project version and the git commit the build was made from.
#include <gtest/gtest.h>

#include <regex>

#include "test_util.h"

namespace mtt {
namespace {

namespace fs = std::filesystem;

TEST(Version, EveryAppPrintsVersionAndCommit) {
  // The commit of the checkout, when git can see it (the build recorded the same one; "unknown"
  // where the build had no git).
  auto git = test::run_command("git -C " + test::source_dir().string() + " rev-parse --short=12 HEAD");
  const std::string head = git.status == 0 && git.out.size() >= 12 ? git.out.substr(0, 12) : "";
  int n = 0;
  for (const char* app : {"ttt-inspect", "ttt-infer", "ttt-sweep", "ttt-plot", "ttt-golden"}) {
    if (!fs::exists(test::app_path(app))) continue;
    ++n;
    // Required positionals and subcommands do not stand in the way of --version.
    auto r = test::run_command(test::app_path(app).string() + " --version");
    EXPECT_EQ(r.status, 0) << app << ": " << r.err;
    std::smatch m;
    ASSERT_TRUE(std::regex_match(r.out, m, std::regex(std::string(app) +
                                                      R"( ([0-9]+\.[0-9]+\.[0-9]+) \(moshi-ttt, commit ([0-9a-f]{12}(-dirty)?|unknown)\)\n)")))
        << app << " printed: " << r.out;
    if (!head.empty() && m[2] != "unknown") EXPECT_EQ(m[2].str().substr(0, 12), head) << app;
  }
  if (n == 0) GTEST_SKIP() << "no app built";
}

}  // namespace
}  // namespace mtt
