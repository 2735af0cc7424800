#pragma once
// Bridge between safetensors files (lib/io) and ATen tensors.
//
// to_tensor() is zero-copy: the tensor aliases the file's mapping and keeps the file alive.
// The mapping is private copy-on-write, so in-place ops on such a tensor work and never touch
// the file, but they are visible to every other view of the same tensor from the same open file;
// clone() when that matters. load_tensors() always returns owning copies.
#include <ATen/ATen.h>

#include <map>
#include <optional>
#include <string>

#include "core/dtype.h"
#include "io/safetensors.h"

namespace mtt::nn {

at::ScalarType to_scalar_type(DType t);
// nullopt for ATen types safetensors cannot store here (complex, quantized, unsigned > 8 bits...).
std::optional<DType> to_dtype(at::ScalarType t);

// A CPU tensor viewing the stored bytes (zero-copy when the data is aligned for its dtype,
// otherwise an owning copy). Shape [] gives a 0-dim tensor.
at::Tensor to_tensor(const io::TensorView& view);

// Every tensor of a safetensors file as an owning, contiguous CPU tensor.
std::map<std::string, at::Tensor> load_tensors(const std::string& path);

// Writes `tensors` atomically through io::write_safetensors. Tensors on other devices or with
// strides are copied to contiguous CPU first; an unsupported dtype is an Error naming the key.
void save_tensors(const std::string& path, const std::map<std::string, at::Tensor>& tensors,
                  const std::map<std::string, std::string>& metadata = {});

}  // namespace mtt::nn
