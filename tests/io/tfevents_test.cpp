// TensorBoard event files: CRC32C framing, the Event encoding read back, torn tails of killed
// writers. (The PyPI tensorboard package reads a real run's files in tests/experiments.)
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "core/atomic_file.h"
#include "core/error.h"
#include "io/tfevents.h"
#include "test_util.h"

namespace mtt::io {
namespace {

namespace fs = std::filesystem;

TEST(TfEvents, Crc32cCheckValue) {
  // The CRC-32C check value of "123456789" (RFC 3720 B.4 / the iSCSI polynomial's catalogue entry).
  EXPECT_EQ(crc32c("123456789", 9), 0xE3069283u);
  EXPECT_EQ(crc32c("", 0), 0u);
  // Incremental = one shot.
  EXPECT_EQ(crc32c("6789", 4, crc32c("12345", 5)), 0xE3069283u);
}

TEST(TfEvents, WriterFileReadsBack) {
  test::TempDir d;
  std::string path;
  {
    TfEventWriter w((d / "tb").string(), ".train");
    path = w.path();
    w.add_scalar("train.loss", 2.5, 1, 1700000000.25);
    w.add_scalar("train.lr", 1e-4, 1, 1700000000.25);
    w.add_scalar("train.loss", 2.25, 2, 1700000001.5);
  }
  const std::string name = fs::path(path).filename().string();
  EXPECT_EQ(name.rfind("events.out.tfevents.", 0), 0u) << name;
  EXPECT_EQ(name.substr(name.size() - 6), ".train");
  const TfEventFile f = read_tf_events(path);
  EXPECT_FALSE(f.torn);
  ASSERT_EQ(f.events.size(), 4u);
  EXPECT_EQ(f.events[0].file_version.value_or(""), "brain.Event:2");
  EXPECT_GT(f.events[0].wall_time, 1.6e9);
  EXPECT_EQ(f.events[1].step, 1);
  EXPECT_EQ(f.events[1].wall_time, 1700000000.25);
  ASSERT_EQ(f.events[1].scalars.size(), 1u);
  EXPECT_EQ(f.events[1].scalars[0].first, "train.loss");
  EXPECT_EQ(f.events[1].scalars[0].second, 2.5f);
  EXPECT_EQ(f.events[2].scalars[0].second, 1e-4f);
  EXPECT_EQ(f.events[3].step, 2);
  // Records are the framed bytes: re-encoding an event gives the same record.
  EXPECT_EQ(tf_record(encode_event(f.events[3])), f.records[3]);
}

TEST(TfEvents, TornTailIsReportedAndCorruptionIsAnError) {
  test::TempDir d;
  std::string path;
  {
    TfEventWriter w(d.path().string(), ".eval");
    path = w.path();
    w.add_scalar("eval.eval_loss", 3.0, 10, 1.0);
  }
  std::string bytes = read_file(path);
  write_file_atomic(path, bytes.substr(0, bytes.size() - 3));  // a write cut short by a kill
  TfEventFile f = read_tf_events(path);
  EXPECT_TRUE(f.torn);
  EXPECT_EQ(f.events.size(), 1u);
  bytes[bytes.size() - 10] ^= 0x20;  // a flipped bit inside the last record's data
  write_file_atomic(path, bytes);
  try {
    read_tf_events(path);
    FAIL() << "corrupt record accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("CRC32C"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace mtt::io
