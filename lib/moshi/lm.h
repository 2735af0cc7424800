#pragma once
// The Moshi LM (docs/moshi.md §2-4): embeddings summed, temporal transformer, out_norm, text head;
// depformer with per-step weights/schedule, multi-linear inputs, low-rank embeddings and output
// heads; the full-sequence training/scoring forward with delays (upstream LMModel.forward) and
// the pieces LMGen streams with. Checkpoints load by their upstream names, zero-copy from the mmap
// when the dtype matches, both stored attention forms (§4.1), with an exact key report.
#include <ATen/ATen.h>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "moshi/config.h"
#include "moshi/lora.h"
#include "moshi/transformer.h"

namespace mtt::moshi {

// ScaledEmbedding (lm_utils.py:66-124): id -1 -> exact zero vector; optional low-rank projection.
struct ScaledEmbedding {
  at::Tensor weight;  // [num, low_rank or dim]
  Linear low_rank;    // [dim, low_rank] when low-rank
  at::Tensor operator()(const at::Tensor& ids) const;
  void collect(const std::string& prefix, ParamList& out);  // the table: ParamInit::embedding
};

struct LMOutput {
  at::Tensor logits;       // [B, dep_q, T, card], NaN where invalid
  at::Tensor mask;         // [B, dep_q, T] bool
  at::Tensor text_logits;  // [B, 1, T, text_card_out]
  at::Tensor text_mask;    // [B, 1, T] bool
};

struct LoadOptions {
  at::ScalarType dtype = at::kFloat;  // compute/parameter dtype (bf16 or f32)
  bool strict = true;                 // throw on missing / unexpected / mis-shaped keys
  // Keys the caller knows are unused (e.g. from the audit), not reported as unexpected.
  std::vector<std::string> ignore_unexpected;
  // LoRA (moshi/lora.h). enable: every Moshi linear reads `<linear>.lora_A.weight` /
  // `.lora_B.weight` and its base from `<linear>.weight` or `<linear>.frozen_W.weight`; a linear
  // the tensors give no adapter for gets none (moshi's untouched zero lora_B). rank 0: from the
  // tensors. fuse_lora: merged at load (moshi's --fuse-lora), else kept separate (the forward adds
  // the low-rank term; named_parameters() gives the LoRALinear names).
  LoraSettings lora;
  bool fuse_lora = false;
};

struct LoadReport {
  std::vector<std::string> missing;      // model keys with no tensor in the file
  std::vector<std::string> unexpected;   // file keys the model does not declare
  std::vector<std::string> mis_shaped;   // "key: file [..] vs model [..]"
  std::vector<std::string> duplicates;   // fork duplicate copies checked equal and skipped
  int64_t zero_copy = 0, converted = 0;  // tensors viewed in place vs. cast/copied
  int64_t lora_linears = 0;              // linears that got a low-rank term from the tensors
  int64_t lora_absent = 0;               // LoRA on, but no adapter tensors for these linears
  bool lora_fused = false;               // merged into the weights at load
  bool ok() const { return missing.empty() && unexpected.empty() && mis_shaped.empty(); }
  std::string summary() const;
};

// Streaming state of the LM (temporal transformer + TTT states); the depformer gets a fresh state
// per time step (docs/moshi.md §2.6).
struct LMState {
  TransformerState transformer;
  // Per-row reset (upstream LMModel.reset_streaming(reset_mask)): rows with mask[b] (bool [B])
  // restart from position 0 with empty KV rows and TTT state rows back to W0; other rows untouched.
  void reset(const at::Tensor& mask) { transformer.reset(mask); }
  // Upstream LMModel.set_exec_mask: rows with mask[b] false take part in the next calls without
  // their state moving (offsets, KV rows, TTT rows).
  void set_exec_mask(const at::Tensor& mask) { transformer.set_exec_mask(mask); }
};

class LMModel {
 public:
  // Builds the module tree with parameters on the meta device (no memory): call init_random(),
  // load() or load_file() next.
  explicit LMModel(LMConfig cfg);
  ~LMModel();
  LMModel(const LMModel&) = delete;
  LMModel& operator=(const LMModel&) = delete;

  const LMConfig& config() const { return cfg_; }
  at::ScalarType dtype() const { return dtype_; }

  // Every parameter under its module-form checkpoint name (in_projs.{k}), registration order,
  // with the declaration its module registered it with (init rule, dtype class, buffer).
  ParamList declared_parameters();
  NamedTensors named_parameters();  // the same, names and handles only
  std::map<std::string, at::Tensor> state_dict();  // name -> tensor (aliases)

