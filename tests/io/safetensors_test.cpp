#include "io/safetensors.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <random>

#include <sys/stat.h>

#include "core/atomic_file.h"
#include "core/error.h"
#include "st_helpers.h"

namespace mtt::io {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using test::st_bytes;

constexpr DType kAll[] = {DType::F64, DType::F32, DType::F16,  DType::BF16,    DType::I64,     DType::I32,
                          DType::I16, DType::I8,  DType::U8,   DType::BOOL,    DType::F8_E4M3, DType::F8_E5M2};

struct Owned {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  std::vector<uint8_t> bytes;
};

std::vector<Owned> random_tensors(uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<Owned> out;
  const std::vector<std::vector<int64_t>> shapes = {{3, 5}, {7}, {}, {2, 0, 4}, {1, 1, 3}};
  int i = 0;
  for (DType t : kAll) {
    Owned o;
    o.name = std::string("t.") + dtype_name(t) + "." + std::to_string(i);
    o.dtype = t;
    o.shape = shapes[i++ % shapes.size()];
    uint64_t n = 1;
    for (auto d : o.shape) n *= d;
    o.bytes.resize(n * dtype_size(t));
    for (auto& b : o.bytes) b = static_cast<uint8_t>(rng());
    if (t == DType::BOOL)
      for (auto& b : o.bytes) b &= 1;
    out.push_back(std::move(o));
  }
  return out;
}

std::vector<TensorToWrite> to_write(const std::vector<Owned>& v) {
  std::vector<TensorToWrite> w;
  for (const auto& o : v) w.push_back({o.name, o.dtype, o.shape, o.bytes.data()});
  return w;
}

void expect_error(const std::string& file_bytes, const std::string& fragment, const std::string& key = "") {
  try {
    parse_header(reinterpret_cast<const uint8_t*>(file_bytes.data()), file_bytes.size(), file_bytes.size(), "x.st");
    ADD_FAILURE() << "no error, expected: " << fragment;
  } catch (const Error& e) {
    std::string msg = e.what();
    EXPECT_NE(msg.find(fragment), std::string::npos) << msg;
    EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
    EXPECT_EQ(msg.rfind("x.st: ", 0), 0u) << msg;
    if (!key.empty()) {
      EXPECT_EQ(e.key(), key) << msg;
    }
  }
}

Header parse_ok(const std::string& file_bytes) {
  return parse_header(reinterpret_cast<const uint8_t*>(file_bytes.data()), file_bytes.size(), file_bytes.size(), "ok.st");
}

TEST(Safetensors, RoundTripEveryDtypeWithMetadata) {
  test::TempDir dir;
  auto path = (dir / "rt.safetensors").string();
  auto tensors = random_tensors(7);
  std::map<std::string, std::string> meta = {{"format", "pt"}, {"note", "caf\xC3\xA9 \"quoted\"\nline"}};
  write_safetensors(path, to_write(tensors), meta);

  auto f = SafetensorsFile::open(path);
  EXPECT_EQ(f->metadata(), meta);
  ASSERT_EQ(f->tensors().size(), tensors.size());
  EXPECT_EQ(f->header().data_start % 8, 0u) << "header padded to 8 bytes";
  // Stored in name order, as the header comment promises.
  for (std::size_t i = 1; i < f->tensors().size(); ++i)
    EXPECT_LT(f->tensors()[i - 1].name, f->tensors()[i].name);
  for (const auto& o : tensors) {
    auto v = f->view(o.name);
    EXPECT_EQ(v.dtype(), o.dtype) << o.name;
    EXPECT_EQ(v.shape(), o.shape) << o.name;
    ASSERT_EQ(v.nbytes(), o.bytes.size()) << o.name;
    if (!o.bytes.empty()) {
      EXPECT_EQ(0, std::memcmp(v.data, o.bytes.data(), o.bytes.size())) << o.name;
    }
  }
  // The file size is exactly 8 + N + sum of tensor bytes (no trailing bytes).
  uint64_t total = 0;
  for (const auto& o : tensors) total += o.bytes.size();
  EXPECT_EQ(f->file_size(), f->header().data_start + total);
}

TEST(Safetensors, ViewsOutliveTheFileHandle) {
  test::TempDir dir;
  auto path = (dir / "a.safetensors").string();
  std::vector<float> x = {1.5f, -2.0f, 3.25f};
  write_safetensors(path, {{"x", DType::F32, {3}, x.data()}});
  TensorView v;
  {
    auto f = SafetensorsFile::open(path);
    TensorInfo copy = *f->find("x");  // a caller's copy resolves to the file's own info
    v = f->view(copy);
    EXPECT_EQ(v.info, f->find("x"));
  }
  ASSERT_TRUE(v.file);
  float back[3];
  std::memcpy(back, v.data, sizeof back);
  EXPECT_EQ(std::vector<float>(back, back + 3), x);
  v.file->release(*v.info);  // advisory: the data must still read back the same afterwards
  std::memcpy(back, v.data, sizeof back);
  EXPECT_EQ(std::vector<float>(back, back + 3), x);
}

TEST(Safetensors, MissingTensorNamesFileAndKey) {
  test::TempDir dir;
  auto path = (dir / "a.safetensors").string();
  write_safetensors(path, {});
  auto f = SafetensorsFile::open(path);
  EXPECT_TRUE(f->tensors().empty());
  EXPECT_EQ(f->find("nope"), nullptr);
  try {
    f->view("nope");
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.file(), path);
    EXPECT_EQ(e.key(), "nope");
  }
}

