#pragma once
// The one configuration model of the TTT layers (issue 12 item 5): every reader of TTT settings
// (the moshi-finetune TTT fork's `ttt:` section in args.yaml / training_config.json, the In-Place
// port's `ttt:` section and its config.json `ttt_config`, our own configs and experiment specs)
// parses into TTTSettings here, and every consumer (LMConfig -> SchemaConfig, the hybrid and
// In-Place blocks, the experiments' TTT layers) converts from it. Torch-free: the audit includes it.
//
// Keys: the union of the fork's TTTArgs (docs/run-dirs.md lists them), the port's TTTArgs /
// ttt_config, and our switches. null means "the default". A key that only steers training or
// evaluation tooling is accepted and listed in `not_acted_on`; a key that would change the model
// in a way we do not implement is refused when set (e.g. the fork's per-layer attention context);
// an unknown key is an error naming the file and line.
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "moshi/schema.h"
#include "ttt/variants.h"

namespace YAML {
class Node;
}

namespace mtt::moshi {

// Who wrote a TTT section (decides the meaning of the keys the dialects share, e.g. chunk_size).
enum class TTTDialect {
  ours,          // moshi-ttt configs, experiment specs
  ttt_fork,      // moshi-finetune TTT fork (AlufRon/claude-web moshi_ttt_try), TTTArgs, `enable`
  inplace_port,  // In-Place TTT port (AlufRon/moshi_in_place), TTTArgs / ttt_config, `enabled`
};
const char* ttt_dialect_name(TTTDialect d);

struct TTTSettings {
  bool enable = false;
  std::string layers = "middle";  // "none" | "all" | "middle" | "inplace" | "29,30,31"
  TTTVariant variant = TTTVariant::fork_hybrid;
  TTTDialect dialect = TTTDialect::ours;

  // --- fork hybrid (TTT-MLP / TTT-Linear), the fork's TTTArgs ---
  double base_lr = 1.0;
  int64_t mini_batch_size = 16;
  bool persistent_states = true;
  double initial_gating_alpha = 0.1;
  int64_t ttt_mlp_layers = 2;
  double ttt_mlp_expansion_factor = 4.0;
  std::vector<int64_t> ttt_mlp_hidden_dims;  // empty: widths from the expansion factor
  bool use_rope = false;                     // the fork's audio RoPE (ttt::Rope::fork_audio)
  double rope_theta = 10000.0;
  std::optional<int64_t> eval_chunk_size;    // the fork's `chunk_size` (LibriLight eval chunking)
  bool log_inner_loop_losses = false;

  // --- our switches ---
  bool output_post_norm_wo = false;          // fork forward skips post_norm/wo (docs/ttt.md §6)
  int64_t scan_checkpoint_group_size = 0;    // mini-batches per recomputation group (0 = keep all)
  // Fork-exact numerics (issue 12), set by the run-dir resolver for fork checkpoints.
  ttt::MultiLayerQuery multilayer_query = ttt::MultiLayerQuery::dual;
  ttt::StreamingState streaming_state = ttt::StreamingState::persistent;
  // Stand-alone TTT layers of the experiments (toy models): the layer's own width and heads and
  // variant overrides; unset = the consumer's default (LM hybrid: the fork's; toy: TTTConfig::moshi).
  std::optional<int64_t> model_dim, num_heads;
  std::optional<ttt::InnerModel> inner;
  std::optional<ttt::Eta> eta;
  std::optional<ttt::ReconTarget> recon_target;
  std::optional<ttt::OutputPath> output_path;
  std::optional<ttt::Rope> rope;
  std::optional<ttt::PadUpdates> pad_updates;
  std::optional<std::string> proj_bias_init;  // zero | torch_default (pad-tokens experiment)
  std::optional<double> lr;                   // our trainer: learning rate of the TTT parameters

  // --- In-Place TTT (the port's TTTArgs / ttt_config; docs/checkpoint-keys.md §2.1) ---
  int64_t inplace_start_layer = 5;
  int64_t inplace_layer_frequency = 6;
  int64_t conv_kernel_size = 2;
  double inplace_lr = 1e-3;                  // port `learning_rate`
  int64_t inplace_chunk_size = 256;          // port `chunk_size`
  double inplace_delta_clip = 1e-5;          // delta_clip_fro_norm; <= 0 (or null): no clip
  double inplace_delta_clip_epsilon = 1e-12;
  // FFN activation of In-Place layers: "gating" (the LM's own, so a zero target generator is the
  // base model), "gelu" (the port's F.gelu, exact erf: what its layers really compute) or "silu".
  std::string inplace_activation = "gating";

  // Keys accepted but not acted on (training / evaluation tooling of the forks): "key: value".
  std::vector<std::string> not_acted_on;

  // Resolves `layers` for a model with num_layers layers (sorted, unique). "middle" =
  // floor(N/4) .. floor(3N/4)-1 (fork ttt_integration.py:L35-66). Throws mtt::Error on a bad spec
  // or an index out of range.
  std::vector<int> resolve_layers(int64_t num_layers, const std::string& file = "") const;
  void validate(const std::string& file = "") const;  // throws mtt::Error naming the key
  bool operator==(const TTTSettings& o) const;
};

// The `ttt:` section of a YAML/JSON document (the whole document when it has no `ttt` key).
// The dialect is the port's when the section uses `enabled`, else `dialect_hint`.
TTTSettings ttt_settings_from_node(const YAML::Node& section, const std::string& file,
                                   TTTDialect dialect_hint = TTTDialect::ours);
TTTSettings ttt_settings_from_yaml(const std::string& text, const std::string& file = "",
                                   TTTDialect dialect_hint = TTTDialect::ours);
TTTSettings ttt_settings_from_yaml_file(const std::string& path, TTTDialect dialect_hint = TTTDialect::ours);
// Every field, under the keys the parser reads (dialect ours), so from_yaml(to_json(s)) == s.
std::string ttt_settings_to_json(const TTTSettings& s);

}  // namespace mtt::moshi
