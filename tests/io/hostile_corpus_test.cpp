// The hostile checkpoint corpus in tests/fixtures/hostile/: malformed or malicious files and
// folders, each of which must give a clear one-line mtt::Error (exit status 2) and never a
// crash. This file is the corpus' source of truth (hostile_entries() below); the files are
// committed so that the fuzzer (scripts/fuzz.sh seeds from them) and other tools can use them.
// After a change, regenerate with
//   MTT_REGENERATE_HOSTILE=1 <build>/tests/test_io --gtest_filter='HostileCorpus.*'
// The expected error of every entry is the table in tests/fixtures/hostile/README.md.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include "core/atomic_file.h"
#include "core/error.h"
#include "io/checkpoint.h"
#include "io/safetensors.h"
#include "st_helpers.h"

namespace mtt::io {
namespace {

namespace fs = std::filesystem;
using namespace std::string_literals;
using test::st_bytes;

std::string le64(uint64_t n) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[i] = static_cast<char>((n >> (8 * i)) & 0xFF);
  return s;
}

std::string pad8(std::string h) {
  h.append((8 - h.size() % 8) % 8, ' ');
  return h;
}

// A valid two-tensor file: the starting point of most mutations.
const std::string kA = R"("a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]})";
const std::string kB = R"("b":{"dtype":"I64","shape":[1],"data_offsets":[8,16]})";
std::string valid_file() { return st_bytes(pad8("{" + kA + "," + kB + "}"), std::string(16, '\x11')); }

// A file with one tensor "w" whose entry is `body`, followed by `data`.
std::string one(const std::string& body, const std::string& data = std::string(8, '\x22')) {
  return st_bytes(pad8("{\"w\":" + body + "}"), data);
}

