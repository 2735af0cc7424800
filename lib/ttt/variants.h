#pragma once
// The named variants of the one TTT implementation (docs/architecture.md "variants are options"),
// torch-free so that the configuration model (lib/moshi/config.h) and the audit can hold them.
// Each enum has one spelling table (variants.cpp): parse_variant() for configuration files and
// flags, variant_name() for reports; an unknown spelling is an mtt::Error naming the file and key.
#include <string>

namespace mtt::ttt {

enum class InnerModel { linear, mlp };
// Reconstruction target handed to the op as "XV" (the op trains on XV - XK), docs/ttt.md §1.1 step 4, §7a.
//   correct: LN(XV - XK) + XK (unbiased std, eps recon_target_eps, shares ttt_norm gamma/beta)
//   legacy:  the fork's per-head layer_norm(XV) (biased variance), XK neither subtracted nor added
//   raw:     XV unchanged (LMPT: target = XV - XK, no LN)
enum class ReconTarget { correct, legacy, raw };
// Learning-rate matrix eta[i, j] of a mini-batch (docs/ttt.md §1.1 step 7, §1.2):
//   causal: max(0, 1/(i+1) + tau_i) * base_lr * sigmoid(x_j.w_h + c_h) / d, lower-triangular
//   dit:    base_lr * sigmoid(x_j.w_h + c_h) / (d * b) for every row, no tril (future leak, §4)
enum class Eta { causal, dit };
enum class OutputPath { post_norm_wo, skip };
enum class PadUpdates { masked, legacy };
// functional: state lives in TTTState only. legacy_batch0_copy: after an eval-mode forward, batch
// element 0's final state is copied into the parameters (fork bug b). legacy_write_params: the same
// copy on every forward, training included (fork bug c). Both legacy modes start each call from the
// parameters and ignore the TTTState contents.
enum class StateMode { functional, legacy_batch0_copy, legacy_write_params };
// RoPE on XQ/XK, adjacent-pair convention (2i, 2i+1), cos/sin computed in fp32 (docs/ttt.md §1.2):
//   none; minibatch_1d: positions modulo b over the whole head dim (LMPT/LMJAX);
//   vdit_frames: VDIT's 3-D RoPE on a 1x1 grid: the first d/4 channels rotate by the absolute
//   position t with theta^(-2i/(d/4)), the rest are untouched (golden *_rope1d files);
//   fork_audio: the Moshi-TTT fork's optional "audio" RoPE (use_rope, off by default; docs/ttt.md §6):
//   positions modulo b, frequencies theta^(-2i/d) * (0.5 + 1.5 exp(-2i/(2d))) over the whole head dim.
enum class Rope { none, minibatch_1d, vdit_frames, fork_audio };
// Query pass of a TTT-MLP with >= 3 inner layers (issue 12):
//   dual:         the textbook dual form: every layer's query output uses the weights as updated
//                 by the mini-batch's own tokens up to the query (W_k - eta @ grad terms).
//   fork_updated: the fork's compute_multi_layer_mini_batch: the query pass runs through the
//                 already fully updated W_k / b_k of the mini-batch end.
enum class MultiLayerQuery { dual, fork_updated };
// What a streamed (frame-by-frame) TTT layer keeps between calls (issue 12):
//   persistent:   the adapted state carries over, per batch element (what persistent_states: true
//                 promises).
//   fork_restart: the fork's 2-layer TTTMLP.ttt never writes its state back: every call restarts
//                 from W0 (its multi-layer path does carry the state).
//   fork_batch0:  the fork's TTTMLPMultiLayer in eval mode writes batch element 0's end state into
//                 its parameters after every call, so every element continues from element 0's
//                 state (the same as persistent for one stream).
enum class StreamingState { persistent, fork_restart, fork_batch0 };

// What the Moshi-TTT fork (AlufRon/claude-web @ f5e977ac) computes for an inner model of
// `ttt_mlp_layers` layers (1 = TTT-Linear): its query pass (fork_updated from 3 layers on,
// TTTMLPMultiLayer) and its streaming (TTTLinear and the 2-layer TTTMLP never write their state
// back: fork_restart; TTTMLPMultiLayer's eval path writes batch element 0's state into its
// parameters: fork_batch0).
MultiLayerQuery fork_multilayer_query(long long ttt_mlp_layers);
StreamingState fork_streaming_state(long long ttt_mlp_layers);

const char* variant_name(InnerModel v);
const char* variant_name(ReconTarget v);
const char* variant_name(Eta v);
const char* variant_name(OutputPath v);
const char* variant_name(PadUpdates v);
const char* variant_name(StateMode v);
const char* variant_name(Rope v);
const char* variant_name(MultiLayerQuery v);
const char* variant_name(StreamingState v);

// Parses `text` into `out`; throws mtt::Error(file, key, "unknown value 'x' (one of: a, b)").
void parse_variant(const std::string& text, InnerModel& out, const std::string& file, const std::string& key);
void parse_variant(const std::string& text, ReconTarget& out, const std::string& file, const std::string& key);
void parse_variant(const std::string& text, Eta& out, const std::string& file, const std::string& key);
void parse_variant(const std::string& text, OutputPath& out, const std::string& file, const std::string& key);
void parse_variant(const std::string& text, PadUpdates& out, const std::string& file, const std::string& key);
void parse_variant(const std::string& text, StateMode& out, const std::string& file, const std::string& key);
void parse_variant(const std::string& text, Rope& out, const std::string& file, const std::string& key);
void parse_variant(const std::string& text, MultiLayerQuery& out, const std::string& file, const std::string& key);
void parse_variant(const std::string& text, StreamingState& out, const std::string& file, const std::string& key);

}  // namespace mtt::ttt
