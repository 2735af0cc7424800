#pragma once
// LoRA as moshi does it (moshi/modules/lora.py; docs/checkpoint-keys.md §1.3, §2.3). Torch-free:
// the run-dir resolver and the audit fill and read it.
//
// replace_all_linear_with_lora wraps every nn.Linear of the Moshi LM (attention in_projs/out_projs,
// FFN linear_in/linear_out or linear1/linear2, of the main transformer and the depformer,
// text_linear, depformer_in.k, linears.k, low-rank embedding projections) into a LoRALinear:
//   frozen_W.weight [out, in] (the base linear), lora_A.weight [r, in], lora_B.weight [out, r],
//   y = frozen_W(x) + scaling * lora_B(lora_A(x)).
// The Moshi-TTT fork wraps the LM before its TTT layers exist, so the TTT projections (wq..wo) are
// never wrapped; the In-Place port wraps its target generator's W_target too. A checkpoint holds the
// base under `<linear>.weight` (moshi's load hook moves it to frozen_W.weight) or
// `<linear>.frozen_W.weight`, and the adapters under `<linear>.lora_A.weight` / `.lora_B.weight`.
// Merged (moshi's --fuse-lora, replace_lora_with_linear): W' = W + scaling * B @ A.
#include <cstdint>

namespace mtt::moshi {

// The moshi-finetune `lora:` section (finetune/args.py LoraArgs) / moshi's config.json
// `lora`, `lora_rank`, `lora_scaling`.
struct LoraSettings {
  bool enable = false;
  int64_t rank = 0;       // 0: taken from the checkpoint's lora_A tensors
  double scaling = 2.0;
  bool ft_embed = false;  // embeddings trained in full (their tensors keep their names; nothing to wrap)
};

}  // namespace mtt::moshi
