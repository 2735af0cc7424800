#include "core/atomic_file.h"

#include <gtest/gtest.h>

#include <filesystem>

#include "core/error.h"
#include "test_util.h"

namespace mtt {
namespace {

namespace fs = std::filesystem;

size_t count_entries(const fs::path& dir) {
  size_t n = 0;
  for ([[maybe_unused]] auto& e : fs::directory_iterator(dir)) ++n;
  return n;
}

TEST(AtomicFile, CommitReplacesTarget) {
  test::TempDir dir;
  auto path = (dir / "out.txt").string();
  write_file_atomic(path, "old");
  write_file_atomic(path, "new content");
  EXPECT_EQ(read_file(path), "new content");
  EXPECT_EQ(count_entries(dir.path()), 1u) << "no temporary left behind";
}

TEST(AtomicFile, AbandonedWriteLeavesTargetAndNoTemporary) {
  test::TempDir dir;
  auto path = (dir / "out.bin").string();
  write_file_atomic(path, "keep me");
  {
    AtomicFile f(path);
    f.write("partial");
    EXPECT_TRUE(fs::exists(f.temp_path()));
    // destroyed without commit, as when an exception unwinds the writer
  }
  EXPECT_EQ(read_file(path), "keep me");
  EXPECT_EQ(count_entries(dir.path()), 1u);
}

TEST(AtomicFile, UnwritableDirectoryIsAOneLineErrorNamingTheFile) {
  try {
    write_file_atomic("/nonexistent-dir/x/out.txt", "x");
    FAIL() << "expected an error";
  } catch (const Error& e) {
    std::string msg = e.what();
    EXPECT_NE(msg.find("/nonexistent-dir/x/out.txt"), std::string::npos);
    EXPECT_EQ(msg.find('\n'), std::string::npos);
    EXPECT_EQ(e.exit_status(), kExitInput);
  }
}

TEST(Error, FormatsOneLineWithFileAndKey) {
  Error e("ckpt.safetensors", "transformer.layers.0.W1", "shape [2,\n3] mismatch");
  EXPECT_STREQ(e.what(), "ckpt.safetensors: transformer.layers.0.W1: shape [2, 3] mismatch");
  EXPECT_EQ(Error("", "", "plain").what(), std::string("plain"));
}

}  // namespace
}  // namespace mtt
