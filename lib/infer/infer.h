#pragma once
// Speech in, speech out with a Moshi(-TTT) model (docs/moshi.md §6): WAV -> Mimi encode, frame by
// frame -> LMGen step -> Mimi decode -> WAV, with the gating overrides of seed 001. "alpha A" is
// the value the gate's tanh sees: the TTT branch is multiplied by tanh(A) and ADDED to the
// residual (it is not a blend); `multiplier` sets tanh(alpha) itself (0 = base Moshi, 1 = the full
// TTT branch).
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

namespace mtt::moshi {
class LMModel;
struct LMConfig;
struct SamplingOptions;
}

namespace mtt::infer {

struct GateOverride {
  std::optional<double> alpha;              // every TTT gate, forward and backward
  std::optional<double> multiplier;         // replaces tanh(alpha) in every gate
  std::map<int, double> alpha_per_layer;    // layer -> alpha (both gates of that layer)
};

// Adds one `--force-gating-alpha-layer LAYER=A` (A finite). Throws mtt::Error(Usage) naming the
// flag for anything else; layers are checked against the model when it is built.
void add_layer_alpha(GateOverride& g, const std::string& spec);

// --threads above this is refused (one OpenMP thread each; 10^5 of them hang the start).
inline constexpr int kMaxThreads = 256;
// --batch-size above this is refused (each row holds its own KV caches and output in memory).
inline constexpr int kMaxBatch = 1024;

struct InferOptions {
  std::string input, output, stereo_output;
  bool tiny = false;                 // built-in tiny Moshi-TTT + tiny Mimi with random weights
                                     // (with `checkpoint`: the tiny model with those weights)
  std::string random_preset;         // random weights of an LMConfig preset (medium_300m, moshiko_7b)
  std::string ttt_layers;            // TTT layers of a random model ("none", "all", "middle", "29,30,31")
  std::string checkpoint;            // Moshi(-TTT) weights: file, shards, model folder or run dir
  std::string moshi_weight;          // base weights under an adapter-only run (moshi's --moshi-weight)
  std::string lora_weight;           // LoRA / adapter file over the weights (moshi's --lora-weight)
  bool fuse_lora = false;            // merge LoRA adapters at load (moshi's --fuse-lora); else kept separate
  std::string hf_repo;               // a local model folder: base weights, Mimi, tokenizer, config defaults
  std::optional<int64_t> step;       // run dirs: this checkpoint step
  std::string fork_numerics = "auto";  // auto | fork | ours (moshi/model_source.h)
  std::string mimi_weight, tokenizer, config;
  std::string dtype = "f32";         // LM compute dtype: f32 | bf16 (norms, softmax, statistics stay fp32)
  std::string device = "cpu";        // cpu | cuda | cuda:N
  int threads = 0;                   // intra-op CPU threads (0: LibTorch's default, one per core)
  uint64_t seed = 4242;
  bool greedy = false;
  // Unset: the checkpoint's lm_gen_config (its config.json), else LMGen's defaults (0.8, 0.7, 250,
  // 25), as moshi's run_inference passes checkpoint_info.lm_gen_config. A given flag replaces its
  // own value only.
  std::optional<double> temp, temp_text;
  std::optional<int64_t> top_k, top_k_text;
  // moshi's --batch-size: the input runs as this many rows sampled independently; with more than
  // one, OUTPUT.wav becomes OUTPUT-0.wav ... OUTPUT-(N-1).wav (as run_inference names them).
  int batch_size = 1;
  GateOverride gates;
  std::string stats_json;
  bool progress = true;
  // NaN or Inf in the model's weights make every frame's codes the same: refused, naming the
  // tensor, unless this is set (then one warning line).
  bool allow_nonfinite = false;
};

// Where the weights come from, as moshi's CLI reads the flags: `moshi_weight` without `checkpoint`
// names the weights themselves, `hf_repo` without either is the folder that holds them.
// run_inference, run_score and model_options_of apply it first (it is idempotent).
InferOptions with_weight_sources(InferOptions opt);

// The options' ranges and combinations (threads, temperatures, top-k, gate overrides, TTT layers of
// a random model): mtt::Error(Usage) naming the flag. run_inference calls it first.
void check_infer_options(const InferOptions& opt);

// moshi's --batch-size naming: `output` itself for one row, else "<stem>-<row><ext>" beside it.
std::string batch_output_path(const std::string& output, int row, int batch_size);

// The sampling generation uses: --greedy, else the checkpoint's lm_gen_config (config.json) with each
// given flag replacing its value. `source` says where each value came from, for the run summary.
moshi::SamplingOptions sampling_options_of(const InferOptions& opt, const moshi::LMConfig& config,
                                           nlohmann::json* source = nullptr);

struct GateStats {
  int layer = 0;
  std::string gate;  // forward_ssm_gating | backward_ssm_gating
  double alpha_mean = 0, alpha_min = 0, alpha_max = 0, alpha_std = 0;
  double multiplier_mean_pct = 0;  // 100 * mean tanh(clamp(alpha)) as the forward applies it
  bool overridden = false;
};

struct InferResult {
  std::vector<GateStats> gates;     // after overrides (what generation uses)
  std::vector<std::string> overrides_applied;  // "transformer.layers.3...gating_alpha := 0"
  std::string text;                 // row 0 (the only row unless batch_size > 1)
  std::vector<int64_t> text_tokens;
  int64_t frames = 0;
  double audio_seconds = 0, wall_seconds = 0, rtf = 0;
  std::vector<std::vector<int64_t>> audio_codes;  // [frame][codebook] of the model's stream (row 0)
  std::vector<std::string> texts;                 // every row's text (batch_size > 1)
  std::vector<std::vector<int64_t>> texts_tokens; // every row's text tokens
  // What ran: model label, dtype, device, threads, seed, sampling (and where each value came from).
  nlohmann::json run;
  std::vector<std::string> outputs_written;       // every file put in place, in order
  nlohmann::json to_json() const;
  // The run summary `ttt-infer --json` prints: the above without the per-frame codes.
  nlohmann::json summary_json() const;
};

InferResult run_inference(const InferOptions& opt, std::ostream& log);

struct ModelOptions;
// The model part of the flags as build_models takes it; a bad --dtype or --device is a usage Error.
ModelOptions model_options_of(const InferOptions& opt);

// Applies the gate overrides to every TTT gate of `lm` (forward and backward), logs each override
// and the resulting gate table on `log`, and returns the statistics the model now runs with.
std::vector<GateStats> apply_gate_overrides(moshi::LMModel& lm, const GateOverride& gates, std::ostream& log,
                                            std::vector<std::string>* applied = nullptr);

}  // namespace mtt::infer