  // Deterministic random weights (tests, benchmarks): linears N(0, 1/sqrt(in)), embeddings N(0, 1),
  // norm gains 1 + N(0, 0.1), LayerNorm biases N(0, 0.1).
  void init_random(uint64_t seed, at::ScalarType dtype = at::kFloat);
  // Loads upstream names (legacy fused `in_proj_weight`/`out_proj.weight` split into per-step
  // row blocks, or `in_projs.{k}.weight`), fork hybrid names for hybrid layers. Tensors are
  // assigned (views), cast to opt.dtype when needed. Throws mtt::Error(file, key) when strict and
  // the report is not ok.
  LoadReport load(const std::map<std::string, at::Tensor>& tensors, const LoadOptions& opt = {},
                  const std::string& file = "");
  // Opens a .safetensors file through the mmap (zero-copy views where the dtype matches).
  LoadReport load_file(const std::string& path, const LoadOptions& opt = {});
  void set_requires_grad(bool on);

  // --- LoRA (moshi/lora.h) ---
  // Wraps every Moshi linear with a fresh adapter as moshi-finetune initialises one (lora_A
  // U(+-1/sqrt(in)), the kaiming-uniform bound; lora_B zero) in the weights' dtype: the forward is
  // unchanged until lora_B moves. The weights must be loaded or initialised first.
  void enable_lora(const LoraSettings& lora, uint64_t seed = 0);
  // Merges every adapter into its weight (moshi's replace_lora_with_linear).
  void fuse_lora();
  // Number of linears that carry a separate low-rank term.
  int64_t lora_linears() const;

  // --- forward passes ---
  // Upstream LMModel.forward: codes [B, n_q+1, T] (undelayed) -> logits aligned with codes.
  LMOutput forward(const at::Tensor& codes);
  // forward_text: sequence [B, n_q+1, S] (delayed, already with start tokens) -> (h after out_norm
  // [B, S, dim], text_logits [B, 1, S, text_card_out]). state == nullptr: full sequence.
  std::pair<at::Tensor, at::Tensor> forward_text(const at::Tensor& sequence, LMState* state = nullptr);
  // Teacher-forced depformer: sequence [B, n_q+1, T] (delayed, shifted), h [B, T, dim]
  // -> logits [B, dep_q, T, card].
  at::Tensor forward_depformer_training(const at::Tensor& sequence, const at::Tensor& h);
  // One depformer step k (0..dep_q-1) in a per-time-step state: token [B] (text for k = 0, else
  // the audio token of codebook k-1), h [B, 1, dim] -> logits [B, card].
  at::Tensor depformer_step(int64_t k, const at::Tensor& token, const at::Tensor& h, TransformerState& dep_state);

  LMState new_state(int64_t batch);
  TransformerState new_depformer_state(int64_t batch);

  StreamingTransformer& transformer() { return *transformer_; }
  StreamingTransformer& depformer() { return *depformer_; }

 private:
  void build();
  // Every linear moshi's replace_all_linear_with_lora wraps (moshi/lora.h), TTT projections excluded.
  std::vector<Linear*> wrappable_linears();
  LMConfig cfg_;
  at::ScalarType dtype_ = at::kFloat;
  std::vector<ScaledEmbedding> emb_;
  ScaledEmbedding text_emb_;
  std::unique_ptr<StreamingTransformer> transformer_;
  Norm out_norm_;
  Linear text_linear_;
  std::vector<Linear> depformer_in_;
  std::vector<ScaledEmbedding> depformer_emb_;
  ScaledEmbedding depformer_text_emb_;
  std::unique_ptr<StreamingTransformer> depformer_;
  std::vector<Norm> depformer_norms_;  // empty = Identity
  std::vector<Linear> linears_;
  std::vector<std::shared_ptr<class HybridBlock>> hybrids_;  // per main layer (null when plain)
  std::vector<std::shared_ptr<class InPlaceBlock>> inplace_;  // per main layer (null unless In-Place TTT)
  std::shared_ptr<void> keep_alive_;   // mmap'd file of zero-copy parameters
};

// The training input of upstream LMModel.forward (lm.py:322-340): codes [B, K, T] (undelayed) ->
// [B, K, T + 1], the initial tokens in front of the delayed codes. Throws when K != num_codebooks.
at::Tensor delayed_with_initial(const LMConfig& c, const at::Tensor& codes);

// Upstream _delay_sequence / _undelay_sequence (lm_utils.py:9-40).
at::Tensor delay_sequence(const std::vector<int64_t>& delays, const at::Tensor& codes, const at::Tensor& initial);
std::pair<at::Tensor, at::Tensor> undelay_sequence(const std::vector<int64_t>& delays, const at::Tensor& logits,
                                                   double fill_value);

}  // namespace mtt::moshi
