// ttt-golden end to end: folders and files, --json (one object per case), exit statuses
// 0 (all pass) / 1 (a case fails) / 2 (a file cannot be run) / 64 (usage).
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "golden/golden_runner.h"
#include "nn/tensor_io.h"
#include "test_util.h"

namespace fs = std::filesystem;
using mtt::test::run_command;

namespace {

std::string app() { return mtt::test::app_path("ttt-golden").string(); }

#define REQUIRE_APP_AND(p)                                                              \
  if (!fs::exists(app())) GTEST_SKIP() << "ttt-golden not built: " << app();             \
  if (!fs::exists(p)) GTEST_SKIP() << "golden data missing: " << (p)

TEST(GoldenCli, SharedTTTFolderPassesAsJson) {
  const fs::path dir = mtt::test::golden_dir() / "ttt";
  REQUIRE_APP_AND(dir);
  auto r = run_command(app() + " " + dir.string() + " --json");
  ASSERT_EQ(r.status, 0) << r.err << r.out.substr(0, 2000);
  auto j = nlohmann::json::parse(r.out);
  ASSERT_TRUE(j.is_array());
  EXPECT_EQ(j.size(), 20u);
  std::set<std::string> families;
  for (const auto& o : j) {
    EXPECT_TRUE(o.at("pass").get<bool>()) << o.at("case");
    for (const char* k : {"case", "family", "fidelity", "dtype", "reference", "tolerance", "tensors"}) EXPECT_TRUE(o.contains(k)) << k;
    for (const auto& t : o.at("tensors"))
      for (const char* k : {"name", "max_abs", "max_rel", "tol", "pass"}) EXPECT_TRUE(t.contains(k)) << k;
    families.insert(o.at("family").get<std::string>());
  }
  EXPECT_EQ(families.size(), 8u);  // every TTT family of the shared set
}

TEST(GoldenCli, OneFileFloat64) {
  const fs::path file = mtt::test::golden_dir() / "ttt" / "vdit_ttt_linear_op.safetensors";
  REQUIRE_APP_AND(file);
  auto r = run_command(app() + " --dtype f64 " + file.string() + " --json");
  ASSERT_EQ(r.status, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  ASSERT_EQ(j.size(), 1u);
  EXPECT_EQ(j[0]["case"], "vdit_ttt_linear_op");
  EXPECT_EQ(j[0]["dtype"], "f64");
  EXPECT_EQ(j[0]["fidelity"], "exact");
  EXPECT_EQ(j[0]["tolerance"]["out"].get<double>(), 1e-9);
  EXPECT_TRUE(j[0]["pass"].get<bool>());
  EXPECT_GT(j[0]["tensors"].size(), 5u);
}

TEST(GoldenCli, BothDtypesBothReferencesAndTheMoshiTriple) {
  const fs::path dir = mtt::test::golden_dir();
  REQUIRE_APP_AND(dir / "moshi" / "test_lm_out.safetensors");
  auto r = run_command(app() + " " + (dir / "moshi").string() + " " + (dir / "ttt" / "ssm_gating.safetensors").string() +
                       " --dtype both --against both --json");
  ASSERT_EQ(r.status, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j.size(), 8u);  // 2 cases x 2 dtypes x 2 references
  // The table form names each case once per run.
  auto t = run_command(app() + " " + (dir / "moshi").string());
  EXPECT_EQ(t.status, 0) << t.err;
  EXPECT_NE(t.out.find("test_lm"), std::string::npos);
  EXPECT_NE(t.out.find("moshi_lm"), std::string::npos);
}

TEST(GoldenCli, FailingCaseExitsOneUnreadableFileExitsTwo) {
  const fs::path src = mtt::test::golden_dir() / "ttt" / "ssm_gating.safetensors";
  REQUIRE_APP_AND(src);
  mtt::test::TempDir dir;
  auto g = mtt::golden::GoldenFile::open(src.string());
  auto t = g.tensors();
  t["out.fork.y"] = t["out.fork.y"] * 1.01;
  mtt::nn::save_tensors((dir / "ssm_gating_off.safetensors").string(), t, g.metadata());
  auto r = run_command(app() + " " + dir.path().string() + " --json");
  EXPECT_EQ(r.status, 1) << r.err;
  auto j = nlohmann::json::parse(r.out);
  ASSERT_EQ(j.size(), 1u);
  EXPECT_FALSE(j[0].at("pass").get<bool>());

  // A file that is not safetensors: exit 2, the error names it, the other case still reported.
  { std::ofstream(dir / "broken.safetensors") << "not a safetensors file"; }
  r = run_command(app() + " " + dir.path().string() + " --json");
  EXPECT_EQ(r.status, 2) << r.err;
  EXPECT_NE(r.err.find("broken.safetensors"), std::string::npos) << r.err;
  j = nlohmann::json::parse(r.out);
  ASSERT_EQ(j.size(), 2u);
  EXPECT_TRUE(j[0].contains("error"));

  EXPECT_EQ(run_command(app() + " " + (dir / "missing.safetensors").string()).status, 2);
  EXPECT_EQ(run_command(app() + " " + src.string() + " --dtype f16").status, 64);
  EXPECT_EQ(run_command(app()).status, 64);
}

}  // namespace
