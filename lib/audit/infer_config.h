#pragma once
// Which model a checkpoint belongs to: the SchemaConfig inferred from key names and shapes
// (dim, layers, FFN width, depformer from shapes; TTT layers and their variant from key names:
// seq_modeling_block.* = fork TTT-MLP/Linear hybrid, gating.target_generator.* / gating.w_down =
// In-Place TTT, *.lora_A.* = LoRA), refined by the library's own "mtt.schema_config" metadata.
// Configuration files (config.json, args.yaml) are read by the run-dir resolver
// (moshi/model_source.h), whose result replaces this guess in the audit. Every value says where
// it came from.
#include <string>
#include <vector>

#include "io/checkpoint.h"
#include "moshi/schema.h"

namespace mtt::audit {

struct InferredConfig {
  moshi::SchemaConfig config;
  std::vector<std::string> notes;  // "dim 4096 from text_emb.weight", "num_heads assumed dim/128", ...
  std::string source = "shapes";   // "metadata" | "shapes" | "shapes+config.json"
  bool has_lm = false;             // the base LM's keys are present (else: adapter/partial file)
  bool partial = false;            // some declared keys are expected to be absent (lora.safetensors, TTT subset)
};

// Throws mtt::Error(path, "", ...) when no key looks like a Moshi / Moshi-TTT checkpoint.
InferredConfig infer_config(const io::Checkpoint& ckpt);

// "29,30,31", "all", "middle" (the fork's default: floor(N/4) .. floor(3N/4)-1), "none"
// (docs/checkpoint-keys.md §1.1). Throws Error(Usage) naming `what` on a malformed list.
std::vector<int> parse_layer_list(const std::string& spec, int num_layers, const std::string& what = "--layers");

}  // namespace mtt::audit
