#pragma once
// The run-dir resolver (issue 12 item 1): what every tool opens when the user names a model.
// Given a safetensors file, a sharded index, a model folder (moshi's config.json with
// moshi_name / mimi_name / tokenizer_name, as moshi.models.loaders.CheckpointInfo reads it) or a
// moshi-finetune run dir written by either fork, it returns
//   - the LM configuration (config.json, or --config), with the TTT settings of the fork that wrote
//     the run (args.yaml / training_config.json `ttt:`, the In-Place port's config.json `ttt_config`);
//   - the LoRA settings (args.yaml `lora:`, config.json `lora`/`lora_rank`/`lora_scaling`);
//   - the weight sources: base weights (--moshi-weight, or the run's moshi_paths.moshi_path when the
//     file exists) overlaid with the run's tensors; the base layers of fork TTT layers are renamed
//     to original_layer.* unless the run carries them;
//   - which numerics the model will get (fork-exact variants for fork checkpoints) and why.
// Torch-free (the audit uses it); lib/infer turns the weight plan into tensors.
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "io/checkpoint.h"
#include "moshi/config.h"

namespace mtt::moshi {

// Which code wrote a run dir or model folder.
enum class RunWriter {
  file,          // a plain checkpoint (no run dir around it)
  model_folder,  // moshi's config.json + weights (HF snapshot layout)
  moshi_finetune,
  ttt_fork,      // moshi-finetune TTT fork (args.yaml `ttt:` with `enable`)
  inplace_port,  // In-Place TTT port (config.json `ttt_config`, args.yaml `ttt:` with `enabled`)
  ours,          // ttt-sweep train / the sweep trainer
};
const char* run_writer_name(RunWriter w);

// How to pick the fork-exact numerics (issue 12 item 3).
enum class ForkNumerics { automatic, fork, ours };

struct LoraConfig {
  bool enable = false;
  int64_t rank = 0;
  double scaling = 2.0;
  bool ft_embed = false;
  std::string source;  // which file said so
};

struct ModelSourceOptions {
  std::string config;        // --config / --lm-config: overrides config.json
  std::string moshi_weight;  // --moshi-weight: base weights for adapter-only runs
  std::string lora_weight;   // --lora-weight: a LoRA/adapter file applied over the weights
  // --hf-repo: a model folder giving the defaults of a run resolved over it (base weights, Mimi,
  // tokenizer, and the LM config when the run has none).
  std::string model_folder;
  std::optional<int64_t> step;
  ForkNumerics fork_numerics = ForkNumerics::automatic;
  // Without a config file: the configuration to use (e.g. the tiny preset of --tiny). Empty: moshiko 7B.
  std::optional<LMConfig> fallback_config;
  bool require_weights = true;  // adapter-only runs without a base are an error (ttt-infer)
};

// One entry of the weight plan: the model's key and where its tensor comes from.
struct WeightEntry {
  const io::Checkpoint* source = nullptr;  // run_ckpt, base_ckpt or lora_ckpt of the ModelSource
  std::string key;                         // the key inside that checkpoint
};

struct ModelSource {
  std::string path;  // as given
  RunWriter writer = RunWriter::file;
  LMConfig config;
  bool has_config = false;                // a config file described the model (else: fallback)
  std::vector<std::string> config_files;  // every file that contributed, in order
  std::string ttt_source;                 // file the TTT settings came from ("" = none)
  LoraConfig lora;
  bool adapters_only = false;             // the run's tensors are lora.safetensors only
  std::string base_path;                  // the base weights used ("" = none)
  std::string moshi_paths_moshi;          // args.yaml moshi_paths.moshi_path as written
  std::string mimi_path, tokenizer_path;  // from a model folder's config.json or args.yaml moshi_paths
  std::map<std::string, std::string> run_args;  // args.yaml scalars of interest (save_adapters, param_dtype, ...)
  std::vector<std::string> notes;         // how everything was resolved, one line each
  std::vector<std::string> numerics;      // which numerics the model gets and why

  std::shared_ptr<io::Checkpoint> run_ckpt;   // the named checkpoint
  std::shared_ptr<io::Checkpoint> base_ckpt;  // base weights (adapter-only runs)
  std::shared_ptr<io::Checkpoint> lora_ckpt;  // --lora-weight
  std::map<std::string, WeightEntry> weights; // model key -> tensor source (base overlaid by run)

  // "run dir RUN (ttt fork), step 20, adapters over BASE; config.json + args.yaml"
  std::string describe() const;
};

// A Hugging Face repo id ("kyutai/moshiko-pytorch-bf16", "org/name"): one '/', letters, digits,
// '-', '_', '.' on both sides.
bool is_hf_repo_id(const std::string& s);

// The local Hugging Face cache folder (huggingface_hub's rules: $HF_HUB_CACHE, else
// $HUGGINGFACE_HUB_CACHE, else $HF_HOME/hub, else $XDG_CACHE_HOME/huggingface/hub, else
// ~/.cache/huggingface/hub).
std::string hf_hub_cache_dir();

// What a user names as a model: a path that exists is itself; a repo id that is no local path is
// its snapshot in the local cache, <hub>/models--org--name/snapshots/<contents of refs/main>, read
// without any network access. A repo id that is not in the cache is one mtt::Error (input)
// naming the folder looked in. Anything else is returned as given (its opener reports it).
std::string resolve_local_model_path(const std::string& path_or_repo_id);

// Throws mtt::Error naming the file and key on anything missing, malformed or contradictory.
// `path` and options.model_folder may be repo ids of the local Hugging Face cache.
ModelSource resolve_model_source(const std::string& path, const ModelSourceOptions& options = {});

// The run dir around a checkpoint path (the folder holding args.yaml), or "" when none.
std::string find_run_root(const std::string& path);

}  // namespace mtt::moshi
