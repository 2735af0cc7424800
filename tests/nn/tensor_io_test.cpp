#include "nn/tensor_io.h"

#include <gtest/gtest.h>

#include <filesystem>

#include "core/error.h"
#include "io/st_helpers.h"

namespace mtt::nn {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// The same values tests/io/st_reference.py writes: arange(24) - 11.5 cast to each dtype.
std::map<std::string, at::Tensor> reference_tensors() {
  at::Tensor base = at::arange(24, at::kDouble).reshape({2, 3, 4}) - 11.5;
  return {
      {"f64", base.clone()},
      {"f32", base.to(at::kFloat)},
      {"f16", base.to(at::kHalf)},
      {"bf16", base.to(at::kBFloat16)},
      {"i64", base.to(at::kLong)},
      {"i32", base.to(at::kInt)},
      {"i16", base.to(at::kShort)},
      {"i8", base.to(at::kChar)},
      {"u8", (base + 11.5).to(at::kByte)},
      {"bool", base > 0},
      {"f8_e4m3", base.to(at::kFloat8_e4m3fn)},
      {"f8_e5m2", base.to(at::kFloat8_e5m2)},
      {"scalar", at::scalar_tensor(3.25, at::kFloat)},
      {"empty", at::zeros({0, 5}, at::kFloat)},
  };
}

// Bitwise equality of dtype, shape and bytes (works for float8, where at::equal does not).
void expect_same(const at::Tensor& a, const at::Tensor& b, const std::string& name) {
  ASSERT_EQ(a.scalar_type(), b.scalar_type()) << name;
  ASSERT_EQ(a.sizes(), b.sizes()) << name;
  if (a.numel() == 0) return;
  auto ab = a.contiguous().reshape({-1}).view(at::kByte);
  auto bb = b.contiguous().reshape({-1}).view(at::kByte);
  EXPECT_TRUE(at::equal(ab, bb)) << name;
}

uint32_t crc_of(const at::Tensor& t) {
  if (t.numel() == 0) return test::crc32(nullptr, 0);
  auto c = t.contiguous();
  return test::crc32(c.data_ptr(), c.numel() * c.element_size());
}

TEST(TensorIo, DtypeMappingIsABijection) {
  for (int i = 0; i <= static_cast<int>(DType::F8_E5M2); ++i) {
    auto d = static_cast<DType>(i);
    auto back = to_dtype(to_scalar_type(d));
    ASSERT_TRUE(back.has_value()) << dtype_name(d);
    EXPECT_EQ(*back, d);
    EXPECT_EQ(at::elementSize(to_scalar_type(d)), dtype_size(d)) << dtype_name(d);
  }
  EXPECT_FALSE(to_dtype(at::kComplexFloat).has_value());
}

TEST(TensorIo, SaveLoadRoundTripEveryDtype) {
  test::TempDir dir;
  auto path = (dir / "rt.safetensors").string();
  auto tensors = reference_tensors();
  // A non-contiguous input is stored by value, in row-major order.
  tensors["transposed"] = at::arange(6, at::kFloat).reshape({2, 3}).t();
  save_tensors(path, tensors, {{"step", "12"}});
  auto back = load_tensors(path);
  ASSERT_EQ(back.size(), tensors.size());
  for (const auto& [name, t] : tensors) {
    ASSERT_TRUE(back.count(name)) << name;
    expect_same(back[name], t, name);
    EXPECT_TRUE(back[name].is_contiguous());
  }
  EXPECT_EQ(io::SafetensorsFile::open(path)->metadata().at("step"), "12");
}

TEST(TensorIo, ToTensorIsZeroCopyAndKeepsTheFileAlive) {
  test::TempDir dir;
  auto path = (dir / "z.safetensors").string();
  at::Tensor w = at::randn({4, 8}, at::kFloat);
  save_tensors(path, {{"w", w}, {"b", at::randn({8}, at::kDouble)}});
  at::Tensor t;
  const void* mapped = nullptr;
  {
    auto f = io::SafetensorsFile::open(path);
    auto v = f->view("w");
    mapped = v.data;
    t = to_tensor(v);
    EXPECT_EQ(t.data_ptr(), mapped) << "zero-copy view";
    EXPECT_GT(f.use_count(), 2) << "the tensor's deleter holds the file";
  }
  // Only the tensor holds the mapping now.
  EXPECT_EQ(t.data_ptr(), mapped);
  EXPECT_TRUE(at::equal(t, w));
  // The mapping is private copy-on-write: an in-place update works and leaves the file as it was.
  t.add_(1.0);
  EXPECT_TRUE(at::allclose(t, w + 1.0));
  EXPECT_TRUE(at::equal(load_tensors(path)["w"], w));
}

TEST(TensorIo, MisalignedDataIsCopied) {
  // U8[3] at [0,3) then F32[2] at [3,11): the float starts 3 bytes past an 8-aligned data area.
  float vals[2] = {1.5f, -7.25f};
  std::string data = "abc" + std::string(reinterpret_cast<const char*>(vals), 8);
  std::string header =
      R"({"a":{"dtype":"U8","shape":[3],"data_offsets":[0,3]},"f":{"dtype":"F32","shape":[2],"data_offsets":[3,11]}})";
  header.append((8 - header.size() % 8) % 8, ' ');
  test::TempDir dir;
  auto path = (dir / "mis.safetensors").string();
  test::write_bytes(path, test::st_bytes(header, data));
  auto f = io::SafetensorsFile::open(path);
  auto v = f->view("f");
  ASSERT_NE(reinterpret_cast<std::uintptr_t>(v.data) % 4, 0u);
  at::Tensor t = to_tensor(v);
  EXPECT_NE(t.data_ptr(), static_cast<const void*>(v.data)) << "copied";
  EXPECT_TRUE(at::equal(t, at::tensor({1.5f, -7.25f})));
  at::Tensor a = to_tensor(f->view("a"));  // 1-byte elements are always aligned: a view
  EXPECT_EQ(a.data_ptr(), static_cast<const void*>(f->view("a").data));
  EXPECT_EQ(a[2].item<uint8_t>(), 'c');
}

TEST(TensorIo, UnsupportedDtypeNamesTheKey) {
  test::TempDir dir;
  auto path = (dir / "c.safetensors").string();
  try {
    save_tensors(path, {{"ok", at::ones({2})}, {"cplx", at::ones({2}, at::kComplexFloat)}});
    FAIL() << "complex accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.key(), "cplx");
    EXPECT_EQ(e.file(), path);
  }
  EXPECT_FALSE(fs::exists(path));
}

TEST(TensorIoReference, ReadsWhatTorchSafetensorsWrites) {
  if (!test::have_python()) GTEST_SKIP() << "MTT_PYTHON not configured";
  test::TempDir dir;
  auto path = (dir / "py.safetensors").string();
  auto r = test::st_reference("write", {path});
  ASSERT_EQ(r.status, 0) << r.err;
  auto loaded = load_tensors(path);
  auto want = reference_tensors();
  ASSERT_EQ(loaded.size(), want.size());
  for (const auto& [name, t] : want) expect_same(loaded.at(name), t, name);
  // And through zero-copy views.
  auto f = io::SafetensorsFile::open(path);
  for (const auto& [name, t] : want) expect_same(to_tensor(f->view(name)), t, name + " (view)");
}

TEST(TensorIoReference, TorchSafetensorsReadsWhatWeWrite) {
  if (!test::have_python()) GTEST_SKIP() << "MTT_PYTHON not configured";
  test::TempDir dir;
  auto path = (dir / "ours.safetensors").string();
  auto tensors = reference_tensors();
  tensors["randn_bf16"] = at::randn({5, 7}).to(at::kBFloat16);
  save_tensors(path, tensors, {{"who", "c++"}});
  auto r = test::st_reference("dump", {path});
  ASSERT_EQ(r.status, 0) << r.err;
  json ref = json::parse(r.out)[path];
  EXPECT_EQ(ref["metadata"]["who"], "c++");
  for (const auto& [name, t] : tensors) {
    const json& e = ref["tensors"][name];
    EXPECT_EQ(e["dtype"], dtype_name(*to_dtype(t.scalar_type()))) << name;
    EXPECT_EQ(e["shape"].get<std::vector<int64_t>>(), t.sizes().vec()) << name;
    EXPECT_EQ(e["crc32"].get<uint32_t>(), crc_of(t)) << name;
  }
}

TEST(TensorIoReference, GoldenFilesLoadBitExact) {
  if (!test::have_python()) GTEST_SKIP() << "MTT_PYTHON not configured";
  std::vector<std::string> files;
  auto gdir = test::golden_dir() / "ttt";
  if (!fs::exists(gdir)) GTEST_SKIP() << "no golden dir " << gdir;
  for (const auto& e : fs::directory_iterator(gdir))
    if (e.path().extension() == ".safetensors") files.push_back(e.path().string());
  auto r = test::st_reference("dump", files);
  ASSERT_EQ(r.status, 0) << r.err;
  json ref = json::parse(r.out);
  for (const auto& p : files) {
    auto loaded = load_tensors(p);
    ASSERT_EQ(loaded.size(), ref[p]["tensors"].size()) << p;
    for (const auto& [name, t] : loaded) EXPECT_EQ(crc_of(t), ref[p]["tensors"][name]["crc32"].get<uint32_t>()) << p << " " << name;
  }
}

}  // namespace
}  // namespace mtt::nn
