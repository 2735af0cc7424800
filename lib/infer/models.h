#pragma once
// The models ttt-infer runs (docs/moshi.md §6): a Mimi codec and a Moshi(-TTT) LM, either loaded
// from files or built with deterministic random weights from a preset (the tiny built-in model for
// newcomers; the 300M and moshiko 7B shapes for speed measurements without released weights).
#include <ATen/ATen.h>

#include <map>
#include <memory>
#include <optional>
#include <ostream>
#include <string>

#include "mimi/mimi.h"
#include "moshi/lm.h"
#include "moshi/model_source.h"

namespace mtt::infer {

struct ModelOptions {
  // Random weights from an LMConfig preset ("tiny", "medium_300m", "moshiko_7b"); empty: load files.
  // "tiny" pairs the tiny LM with the tiny Mimi; the other presets get the full-size Mimi.
  std::string random_preset;
  // TTT layers (fork hybrid) of a random preset: "none", "all", "middle" or "29,30,31";
  // empty = "all" for tiny, "none" otherwise.
  std::string ttt_layers;
  std::string checkpoint;    // Moshi(-TTT) weights: file, shards, model folder or run dir (moshi/model_source.h);
                             // with random_preset "tiny": the tiny model with the run's configuration
  std::string mimi_weight;   // Mimi weights (ignored for random presets; default: the model folder's)
  std::string config;        // moshi config.json (default: the run's / model folder's, else moshiko 7B)
  std::string moshi_weight;  // base weights under an adapter-only run (default: its moshi_paths.moshi_path)
  std::string lora_weight;   // a LoRA / adapter file applied over the weights
  bool fuse_lora = false;    // merge LoRA adapters into the weights at load (moshi's --fuse-lora)
  std::string model_folder;  // --hf-repo: defaults for base weights, Mimi, tokenizer and config
  std::optional<int64_t> step;  // run dirs: this checkpoint step instead of the newest
  moshi::ForkNumerics fork_numerics = moshi::ForkNumerics::automatic;
  at::ScalarType dtype = at::kFloat;  // LM compute dtype (bf16 or f32); Mimi stays f32
  at::Device device = at::kCPU;
  uint64_t seed = 4242;      // random weights
  // false: the LM alone (scoring codes): no Mimi is built or required, Models::codec stays null.
  bool need_codec = true;
};

struct Models {
  std::unique_ptr<mimi::MimiModel> codec;  // null when ModelOptions::need_codec is false
  std::unique_ptr<moshi::LMModel> lm;
  std::string label;  // what was built, printed before generation ("[tiny] ...", "[random medium_300m] ...")
  std::vector<std::string> notes;  // how the checkpoint was resolved and which numerics it gets
  std::string tokenizer_path;      // the model folder's / run's text tokenizer, when it exists
  std::string run_args_file;                    // the run's args.yaml ("" when the model is no run)
  std::map<std::string, std::string> run_args;  // its scalars of interest (moshi::ModelSource::run_args)
};

// Throws mtt::Error naming the config and key when the LM's codebooks do not fit the codec
// (card == bins, dep_q and the user stream n_q - dep_q within the codec's codebooks).
void check_codec_fits(const moshi::LMConfig& lm, const mimi::MimiConfig& codec, const std::string& config_file,
                      const std::string& codec_file);

// The tiny Moshi(-TTT) sized to a codec: its codebook count (model and user streams) and size.
// ttt_layers "none" = the base model.
moshi::LMConfig tiny_lm_config(const mimi::MimiConfig& codec, const std::string& ttt_layers);

// The layer indices that carry fork TTT keys (transformer.layers.N.seq_modeling_block.ttt_layer.*)
// in a checkpoint, as a layer spec ("none" or "0,2,3").
std::string ttt_layers_of_checkpoint(const std::string& path);

// Builds (and moves to opt.device / opt.dtype) the codec and the LM; errors name the file and key.
Models build_models(const ModelOptions& opt, std::ostream& log);

// Throws mtt::Error(Usage) naming `flag` when `device` is CUDA and no CUDA device is visible.
void check_device_available(const at::Device& device, const std::string& flag = "--device");

// Moves every LM parameter to `device` (keeping dtypes).
void move_lm_to(moshi::LMModel& lm, const at::Device& device);

}  // namespace mtt::infer
