#pragma once
// A checkpoint as the user names it on the command line: one safetensors file, a sharded set
// (`*.safetensors.index.json`), a folder holding model.safetensors (or its index), or a
// moshi-finetune run dir:
//
//   <run>/checkpoints/checkpoint_NNNNNN/consolidated/{consolidated.safetensors, lora.safetensors,
//                                                      config.json}
//
// (newest step by default). All tensors of all files are served through one flat key space;
// a key present in two files is an error, never a silent override.
#include <cstdint>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "io/safetensors.h"

namespace mtt::io {

struct CheckpointOptions {
  std::optional<int64_t> step;  // run dirs: open checkpoint_<step> instead of the newest
  bool consolidated = true;     // run/consolidated dirs: open consolidated.safetensors if present
  bool lora = true;             // ... and lora.safetensors if present
};

enum class CheckpointKind {
  File,             // a single .safetensors file
  ShardIndex,       // *.safetensors.index.json and its shards
  ModelDir,         // a folder with model.safetensors or model.safetensors.index.json
  ConsolidatedDir,  // a folder with consolidated.safetensors and/or lora.safetensors
  RunDir,           // a moshi-finetune run dir (or its checkpoints/ or checkpoint_NNNNNN/ folder)
};
const char* checkpoint_kind_name(CheckpointKind k);

class Checkpoint {
 public:
  // Throws mtt::Error naming the path (and key) on anything missing or malformed.
  static Checkpoint open(const std::string& path, const CheckpointOptions& options = {});

  // The steps (NNNNNN of checkpoint_NNNNNN) found under a run dir, ascending; empty when
  // `run_dir` has none.
  static std::vector<int64_t> list_steps(const std::string& run_dir);

  const std::string& path() const { return path_; }  // as given
  CheckpointKind kind() const { return kind_; }
  std::optional<int64_t> step() const { return step_; }  // run dirs only
  const std::vector<int64_t>& available_steps() const { return steps_; }

  const std::vector<std::string>& keys() const { return keys_; }  // sorted
  std::size_t size() const { return keys_.size(); }
  bool contains(const std::string& key) const { return index_.count(key) > 0; }
  std::optional<TensorView> find(const std::string& key) const;
  // Throws Error(checkpoint path, key, "no such tensor ...") naming a close key when there is one.
  TensorView get(const std::string& key) const;
  const std::string& file_of(const std::string& key) const;  // path of the file holding key

  const std::vector<std::shared_ptr<const SafetensorsFile>>& files() const { return files_; }
  uint64_t total_bytes() const { return total_bytes_; }  // tensor data, all files
  // Union of the files' __metadata__ (and an index's "metadata" strings); later files do not
  // override earlier ones.
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

  bool has_config() const { return !config_path_.empty(); }
  const std::string& config_path() const { return config_path_; }
  const nlohmann::json& config() const { return config_; }  // null without config.json

  // One line: what was opened, e.g. "run dir runs/a step 300 (of 100, 200, 300): lora.safetensors,
  // 20 tensors, 1.2 MiB, config.json".
  std::string describe() const;

 private:
  void add_file(const std::string& file_path);
  void finish();
  void load_config(const std::string& path);

  std::string path_;
  CheckpointKind kind_ = CheckpointKind::File;
  std::optional<int64_t> step_;
  std::vector<int64_t> steps_;
  std::vector<std::shared_ptr<const SafetensorsFile>> files_;
  std::map<std::string, std::pair<std::size_t, const TensorInfo*>> index_;
  std::vector<std::string> keys_;
  std::map<std::string, std::string> metadata_;
  uint64_t total_bytes_ = 0;
  std::string config_path_;
  nlohmann::json config_;
};

}  // namespace mtt::io