// relative path -> bytes. Folders exist through their files' paths.
std::map<std::string, std::string> hostile_entries() {
  std::map<std::string, std::string> e;
  const std::string v = valid_file();
  const std::size_t header_end = v.size() - 16;

  // Framing: the 8-byte length word and the header's extent.
  e["empty.safetensors"] = "";
  e["seven_bytes.safetensors"] = "\x08\0\0\0\0\0\0"s;
  e["huge_header_length.safetensors"] = le64(1ull << 63) + "{}";
  e["header_length_over_limit.safetensors"] = le64(100'000'001) + "{}      ";
  e["header_length_past_eof.safetensors"] = le64(4096) + "{\"__metadata__\":{}}";
  e["truncated_header.safetensors"] = v.substr(0, 40);
  e["zero_header_length.safetensors"] = le64(0) + std::string(16, '\0');
  e["text_file.safetensors"] = "This is not a checkpoint, just some text.\n";

  // The header's bytes and JSON.
  e["invalid_utf8.safetensors"] = st_bytes(pad8("{\"w\xFF\xFE\":{}}"));
  e["overlong_utf8.safetensors"] = st_bytes(pad8("{\"\xC0\xAF\":{}}"));
  e["not_object_root.safetensors"] = st_bytes(pad8("[{\"dtype\":\"F32\"}]"));
  e["leading_space.safetensors"] = st_bytes(pad8(" {}"));
  e["bad_json.safetensors"] = st_bytes(pad8("{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]"));
  e["trailing_json.safetensors"] = st_bytes(pad8("{} {}"));
  e["nul_padded_header.safetensors"] = st_bytes("{}" + std::string(6, '\0'));
  e["deep_nesting.safetensors"] = st_bytes(pad8("{\"w\":" + std::string(5000, '[') + std::string(5000, ']') + "}"));
  e["duplicate_names.safetensors"] =
      st_bytes(pad8("{" + kA + "," + R"("a":{"dtype":"F32","shape":[2],"data_offsets":[8,16]})" + "}"),
               std::string(16, '\x33'));
  e["duplicate_field.safetensors"] = one(R"({"dtype":"F32","dtype":"I32","shape":[2],"data_offsets":[0,8]})");

  // Tensor entries.
  e["entry_not_object.safetensors"] = one(R"(["F32",[2],[0,8]])");
  e["missing_dtype.safetensors"] = one(R"({"shape":[2],"data_offsets":[0,8]})");
  e["dtype_not_string.safetensors"] = one(R"({"dtype":32,"shape":[2],"data_offsets":[0,8]})");
  e["unknown_dtype.safetensors"] = one(R"({"dtype":"F128","shape":[2],"data_offsets":[0,8]})");
  e["negative_dim.safetensors"] = one(R"({"dtype":"F32","shape":[-4,-1],"data_offsets":[0,8]})");
  e["float_dim.safetensors"] = one(R"({"dtype":"F32","shape":[2.5],"data_offsets":[0,8]})");
  e["shape_overflow.safetensors"] = one(R"({"dtype":"U8","shape":[4294967296,4294967296,16],"data_offsets":[0,8]})");
  e["byte_size_overflow.safetensors"] = one(R"({"dtype":"F64","shape":[4611686018427387904],"data_offsets":[0,8]})");
  e["offsets_wrong_arity.safetensors"] = one(R"({"dtype":"F32","shape":[2],"data_offsets":[0,8,16]})");
  e["negative_offset.safetensors"] = one(R"({"dtype":"F32","shape":[2],"data_offsets":[-8,0]})");
  e["begin_after_end.safetensors"] = one(R"({"dtype":"F32","shape":[2],"data_offsets":[8,0]})");
  e["wrong_byte_size.safetensors"] = one(R"({"dtype":"F32","shape":[3],"data_offsets":[0,8]})");

  // Offsets against each other and the data area.
  e["truncated_data.safetensors"] = v.substr(0, header_end + 10);
  e["offsets_past_end.safetensors"] = one(R"({"dtype":"F32","shape":[2],"data_offsets":[4096,4104]})");
  e["offsets_u64_max.safetensors"] =
      one(R"({"dtype":"U8","shape":[1],"data_offsets":[18446744073709551614,18446744073709551615]})");
  e["overlapping_offsets.safetensors"] =
      st_bytes(pad8("{" + kA + "," + R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]})" + "}"),
               std::string(12, '\x44'));
  e["gap_between_tensors.safetensors"] =
      st_bytes(pad8("{" + kA + "," + R"("b":{"dtype":"I64","shape":[1],"data_offsets":[12,20]})" + "}"),
               std::string(20, '\x55'));
  e["data_not_from_zero.safetensors"] = one(R"({"dtype":"F32","shape":[1],"data_offsets":[4,8]})");
  e["trailing_garbage.safetensors"] = v + "GARBAGE!";

  // __metadata__.
  e["metadata_not_string.safetensors"] = st_bytes(pad8(R"({"__metadata__":{"step":100}})"));
  e["metadata_not_object.safetensors"] = st_bytes(pad8(R"({"__metadata__":["a","b"]})"));

  // Sharded sets and folders.
  e["missing_shard.safetensors.index.json"] =
      R"({"metadata":{"total_size":16},"weight_map":{"a":"missing_shard-00001-of-00002.safetensors",)"
      R"("b":"missing_shard-00002-of-00002.safetensors"}})";
  e["dup_across_shards/model.safetensors.index.json"] =
      R"({"weight_map":{"a":"model-00001-of-00002.safetensors","b":"model-00002-of-00002.safetensors"}})";
  e["dup_across_shards/model-00001-of-00002.safetensors"] = v;
  e["dup_across_shards/model-00002-of-00002.safetensors"] = valid_file();
  e["index_bad_json.safetensors.index.json"] = R"({"weight_map": {"a": "x.safetensors",})";
  e["no_checkpoints_dir/notes.txt"] = "A folder with no checkpoint in it.\n";
  e["empty_run/checkpoints/.gitkeep"] = "";
  e["incomplete_run/checkpoints/checkpoint_000010/consolidated/config.json"] = "{\"dim\": 16}\n";
  e["bad_config_run/checkpoints/checkpoint_000020/consolidated/lora.safetensors"] = v;
  e["bad_config_run/checkpoints/checkpoint_000020/consolidated/config.json"] = "{\"dim\": 16,\n";
  e["corrupt_shard_run/checkpoints/checkpoint_000030/consolidated/consolidated.safetensors"] = v.substr(0, 30);
  return e;
}

fs::path hostile_dir() { return test::fixtures_dir() / "hostile"; }

struct Expectation {
  std::string entry;     // a top-level name in hostile/
  std::string fragment;  // must appear in the error message
};

// Rows "| `entry` | `fragment` | ... |" of the README table.
std::vector<Expectation> readme_table() {
  std::ifstream in(hostile_dir() / "README.md");
  std::vector<Expectation> rows;
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("| `", 0) != 0) continue;
    auto cell = [&](std::size_t from, std::size_t* next) {
      auto a = line.find('`', from);
      auto b = line.find('`', a + 1);
      *next = b + 1;
      return line.substr(a + 1, b - a - 1);
    };
    std::size_t pos = 0;
    Expectation x;
    x.entry = cell(0, &pos);
    x.fragment = cell(line.find('|', pos), &pos);
    rows.push_back(x);
  }
  return rows;
}

