// Output discipline (issue 15): devices and FIFOs written in place, write errors as one-line
// mtt::Errors naming the file, several outputs all or none, no temporary left on any path.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <string>
#include <thread>

#include "core/atomic_file.h"
#include "core/error.h"
#include "core/output_set.h"
#include "test_util.h"

namespace mtt {
namespace {

namespace fs = std::filesystem;

std::size_t count_entries(const fs::path& dir) {
  std::size_t n = 0;
  for ([[maybe_unused]] auto& e : fs::directory_iterator(dir)) ++n;
  return n;
}

bool is_char_device(const std::string& p) {
  struct stat st {};
  return ::stat(p.c_str(), &st) == 0 && S_ISCHR(st.st_mode);
}

// Runs f, expecting an mtt::Error whose one-line message holds every fragment.
template <class F>
Error expect_error(F f, std::initializer_list<std::string> fragments) {
  try {
    f();
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
    for (const auto& x : fragments) EXPECT_NE(msg.find(x), std::string::npos) << "'" << x << "' not in: " << msg;
    return e;
  }
  ADD_FAILURE() << "no error";
  return Error("", "", "");
}

TEST(Outputs, DevNullIsWrittenInPlaceAndStaysADevice) {
  ASSERT_TRUE(is_char_device("/dev/null"));
  write_file_atomic("/dev/null", std::string(100000, 'x'));
  EXPECT_TRUE(is_char_device("/dev/null"));
  // A link to a device in an output folder: the device is written, the link stays a link.
  test::TempDir dir;
  const auto link = dir / "out.wav";
  fs::create_symlink("/dev/null", link);
  write_file_atomic(link.string(), "RIFF");
  EXPECT_TRUE(fs::is_symlink(link));
  EXPECT_EQ(count_entries(dir.path()), 1u);
}

TEST(Outputs, DevFullIsAWriteErrorNamingTheFile) {
  if (!is_char_device("/dev/full")) GTEST_SKIP() << "no /dev/full on this system";
  const Error e = expect_error([] { write_file_atomic("/dev/full", "some bytes"); }, {"/dev/full", "No space left"});
  EXPECT_EQ(e.exit_status(), kExitInput);
  EXPECT_TRUE(is_char_device("/dev/full"));
}

TEST(Outputs, SymlinkToARegularFileReplacesTheTargetNotTheLink) {
  test::TempDir dir;
  const auto target = dir / "real.txt", link = dir / "link.txt";
  write_file_atomic(target.string(), "old");
  fs::create_symlink("real.txt", link);
  write_file_atomic(link.string(), "new");
  EXPECT_TRUE(fs::is_symlink(link));
  EXPECT_EQ(read_file(target.string()), "new");
  EXPECT_EQ(count_entries(dir.path()), 2u);
}

TEST(Outputs, FifoIsWrittenInPlaceToItsReader) {
  test::TempDir dir;
  const auto fifo = (dir / "pipe").string();
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  const std::string payload(300000, 'w');  // more than a pipe buffer: the reader sets the pace
  std::string got;
  std::thread reader([&] {
    try {
      got = read_file(fifo);
    } catch (const Error& e) {
      got = e.what();
    }
  });
  try {
    write_file_atomic(fifo, payload);
  } catch (const Error& e) {
    ADD_FAILURE() << e.what();
  }
  reader.join();
  EXPECT_EQ(got, payload);
  struct stat st {};
  ASSERT_EQ(::stat(fifo.c_str(), &st), 0);
  EXPECT_TRUE(S_ISFIFO(st.st_mode));
  EXPECT_EQ(count_entries(dir.path()), 1u);
}

TEST(Outputs, FifoWhoseReaderLeavesIsAnErrorNotASignal) {
  test::TempDir dir;
  const auto fifo = (dir / "pipe").string();
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  std::thread reader([&] {
    const int fd = ::open(fifo.c_str(), O_RDONLY);  // waits for the writer, then goes away
    if (fd >= 0) ::close(fd);
  });
  try {
    expect_error([&] { write_file_atomic(fifo, std::string(1 << 20, 'x')); }, {fifo, "reading end was closed"});
  } catch (...) {
  }
  reader.join();
}

TEST(Outputs, UnwritablePlacesAreOneLineErrors) {
  test::TempDir dir;
  // A directory given as the output, a file used as a directory, procfs (refuses new files even
  // to root, unlike a chmod 555 folder).
  expect_error([&] { write_file_atomic(dir.path().string(), "x"); }, {dir.path().string(), "is a directory"});
  write_file_atomic((dir / "file").string(), "x");
  expect_error([&] { write_file_atomic((dir / "file" / "out.txt").string(), "x"); }, {"file/out.txt", "cannot create"});
  expect_error([] { write_file_atomic("/proc/self/mtt-out.txt", "x"); }, {"/proc/self/mtt-out.txt", "cannot create"});
  if (::geteuid() != 0) {
    const auto ro = dir / "ro";
    fs::create_directory(ro);
    fs::permissions(ro, fs::perms::owner_read | fs::perms::owner_exec);
    expect_error([&] { write_file_atomic((ro / "out.txt").string(), "x"); }, {"ro/out.txt", "Permission denied"});
    fs::permissions(ro, fs::perms::owner_all);
  }
  EXPECT_EQ(count_entries(dir.path()), 1u + (::geteuid() != 0));
}

TEST(Outputs, SetCreatesAllOrNone) {
  test::TempDir dir;
  const auto a = (dir / "a.wav").string(), b = (dir / "b.json").string();
  write_file_atomic(a, "old a");
  // A failure while writing: nothing is put in place, the old file stays, no temporary.
  if (is_char_device("/dev/full")) {
    expect_error(
        [&] {
          OutputSet s;
          s.add(a).write("new a");
          s.add(b).write("new b");
          s.add("/dev/full").write("stats");
          s.commit();
        },
        {"/dev/full"});
    EXPECT_EQ(read_file(a), "old a");
    EXPECT_FALSE(fs::exists(b));
    EXPECT_EQ(count_entries(dir.path()), 1u);
  }
  // A failure at the renames (the second target became a directory after the set opened it):
  // the first rename is taken back, the file it replaced restored.
  {
    OutputSet s;
    s.add(a).write("new a");
    s.add(b).write("new b");
    fs::create_directory(b);
    expect_error([&] { s.commit(); }, {b, "rename"});
  }
  EXPECT_EQ(read_file(a), "old a");
  EXPECT_TRUE(fs::is_directory(b));
  EXPECT_EQ(count_entries(dir.path()), 2u);
  fs::remove(b);
  // Success: both in place.
  {
    OutputSet s;
    s.add(a).write("new a");
    s.add(b).write("new b");
    s.commit();
  }
  EXPECT_EQ(read_file(a), "new a");
  EXPECT_EQ(read_file(b), "new b");
  EXPECT_EQ(count_entries(dir.path()), 2u);
}

TEST(Outputs, SetRefusesTheSameFileTwice) {
  test::TempDir dir;
  OutputSet s;
  s.add((dir / "x.wav").string(), "output");
  const Error e = expect_error([&] { s.add((dir / "." / "x.wav").string(), "--stereo-output"); },
                               {"x.wav", "--stereo-output", "same file as output"});
  EXPECT_EQ(e.exit_status(), kExitUsage);
  s.add("/dev/null");
  s.add("/dev/null");  // a device may take several outputs
}

TEST(Outputs, SealedSetHoldsNoDescriptors) {
  test::TempDir dir;
  OutputSet s;
  for (int i = 0; i < 2000; ++i) {  // more than a default descriptor limit of 1024
    AtomicFile& f = s.add((dir / ("f" + std::to_string(i))).string());
    f.write("x");
    f.seal();
  }
  s.commit();
  EXPECT_EQ(count_entries(dir.path()), 2000u);
}

TEST(Outputs, MakeOutputDirNamesWhatIsInTheWay) {
  test::TempDir dir;
  write_file_atomic((dir / "f").string(), "x");
  expect_error([&] { make_output_dir((dir / "f").string(), "--out"); }, {"/f", "--out", "not a directory"});
  expect_error([&] { make_output_dir((dir / "f" / "sub").string(), "--out"); }, {"f/sub", "is not a directory"});
  EXPECT_TRUE(make_output_dir((dir / "new" / "deeper").string()));
  EXPECT_FALSE(make_output_dir((dir / "new" / "deeper").string()));
}

// A process killed by SIGTERM or SIGINT while an output is open leaves no temporary.
TEST(Outputs, FatalSignalRemovesLiveTemporaries) {
  test::TempDir dir;
  for (int sig : {SIGTERM, SIGINT}) {
    struct sigaction cur {};
    ::sigaction(sig, nullptr, &cur);
    if (cur.sa_handler == SIG_IGN) continue;  // started in the background: SIGINT is ignored, as is right
    const pid_t pid = ::fork();
    if (pid == 0) {
      AtomicFile f((dir / "out.bin").string());
      f.write("partial");
      ::raise(sig);
      ::_exit(0);  // not reached
    }
    int st = 0;
    ::waitpid(pid, &st, 0);
    EXPECT_TRUE(WIFSIGNALED(st) && WTERMSIG(st) == sig) << "status " << st;
    EXPECT_EQ(count_entries(dir.path()), 0u);
  }
}

}  // namespace
}  // namespace mtt
