#include "nn/tensor_io.h"

#include <cstdint>
#include <cstring>
#include <vector>

#include "core/error.h"

namespace mtt::nn {

at::ScalarType to_scalar_type(DType t) {
  switch (t) {
    case DType::F64: return at::kDouble;
    case DType::F32: return at::kFloat;
    case DType::F16: return at::kHalf;
    case DType::BF16: return at::kBFloat16;
    case DType::I64: return at::kLong;
    case DType::I32: return at::kInt;
    case DType::I16: return at::kShort;
    case DType::I8: return at::kChar;
    case DType::U8: return at::kByte;
    case DType::BOOL: return at::kBool;
    case DType::F8_E4M3: return at::kFloat8_e4m3fn;
    case DType::F8_E5M2: return at::kFloat8_e5m2;
  }
  check_internal(false, "unhandled DType");
  return at::kFloat;
}

std::optional<DType> to_dtype(at::ScalarType t) {
  switch (t) {
    case at::kDouble: return DType::F64;
    case at::kFloat: return DType::F32;
    case at::kHalf: return DType::F16;
    case at::kBFloat16: return DType::BF16;
    case at::kLong: return DType::I64;
    case at::kInt: return DType::I32;
    case at::kShort: return DType::I16;
    case at::kChar: return DType::I8;
    case at::kByte: return DType::U8;
    case at::kBool: return DType::BOOL;
    case at::kFloat8_e4m3fn: return DType::F8_E4M3;
    case at::kFloat8_e5m2: return DType::F8_E5M2;
    default: return std::nullopt;
  }
}

namespace {
std::vector<int64_t> sizes_of(const io::TensorView& v) { return v.shape(); }
}  // namespace

at::Tensor to_tensor(const io::TensorView& view) {
  check_internal(view.info != nullptr, "to_tensor on an empty TensorView");
  auto opts = at::TensorOptions().dtype(to_scalar_type(view.dtype())).device(at::kCPU);
  auto sizes = sizes_of(view);
  if (view.numel() == 0) return at::empty(sizes, opts);
  // ATen kernels assume naturally aligned elements; the format only guarantees it when the
  // writer padded the header (all mainstream writers do), so copy the rare misaligned tensor.
  auto addr = reinterpret_cast<std::uintptr_t>(view.data);
  if (addr % dtype_size(view.dtype()) != 0) {
    at::Tensor t = at::empty(sizes, opts);
    std::memcpy(t.data_ptr(), view.data, view.nbytes());
    return t;
  }
  // The deleter owns a reference to the file: the mapping lives as long as any tensor on it.
  auto keep = view.file;
  return at::from_blob(const_cast<uint8_t*>(view.data), sizes, [keep](void*) mutable { keep.reset(); }, opts);
}

std::map<std::string, at::Tensor> load_tensors(const std::string& path) {
  auto file = io::SafetensorsFile::open(path);
  std::map<std::string, at::Tensor> out;
  for (const auto& info : file->tensors()) {
    auto view = file->view(info);
    auto opts = at::TensorOptions().dtype(to_scalar_type(info.dtype)).device(at::kCPU);
    at::Tensor t = at::empty(info.shape, opts);
    if (info.nbytes()) std::memcpy(t.data_ptr(), view.data, info.nbytes());
    out.emplace(info.name, std::move(t));
  }
  return out;
}

void save_tensors(const std::string& path, const std::map<std::string, at::Tensor>& tensors,
                  const std::map<std::string, std::string>& metadata) {
  std::vector<at::Tensor> keep;  // contiguous CPU copies must outlive the write
  std::vector<io::TensorToWrite> items;
  keep.reserve(tensors.size());
  items.reserve(tensors.size());
  for (const auto& [name, t] : tensors) {
    if (!t.defined()) throw Error(path, name, "undefined tensor");
    auto dt = to_dtype(t.scalar_type());
    if (!dt) throw Error(path, name, std::string("dtype ") + c10::toString(t.scalar_type()) + " cannot be stored in safetensors");
    at::Tensor c = t.device().is_cpu() ? t.contiguous() : t.to(at::kCPU).contiguous();
    if (c.is_conj()) c = c.resolve_conj();
    if (c.is_neg()) c = c.resolve_neg();
    keep.push_back(c);
    io::TensorToWrite w;
    w.name = name;
    w.dtype = *dt;
    w.shape.assign(c.sizes().begin(), c.sizes().end());
    w.data = c.numel() ? c.data_ptr() : nullptr;
    items.push_back(std::move(w));
  }
  io::write_safetensors(path, items, metadata);
}

}  // namespace mtt::nn
