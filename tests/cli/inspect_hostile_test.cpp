// ttt-inspect on every entry of the hostile corpus (tests/fixtures/hostile, made by the io
// tests): exit 2 and exactly one stderr line naming the entry, never a crash or a report.
#include <gtest/gtest.h>

#include <algorithm>

#include "test_util.h"

TEST(InspectCli, HostileCorpusExitsTwoWithOneLineNamingTheEntry) {
  const auto inspect = mtt::test::app_path("ttt-inspect");
  if (!std::filesystem::exists(inspect)) GTEST_SKIP() << "ttt-inspect not built";
  const auto dir = mtt::test::fixtures_dir() / "hostile";
  if (!std::filesystem::exists(dir)) GTEST_SKIP() << "no hostile corpus at " << dir;
  int n = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    const std::string name = e.path().filename().string();
    if (name == "README.md") continue;
    SCOPED_TRACE(name);
    const auto r = mtt::test::run_command(inspect.string() + " '" + e.path().string() + "' --json");
    EXPECT_EQ(r.status, 2) << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
    EXPECT_NE(r.err.find(name), std::string::npos) << r.err;
    ++n;
  }
  EXPECT_GE(n, 20);
}