TEST(HostileCorpus, CommittedFilesMatchTheGenerator) {
  auto entries = hostile_entries();
  bool regenerate = std::getenv("MTT_REGENERATE_HOSTILE") != nullptr;
  for (const auto& [rel, bytes] : entries) {
    fs::path p = hostile_dir() / rel;
    if (regenerate) {
      fs::create_directories(p.parent_path());
      write_file_atomic(p.string(), bytes);
    }
    ASSERT_TRUE(fs::exists(p)) << p << " missing: regenerate (see the comment at the top of this file)";
    EXPECT_EQ(read_file(p.string()), bytes) << p << " differs from the generator";
  }
  EXPECT_GE(entries.size(), 20u);
}

TEST(HostileCorpus, ReadmeTableCoversEveryEntry) {
  auto rows = readme_table();
  std::set<std::string> listed;
  for (const auto& r : rows) {
    EXPECT_TRUE(listed.insert(r.entry).second) << "listed twice: " << r.entry;
    EXPECT_FALSE(r.fragment.empty()) << r.entry;
  }
  std::set<std::string> on_disk;
  for (const auto& d : fs::directory_iterator(hostile_dir()))
    if (d.path().filename() != "README.md") on_disk.insert(d.path().filename().string());
  EXPECT_EQ(listed, on_disk);
  EXPECT_GE(rows.size(), 20u);
}

// Opens `path` in a child process, as an app would (Checkpoint::open understands files, index
// files and folders); the child exits with the error's status and sends the message back.
// A crash shows as a signal, a hang as the test timeout.
struct ChildResult {
  bool exited = false;
  int status = -1;
  int signal = 0;
  std::string message;
};

ChildResult open_in_child(const std::string& path) {
  int fds[2];
  if (::pipe(fds) != 0) return {};
  pid_t pid = ::fork();
  if (pid == 0) {
    ::close(fds[0]);
    int status = kExitOk;
    std::string msg;
    try {
      auto c = Checkpoint::open(path);
      for (const auto& k : c.keys()) {
        auto v = c.get(k);  // touch every tensor's bytes: a bad mapping would fault here
        uint8_t acc = 0;
        for (uint64_t i = 0; i < v.nbytes(); ++i) acc = static_cast<uint8_t>(acc ^ v.data[i]);
        volatile uint8_t sink = acc;
        (void)sink;
      }
    } catch (const Error& e) {
      msg = e.what();
      status = e.exit_status();
    } catch (const std::exception& e) {
      msg = std::string("non-mtt exception: ") + e.what();
      status = kExitInternal;
    }
    (void)!::write(fds[1], msg.data(), msg.size());
    ::close(fds[1]);
    ::_exit(status);
  }
  ::close(fds[1]);
  ChildResult r;
  char buf[4096];
  ssize_t n;
  while ((n = ::read(fds[0], buf, sizeof buf)) > 0) r.message.append(buf, static_cast<std::size_t>(n));
  ::close(fds[0]);
  int st = 0;
  ::waitpid(pid, &st, 0);
  r.exited = WIFEXITED(st);
  r.status = r.exited ? WEXITSTATUS(st) : -1;
  r.signal = WIFSIGNALED(st) ? WTERMSIG(st) : 0;
  return r;
}

TEST(HostileCorpus, EveryEntryGivesItsOneLineErrorAndExitStatus2) {
  auto rows = readme_table();
  ASSERT_GE(rows.size(), 20u) << "README table not found or too short";
  for (const auto& r : rows) {
    SCOPED_TRACE(r.entry);
    std::string path = (hostile_dir() / r.entry).string();
    ChildResult c = open_in_child(path);
    ASSERT_TRUE(c.exited) << "crashed with signal " << c.signal;
    EXPECT_EQ(c.status, kExitInput) << c.message;
    EXPECT_EQ(c.message.find('\n'), std::string::npos) << c.message;
    EXPECT_NE(c.message.find(r.entry), std::string::npos) << "message does not name the entry: " << c.message;
    EXPECT_NE(c.message.find(r.fragment), std::string::npos) << "expected '" << r.fragment << "' in: " << c.message;
  }
}

TEST(HostileCorpus, HeaderParserAgreesWithFileOpenOnBuffers) {
  // parse_header (the fuzz entry point) on the in-memory bytes fails exactly when the file does.
  for (const auto& [rel, bytes] : hostile_entries()) {
    if (rel.find('/') != std::string::npos || rel.size() < 12 || rel.substr(rel.size() - 12) != ".safetensors") continue;
    SCOPED_TRACE(rel);
    std::vector<uint8_t> buf(bytes.begin(), bytes.end());
    EXPECT_THROW(parse_header(buf.data(), buf.size(), buf.size(), rel), Error);
  }
}

}  // namespace
}  // namespace mtt::io
