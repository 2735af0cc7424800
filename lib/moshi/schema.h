#pragma once
// Torch-free declaration of every parameter of the (hybrid) Moshi LM for one configuration:
// checkpoint name, shape, module, role, initialisation rule and whether the library's forward
// reads it ("the model declares what it reads", docs/architecture.md). The torch modules of
// lib/moshi register exactly these names (tested there); the audit computes "unused" as
// checkpoint keys minus consumed keys from this list, never from a name list of its own.
//
// Names follow docs/moshi.md §4.2 (LM, both attention weight forms, §4.1) and
// docs/checkpoint-keys.md §1.2-1.3 (fork hybrid layer, duplicate original_layer copy, LoRA) and
// §2.2-2.3 (In-Place TTT FFN).
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace mtt::moshi {

// How a tensor is initialised by the library (lib/moshi/init.h) and which value an untrained
// tensor still holds (the audit's "bit-equal to its known initial value").
enum class InitKind {
  normal,    // N(0, a)
  uniform,   // U(-a, a)
  constant,  // every element = a
  diagonal,  // square matrix, zero except a N(0, a) diagonal (official In-Place TTT W_target, docs/ttt.md §8)
  copy_of,   // bit copy of the tensor named `source` (In-Place w_down from linear_out, §2.2)
};
struct InitRule {
  InitKind kind = InitKind::constant;
  double a = 0.0;
  std::string source;  // copy_of only
  static InitRule normal(double std) { return {InitKind::normal, std, {}}; }
  static InitRule uniform(double bound) { return {InitKind::uniform, bound, {}}; }
  static InitRule constant(double v) { return {InitKind::constant, v, {}}; }
  static InitRule zeros() { return {InitKind::constant, 0.0, {}}; }
  static InitRule ones() { return {InitKind::constant, 1.0, {}}; }
  static InitRule diagonal(double std) { return {InitKind::diagonal, std, {}}; }
  static InitRule copy(std::string key) { return {InitKind::copy_of, 0.0, std::move(key)}; }
  std::string describe() const;  // "N(0, 0.02)", "const 0.3", "copy of <key>", ...
};

// Which TTT variant a layer carries.
enum class TTTVariant {
  none,
  fork_hybrid,  // Moshi-TTT fork: HybridStreamingTransformerLayer, keys under original_layer.* and
                // seq_modeling_block.* (docs/checkpoint-keys.md §1)
  inplace,      // In-Place TTT on the gated FFN: gating.w_down, gating.target_generator.* (§2)
};
const char* ttt_variant_name(TTTVariant v);

// Initialisation of the In-Place target generator (docs/checkpoint-keys.md §2.5, docs/ttt.md §8).
enum class InplaceInit {
  port_finetune,  // conv and W_target N(0, 1e-2) (the port's fine-tuning initialiser)
  port_loader,    // conv and W_target N(0, 1e-4) (the port's loader)
  official,       // conv zero, W_target zero except a N(0, 0.02) diagonal
  zero,           // both zero: the dead gradient path of seed 003
};

struct HybridSettings {
  TTTVariant variant = TTTVariant::none;
  std::vector<int> layers;  // converted layer indices (sorted, unique)

  // fork_hybrid (TTT-MLP / TTT-Linear / multi-layer MLP; docs/ttt.md §1.1, docs/checkpoint-keys.md §1.2)
  int ttt_heads = 0;                          // H (the fork takes the LM's num_heads)
  int ttt_mlp_layers = 2;                     // 1 = TTT-Linear, 2 = W1,b1,W2,b2, >= 3 = weights.k
  double ttt_mlp_expansion_factor = 4.0;      // hidden width e = int(d * factor)
  std::vector<int64_t> ttt_mlp_hidden_dims;   // overrides the expansion factor when non-empty (n >= 3)
  bool proj_bias = true;                      // wq..wo with bias (fork)
  bool causal_eta = false;                    // learnable_token_idx [b] present (LMPT eta; fork: VDIT eta)
  int64_t mini_batch_size = 16;               // b (size of learnable_token_idx)
  bool output_post_norm_wo = false;           // fork forward skips post_norm and wo (docs/ttt.md §6)
  bool bidirectional = false;                 // Moshi is causal: backward gate never called (seed 000)
  double initial_gating_alpha = 0.1;          // both gates (0.3 in the user's runs)

  // inplace (docs/checkpoint-keys.md §2.2)
  int conv_kernel_size = 2;
  InplaceInit inplace_init = InplaceInit::port_finetune;

  // LoRA (in-memory names, docs/checkpoint-keys.md §1.3 / §2.3): every Moshi Linear becomes
  // frozen_W/lora_A/lora_B; TTT linears of the fork are never wrapped; the In-Place W_target is.
  int lora_rank = 0;
  double lora_scaling = 2.0;
};

// Torch-free shape description of the LM (docs/moshi.md §1). The moshi config (lib/moshi/config.h)
// converts into this; the audit infers it from a checkpoint.
struct SchemaConfig {
  int64_t dim = 4096;
  int64_t num_heads = 32;
  int64_t num_layers = 32;
  int64_t dim_feedforward = 16896;  // int(hidden_scale * dim)
  bool gating = true;               // gated SiLU FFN (linear_in/linear_out) or plain (linear1/linear2)
  bool layer_norm = false;          // LayerNorm (weight, bias) instead of RMSNorm (alpha [1,1,D])
  int64_t text_card = 32000;
  int64_t card = 2048;
  int64_t n_q = 16;
  int64_t dep_q = 8;
  int64_t depformer_dim = 1024;
  int64_t depformer_num_heads = 16;
  int64_t depformer_num_layers = 6;
  int64_t depformer_dim_feedforward = 4224;
  int64_t depformer_weights_per_step = 8;  // number of per-step weight sets (0/1 = shared); with a
                                           // schedule: max(schedule) + 1
  bool depformer_multi_linear = true;      // depformer_in.{k}: weight sets (or dep_q) linears, else 1 (lm.py:172-185)
  // Depformer FFN: -1 = same as `gating`, 0 = plain linear1/linear2, 1 = gated (depformer_gating,
  // e.g. upstream test_lm: plain main FFN, SiLU-gated depformer).
  int depformer_gating = -1;
  int64_t depformer_low_rank_embeddings = 0;  // 0 = plain embeddings
  // Stored attention weight form (docs/moshi.md §4.1): legacy fused `in_proj_weight`/`out_proj.weight`
  // (depformer stacked over steps) or the module form `in_projs.{k}.weight`/`out_projs.{k}.weight`.
  bool fused_attention_names = false;
  HybridSettings ttt;

  // Moshi gated-FFN hidden size (docs/moshi.md §1, docs/checkpoint-keys.md notation): 2*F//3, or 21*D//8
  // when F == 4*D.
  static int64_t gating_hidden(int64_t dim, int64_t dim_feedforward);
  int64_t ffn_hidden() const { return gating_hidden(dim, dim_feedforward); }
  int64_t depformer_ffn_hidden() const { return gating_hidden(depformer_dim, depformer_dim_feedforward); }
  bool is_ttt_layer(int layer) const;
  bool depformer_gated() const { return depformer_gating < 0 ? gating : depformer_gating != 0; }
  int64_t depformer_num_in() const;

  static SchemaConfig moshiko_7b();   // docs/moshi.md §1
  // The tiny built-in Moshi-TTT model (docs/moshi.md §7 sizes, 4 layers, TTT on the middle ones).
  static SchemaConfig tiny(TTTVariant variant = TTTVariant::fork_hybrid);
};

struct ParamDecl {
  std::string name;            // checkpoint key
  std::vector<int64_t> shape;
  std::string module;          // inventory group, e.g. "transformer.attn", "ttt.inner"
  std::string role;            // sibling group for the frozen finding, e.g. "norm_gain", "gate_alpha"
  InitRule init;
  bool consumed = true;        // the library's forward reads it for this configuration
  std::string unused_reason;   // why not (when !consumed), citing the spec
  std::string duplicate_of;    // same tensor stored under another key (fork original_layer copy)
  bool buffer = false;         // a persistent buffer, not a parameter (In-Place w_down_pretrained)
  int layer = -1;              // transformer layer index (main transformer), else -1
  int64_t numel() const;
};

// A product of parameter factors y = f_1 * f_2 * ... (e.g. V̂ = W_target(conv(emb))). When every
// factor is exactly zero none of them can receive a gradient (seed 003). A factor is a sum of
// terms (e.g. a LoRA-wrapped W_target = frozen_W + s * lora_B @ lora_A); a term is a product of
// keys; a factor is zero when each of its terms has an all-zero key.
struct ProductDecl {
  std::string name;                                   // e.g. "transformer.layers.5.gating.target_generator"
  std::vector<std::vector<std::vector<std::string>>> factors;  // factor -> term -> keys
  std::vector<std::string> factor_names;              // one per factor
  std::string remedy;
};

struct GateDecl {
  int layer = -1;
  std::string forward_key;   // forward_ssm_gating.gating_alpha
  std::string backward_key;  // backward_ssm_gating.gating_alpha
};

struct ModelSchema {
  SchemaConfig config;
  std::vector<ParamDecl> params;  // sorted by name
  std::vector<ProductDecl> products;
  std::vector<GateDecl> gates;

  const ParamDecl* find(const std::string& name) const;
  std::vector<std::string> consumed_names() const;
  std::vector<std::string> unused_names() const;
  int64_t total_params() const;  // all declared tensors, duplicates included
 private:
  friend ModelSchema declare_parameters(const SchemaConfig&);
  std::map<std::string, std::size_t> index_;
};

// The configuration as a JSON object string (stored as "mtt.schema_config" in the metadata of
// checkpoints the library writes) and back; unknown fields are ignored, missing ones keep the
// moshiko defaults. Throws Error(file, "mtt.schema_config", reason) on malformed JSON.
std::string schema_config_to_json(const SchemaConfig& config);
SchemaConfig schema_config_from_json(const std::string& json, const std::string& file = "");

// Declares every parameter of the model for `config`. Throws mtt::Error(kind Usage) on an
// inconsistent configuration (e.g. dim not divisible by the TTT heads).
ModelSchema declare_parameters(const SchemaConfig& config);

}  // namespace mtt::moshi
