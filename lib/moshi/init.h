#pragma once
// The library's own, torch-free initialisers: every tensor of a ModelSchema filled by its
// declared InitRule from a deterministic seed (per-key streams, so the values of a key do not
// depend on which other keys exist), written as bf16 or f32 safetensors. This creates the tiny
// built-in Moshi-TTT checkpoint the README's main command audits (`ttt-inspect --tiny`).
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "moshi/schema.h"

namespace mtt::moshi {

struct InitOptions {
  uint64_t seed = 0;
  DType dtype = DType::BF16;  // BF16, F32, F16 or F64
};

struct InitTensor {
  std::string name;
  std::vector<int64_t> shape;
  DType dtype = DType::BF16;
  std::vector<uint8_t> bytes;  // little-endian, row-major
};

// One tensor per declaration, sorted by name. Duplicates (fork original_layer copy) and copy_of
// rules (In-Place w_down) are bit copies of their source. Memory: the whole model, so meant for
// small configurations.
std::vector<InitTensor> init_parameters(const ModelSchema& schema, const InitOptions& options = {});

// init_parameters + io::write_safetensors (atomic). The metadata gets "mtt.schema_config" (the
// SchemaConfig as JSON) and "mtt.init_seed", on top of `metadata`.
void write_initial_checkpoint(const std::string& path, const ModelSchema& schema, const InitOptions& options = {},
                              const std::map<std::string, std::string>& metadata = {});

// Encodes one value in dtype (round-to-nearest-even for bf16/f16), little-endian.
void encode_value(double v, DType dtype, uint8_t* out);

}  // namespace mtt::moshi