TEST(Safetensors, NonRegularFilesAreRejectedWithoutBlocking) {
  test::TempDir dir;
  auto fifo = (dir / "pipe.safetensors").string();
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  try {
    SafetensorsFile::open(fifo);  // would block forever in open(2) without O_NONBLOCK
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("not a regular file"), std::string::npos) << e.what();
  }
  EXPECT_THROW(SafetensorsFile::open(dir.path().string()), Error);
}

TEST(Safetensors, FailedWriteLeavesExistingFileUntouched) {
  test::TempDir dir;
  auto path = (dir / "keep.safetensors").string();
  std::vector<int32_t> a = {1, 2};
  write_safetensors(path, {{"a", DType::I32, {2}, a.data()}});
  std::string before = read_file(path);
  EXPECT_THROW(write_safetensors(path, {{"a", DType::I32, {2}, a.data()}, {"a", DType::I32, {2}, a.data()}}), Error);
  EXPECT_THROW(write_safetensors(path, {{"n", DType::I32, {-1}, a.data()}}), Error);
  EXPECT_THROW(write_safetensors(path, {{"bad\xFF", DType::I32, {2}, a.data()}}), Error);
  EXPECT_EQ(read_file(path), before);
  EXPECT_EQ(std::distance(fs::directory_iterator(dir.path()), fs::directory_iterator()), 1);
}

TEST(Safetensors, AcceptsPaddingZeroSizeTensorsNullMetadataAndUnicodeNames) {
  // Trailing-space padding, two zero-size tensors at the same offset, unknown extra fields.
  std::string h =
      R"({"__metadata__":null,"e1":{"dtype":"F32","shape":[0],"data_offsets":[0,0]},)"
      R"("e2":{"dtype":"I64","shape":[3,0],"data_offsets":[0,0]},)"
      R"("\u00e9t\u00e9":{"dtype":"U8","shape":[2],"data_offsets":[0,2],"extra":1}})";
  h.append(13, ' ');
  Header hd = parse_ok(st_bytes(h, "ab"));
  ASSERT_EQ(hd.tensors.size(), 3u);
  EXPECT_TRUE(hd.metadata.empty());
  EXPECT_EQ(hd.tensors.back().name, "\xC3\xA9t\xC3\xA9");
  EXPECT_EQ(hd.tensors.back().nbytes(), 2u);
  EXPECT_EQ(hd.data_start, 8 + h.size());
  // Scalars: shape [] holds one element.
  Header s = parse_ok(st_bytes(R"({"s":{"dtype":"F64","shape":[],"data_offsets":[0,8]}})", "12345678"));
  EXPECT_EQ(s.tensors[0].numel(), 1u);
}

