#pragma once
// Configuration of the Moshi LM (docs/moshi.md §1, §7) and of its TTT hybrid layers
// (docs/checkpoint-keys.md §1-2, the fork's YAML `ttt:` section). Torch-free: the audit includes it.
//
// LMConfig mirrors upstream `LMModel.__init__` keyword arguments (lm.py:76-243) with the same
// defaults, so a moshi JSON config (configs/moshi_7b_202409.json, or a HF `config.json`) reads into
// it field by field. The depformer inherits every transformer setting of the main model unless a
// `depformer_*` key overrides it (lm.py:142-171); depformer_transformer() performs that merge.
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "moshi/schema.h"
#include "moshi/ttt_settings.h"

namespace mtt::moshi {

// create_norm_fn (transformer.py): layer_norm eps 1e-5, layer_norm_f32 eps 1e-8 (f32 compute),
// rms_norm eps 1e-5, rms_norm_f32 eps 1e-8 (f32 compute, moshiko).
enum class NormKind { layer_norm, layer_norm_f32, rms_norm, rms_norm_f32 };
// StreamingTransformer.positional_embedding: "sin" adds sinusoids to the input, "rope" rotates
// q/k (interleaved pairs), "sin_rope" both, "rope_concat" half-split RoPE, "none".
enum class PosEmb { none, sin, rope, sin_rope, rope_concat };

NormKind parse_norm(const std::string& s, const std::string& file = "", const std::string& key = "norm");
PosEmb parse_pos_emb(const std::string& s, const std::string& file = "", const std::string& key = "positional_embedding");
const char* norm_name(NormKind n);
const char* pos_emb_name(PosEmb p);
double norm_eps(NormKind n);
bool norm_is_rms(NormKind n);
bool norm_is_f32(NormKind n);

// Arguments of one StreamingTransformer (main or depformer), resolved.
struct TransformerConfig {
  int64_t d_model = 0;
  int64_t num_heads = 1;
  int64_t num_layers = 1;
  int64_t dim_feedforward = 0;        // int(hidden_scale * d_model) unless given
  bool causal = true;
  std::optional<int64_t> context;     // attention window = ring KV capacity; none = unlimited
  PosEmb positional_embedding = PosEmb::sin;
  double max_period = 10000.0;
  double positional_scale = 1.0;
  NormKind norm = NormKind::layer_norm;
  std::string gating = "none";        // "none" -> linear1/gelu/linear2; "silu", "gelu", ... -> gated FFN
  std::optional<double> layer_scale;  // LayerScale init (absent in the LM)
  int64_t kv_repeat = 1;
  int64_t weights_per_step = 0;       // number of steps with own weights (depformer: dep_q)
  std::vector<int64_t> weights_per_step_schedule;  // step -> weight index (empty: identity)

  int64_t head_dim() const { return d_model / num_heads; }
  // Number of weight sets (max(schedule)+1, or weights_per_step, or 1).
  int64_t num_weight_sets() const;
  int64_t weight_index(int64_t step) const;  // schedule lookup
  // Gated-FFN hidden width (gating.py:55-58): 21*D//8 when F == 4*D else 2*F//3.
  int64_t gating_hidden() const { return SchemaConfig::gating_hidden(d_model, dim_feedforward); }
  // The attention capacity of a streaming ring (transformer.py:466-474): context, else
  // weights_per_step; 0 means "grow" (unlimited, only for non-streaming use).
  int64_t kv_capacity() const;
};

struct LMConfig {
  // --- LMModel arguments (defaults as upstream lm.py) ---
  std::vector<int64_t> delays{0};
  int64_t n_q = 8;
  int64_t dep_q = 8;
  int64_t card = 1024;
  int64_t text_card = 32000;
  std::optional<int64_t> text_card_out;
  int64_t dim = 128;
  int64_t num_heads = 8;
  int64_t num_layers = 8;       // upstream has no default (kwargs); moshiko 32
  double hidden_scale = 4.0;
  NormKind norm = NormKind::layer_norm;
  bool norm_emb = false;        // unsupported when true (not in moshiko)
  bool bias_proj = false;
  int64_t existing_text_padding_id = 3;
  int64_t existing_text_end_padding_id = 0;
  std::optional<int64_t> context;
  bool causal = true;
  // transformer kwargs shared by main and depformer
  PosEmb positional_embedding = PosEmb::sin;
  double max_period = 10000.0;
  std::string gating = "none";
  std::optional<double> layer_scale;
  int64_t kv_repeat = 1;
  // depformer
  int64_t depformer_dim = 256;
  std::optional<int64_t> depformer_dim_feedforward;
  int64_t depformer_num_heads = -1;   // -1: inherit num_heads
  int64_t depformer_num_layers = -1;  // -1: inherit num_layers
  bool depformer_multi_linear = false;
  bool depformer_weights_per_step = false;
  std::vector<int64_t> depformer_weights_per_step_schedule;
  int64_t depformer_low_rank_embeddings = 0;  // 0 = none
  PosEmb depformer_pos_emb = PosEmb::sin;
  std::optional<NormKind> depformer_norm;     // depformer_norms (per codebook, after the depformer)
  std::optional<std::string> depformer_gating;
  std::optional<double> depformer_max_period;
  std::optional<double> depformer_layer_scale;
  // --- sampling defaults of LMGen (lm.py:557-573) ---
  double temp = 0.8, temp_text = 0.7;
  int64_t top_k = 250, top_k_text = 25;
  // --- TTT hybrid layers ---
  TTTSettings ttt;

  int64_t num_codebooks() const { return n_q + 1; }
  int64_t num_audio_codebooks() const { return n_q; }
  int64_t audio_offset() const { return 1; }
  int64_t initial_token_id() const { return card; }
  int64_t text_initial_token_id() const { return text_card; }
  int64_t text_out_card() const { return text_card_out.value_or(text_card); }
  int64_t max_delay() const;
  // The number of depformer_in linears (lm.py:172-185).
  int64_t num_depformer_in() const;
  TransformerConfig main_transformer() const;
  TransformerConfig depformer_transformer() const;
  void validate(const std::string& file = "") const;  // throws mtt::Error naming the key

  // Torch-free parameter declaration of this config (schema.h).
  SchemaConfig to_schema(bool fused_attention_names = false) const;

  // Presets.
  static LMConfig moshiko_7b();     // docs/moshi.md §1 (= configs/moshi_7b_202409.json)
  static LMConfig lm_defaults();    // LMModel() defaults with num_layers 8
  static LMConfig golden_test();    // upstream tests/test_lm.py (golden/moshi)
  // docs/moshi.md §7: every moshiko path (RMSNorm f32, RoPE, SiLU gating, weights-per-step depformer,
  // delays, ring wrap with context 4). low_rank > 0 adds low-rank depformer embeddings.
  static LMConfig tiny(int64_t low_rank = 0);
  // Mid-size config for the benchmark (moshiko shape, smaller sizes): 444M parameters in all, of
  // which ~120M are embedding tables (one row read per step) and the text head.
  static LMConfig medium_300m();
  static LMConfig preset(const std::string& name);  // "moshiko_7b", "tiny", "tiny_lowrank", "golden_test", "medium_300m"

  // Moshi JSON config (unknown keys ignored; `lm_gen_config` sampling overrides honoured).
  static LMConfig from_json(const std::string& text, const std::string& file = "");
  static LMConfig from_json_file(const std::string& path);
  std::string to_json() const;
};

}  // namespace mtt::moshi