TEST(Safetensors, HeaderValidationErrors) {
  const std::string ok_entry = R"({"dtype":"F32","shape":[2],"data_offsets":[0,8]})";
  expect_error("", "empty file");
  expect_error("1234567", "file too small (7 bytes)");
  std::string huge(8, '\0');
  huge[7] = '\x80';  // 2^63
  expect_error(huge + "{}", "header length 9223372036854775808 exceeds the 100000000-byte limit");
  expect_error(st_bytes("{\"a\":1}").substr(0, 12), "exceeds the file size");
  expect_error(st_bytes(""), "empty header");
  expect_error(st_bytes(" {}"), "does not start with '{'");
  expect_error(st_bytes("[]"), "does not start with '{'");
  expect_error(st_bytes("{\"a\xC0\xAF\":1}"), "not valid UTF-8 (byte 3");  // overlong '/'
  expect_error(st_bytes("{\"\xED\xA0\x80\":1}"), "not valid UTF-8");       // surrogate
  expect_error(st_bytes("{\"a\":"), "not valid JSON");
  expect_error(st_bytes("{} x"), "not valid JSON");
  expect_error(st_bytes(std::string("{\"a\":") + std::string(40, '[') + std::string(40, ']') + "}"),
               "nested deeper");
  expect_error(st_bytes("{\"a\":" + ok_entry + ",\"a\":" + ok_entry + "}", "12345678"), "duplicate key \"a\"", "a");
  expect_error(st_bytes(R"({"a":{"dtype":"F32","dtype":"F32","shape":[2],"data_offsets":[0,8]}})", "12345678"),
               "duplicate key \"dtype\" in the entry", "a");
  expect_error(st_bytes(R"({"a":[1]})"), "tensor entry is not a JSON object", "a");
  expect_error(st_bytes(R"({"a":{"shape":[2],"data_offsets":[0,8]}})"), "missing \"dtype\"", "a");
  expect_error(st_bytes(R"({"a":{"dtype":"C64","shape":[2],"data_offsets":[0,8]}})"), "unknown dtype \"C64\"", "a");
  expect_error(st_bytes(R"({"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})"), "negative dimension -2", "a");
  expect_error(st_bytes(R"({"a":{"dtype":"F32","shape":[2.0],"data_offsets":[0,8]}})"), "not a non-negative integer");
  expect_error(st_bytes(R"({"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,8]}})"),
               "overflows", "a");
  expect_error(st_bytes(R"({"a":{"dtype":"F64","shape":[2305843009213693952],"data_offsets":[0,8]}})"),
               "byte size does not fit");
  expect_error(st_bytes(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}})", "12345678"), "begin > end");
  expect_error(st_bytes(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0]}})", "12345678"), "[begin, end]");
  expect_error(st_bytes(R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", "12345678"),
               "does not match shape [3] x F32 = 12 bytes");
  expect_error(st_bytes(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", "1234"), "past the end");
  expect_error(st_bytes(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                        R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                        std::string(12, 'x')),
               "overlap tensor \"a\"", "b");
  expect_error(st_bytes(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", "12345678"), "leave a gap");
  expect_error(st_bytes(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", "123456789"),
               "1 bytes of trailing data");
  expect_error(st_bytes(R"({"__metadata__":{"k":1}})"), "metadata value is not a string", "__metadata__.k");
  expect_error(st_bytes(R"({"__metadata__":"x"})"), "__metadata__ is not a JSON object");
}

TEST(Safetensors, TruncatedBufferIsAnErrorNotAnOverread) {
  // The fuzzer's contract: `available` may be less than the file size.
  std::string b = st_bytes(R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}})", "z");
  const std::size_t header_end = b.size() - 1;  // 8 + N: everything but the 1 data byte
  for (std::size_t avail = 0; avail < header_end; ++avail) {
    std::vector<uint8_t> copy(b.begin(), b.begin() + static_cast<std::ptrdiff_t>(avail));  // ASan-visible bound
    EXPECT_THROW(parse_header(copy.data(), copy.size(), b.size(), "t.st"), Error) << avail;
  }
  std::vector<uint8_t> whole_header(b.begin(), b.begin() + static_cast<std::ptrdiff_t>(header_end));
  EXPECT_EQ(parse_header(whole_header.data(), whole_header.size(), b.size(), "t.st").tensors.size(), 1u);
}

// --- Against the format's reference implementation (PyPI safetensors) -----------------------

json reference_dump(const std::vector<std::string>& paths) {
  auto r = test::st_reference("dump", paths);
  EXPECT_EQ(r.status, 0) << r.err;
  return r.status == 0 ? json::parse(r.out) : json::object();
}

void expect_matches_reference(const std::string& path, const json& ref) {
  SCOPED_TRACE(path);
  ASSERT_TRUE(ref.is_object()) << "no reference dump";
  auto f = SafetensorsFile::open(path);
  using StrMap = std::map<std::string, std::string>;
  EXPECT_EQ(f->metadata(), ref["metadata"].get<StrMap>());
  ASSERT_EQ(f->tensors().size(), ref["tensors"].size());
  for (const auto& t : f->tensors()) {
    ASSERT_TRUE(ref["tensors"].contains(t.name)) << t.name;
    const json& r = ref["tensors"][t.name];
    EXPECT_EQ(dtype_name(t.dtype), r["dtype"].get<std::string>()) << t.name;
    EXPECT_EQ(t.shape, r["shape"].get<std::vector<int64_t>>()) << t.name;
    auto v = f->view(t);
    EXPECT_EQ(test::crc32(v.data, v.nbytes()), r["crc32"].get<uint32_t>()) << t.name;
  }
}

TEST(SafetensorsReference, GoldenFilesReadIdenticallyToReference) {
  if (!test::have_python()) GTEST_SKIP() << "MTT_PYTHON (torch venv with safetensors) not configured";
  std::vector<std::string> files;
  for (const char* sub : {"ttt", "moshi"}) {
    auto dir = test::golden_dir() / sub;
    if (!fs::exists(dir)) continue;
    for (const auto& e : fs::directory_iterator(dir))
      if (e.path().extension() == ".safetensors") files.push_back(e.path().string());
  }
  if (files.empty()) GTEST_SKIP() << "no golden files under " << test::golden_dir();
  EXPECT_GE(files.size(), 20u);
  json ref = reference_dump(files);
  for (const auto& p : files) expect_matches_reference(p, ref[p]);
}

TEST(SafetensorsReference, GoldenMetadataHasDocumentedKeys) {
  // shared/golden/README.md "File format": every TTT golden holds these metadata keys.
  auto dir = test::golden_dir() / "ttt";
  if (!fs::exists(dir)) GTEST_SKIP() << "no golden dir";
  for (const auto& e : fs::directory_iterator(dir)) {
    if (e.path().extension() != ".safetensors") continue;
    auto f = SafetensorsFile::open(e.path().string());
    for (const char* k : {"case", "shapes", "seed", "fp32_vs_fp64"})
      EXPECT_TRUE(f->metadata().count(k)) << e.path() << " lacks " << k;
    // "reference", or "reference.<variant>" in files with several reference variants.
    auto it = f->metadata().lower_bound("reference");
    EXPECT_TRUE(it != f->metadata().end() && it->first.rfind("reference", 0) == 0) << e.path();
    // Tensors stored in sorted name order (README), i.e. file order == name order.
    for (std::size_t i = 1; i < f->tensors().size(); ++i)
      EXPECT_LT(f->tensors()[i - 1].name, f->tensors()[i].name) << e.path();
  }
}

TEST(SafetensorsReference, ReferenceAcceptsOurWriterOutput) {
  if (!test::have_python()) GTEST_SKIP() << "MTT_PYTHON not configured";
  test::TempDir dir;
  auto path = (dir / "ours.safetensors").string();
  auto tensors = random_tensors(11);
  write_safetensors(path, to_write(tensors), {{"k", "v"}, {"unicode", "\xE2\x9C\x93"}});
  json ref = reference_dump({path})[path];
  EXPECT_EQ(ref["metadata"]["unicode"], "\xE2\x9C\x93");
  ASSERT_EQ(ref["tensors"].size(), tensors.size());
  for (const auto& o : tensors) {
    const json& r = ref["tensors"][o.name];
    EXPECT_EQ(r["dtype"], dtype_name(o.dtype)) << o.name;
    EXPECT_EQ(r["shape"].get<std::vector<int64_t>>(), o.shape) << o.name;
    EXPECT_EQ(r["crc32"].get<uint32_t>(), test::crc32(o.bytes.data(), o.bytes.size())) << o.name;
  }
}

TEST(SafetensorsReference, ReadsReferenceWriterOutput) {
  if (!test::have_python()) GTEST_SKIP() << "MTT_PYTHON not configured";
  test::TempDir dir;
  auto path = (dir / "py.safetensors").string();
  auto w = test::st_reference("write", {path});
  ASSERT_EQ(w.status, 0) << w.err;
  expect_matches_reference(path, reference_dump({path})[path]);
  auto f = SafetensorsFile::open(path);
  EXPECT_EQ(f->metadata().at("note"), "h\xC3\xA9llo");
  // Values, decoded through core's converters: arange(24) - 11.5 as written by the reference.
  for (const char* name : {"f64", "f32", "f16", "bf16"}) {
    auto v = f->view(name);
    ASSERT_EQ(v.numel(), 24u);
    for (std::size_t i = 0; i < 24; ++i) EXPECT_EQ(element_as_double(v.data, v.dtype(), i), i - 11.5) << name;
  }
  auto i64 = f->view("i64");
  for (std::size_t i = 0; i < 24; ++i) EXPECT_EQ(element_as_double(i64.data, DType::I64, i), std::trunc(i - 11.5));
  EXPECT_EQ(f->view("scalar").shape().size(), 0u);
  EXPECT_EQ(element_as_double(f->view("scalar").data, DType::F32, 0), 3.25);
  EXPECT_EQ(f->view("empty").shape(), (std::vector<int64_t>{0, 5}));
}

}  // namespace
}  // namespace mtt::io
