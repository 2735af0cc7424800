#pragma once
// Teacher-forced scoring (issue 12 item 4): codes (or a stereo WAV, Mimi-encoded) in, moshi's
// LMOutput and per-position cross-entropies out, so that a checkpoint can be judged by its loss
// along a long context (the TTT papers' loss-by-position view) without sampling anything.
//
// Input layouts:
//  - codes file (.safetensors, key `codes`, integer [B, 1 + n_q, T]): moshi's LMModel.forward
//    input: row 0 text, rows 1..dep_q Moshi's codebooks, the rest the user's; -1 is the zero
//    token (zero embedding, no target), every other value must be a valid token id.
//  - audio (any other extension; a stereo file libsndfile reads, any rate): both channels are
//    Mimi-encoded, channel 0 = Moshi and channel 1 = the user as moshi-finetune's data and
//    `ttt-sweep data speech` lay them out (channels = moshi_user), or channel 0 = the user and
//    channel 1 = Moshi as `ttt-infer --stereo-output` writes them (channels = user_moshi; Moshi's
//    channel there lags by the model's priming frames). The text stream is the text padding token
//    throughout (no alignments are read), as `ttt-sweep train` does. B = 1.
//
// Output (safetensors, float32 unless noted, written atomically):
//   logits [B, dep_q, T, card], mask [B, dep_q, T] (bool), text_logits [B, 1, T, text_card],
//   text_mask [B, 1, T] (bool): LMModel.forward's LMOutput, names, layouts, NaN fill as upstream;
//   text_loss [B, T], audio_loss [B, T], audio_loss_per_codebook [B, dep_q, T]: cross-entropies,
//   NaN where there is no target; text_weight [B, T], audio_weight [B, T]: the weights of
//   moshi-finetune's compute_loss_with_mask (finetune/loss.py) at each position;
//   codes: the scored codes (int64).
// Per position: w_k = mask_k (times first_codebook_weight_multiplier for codebook 0) and
//   audio_loss = sum_k w_k CE_k / sum_k w_k (NaN where sum_k w_k = 0), audio_weight = sum_k w_k;
//   text_loss = CE where text_mask, text_weight = text_mask (times text_padding_weight where the
//   target is existing_text_padding_id or existing_text_end_padding_id).
// So compute_loss_with_mask's scalars (train.py's text_loss, audio_loss) are
//   sum(weight * loss) / sum(weight) over the positions with weight > 0 (summary: text_loss, audio_loss).
//
// Streaming (ScoreOptions::streaming): frame by frame through the LM's streaming state (ring KV
// caches, TTT states): the temporal transformer gets column t of the delayed sequence that
// LMModel.forward builds (initial tokens in front), the depformer runs one codebook at a time
// in a fresh per-frame state (as LMGen.depformer_step) fed with the tokens of column t + 1
// (teacher forcing), and the result is undelayed as forward() does. For a model whose streamed
// forward is exact (no TTT layer, or a TTT mini-batch of 1 with a persistent state) this equals
// the full-sequence scores within float noise. A TTT layer with mini-batch b > 1 pads every call
// to b frames (the fork's streaming, which its pads update), so its streamed scores differ.
// Note: upstream LMGen feeds the user's frame s at step s + delay, one step earlier than
// LMModel.forward (s + delay + 1); scoring follows forward(), the training layout.
#include <nlohmann/json.hpp>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

#include <ATen/ATen.h>

#include "core/progress.h"
#include "infer/infer.h"
#include "moshi/lm.h"

namespace mtt::infer {

enum class StereoLayout { moshi_user, user_moshi };

struct ScoreOptions {
  bool streaming = false;
  StereoLayout channels = StereoLayout::moshi_user;
  // compute_loss_with_mask's weights. run_score: unset = the run's args.yaml when the model is a
  // moshi-finetune run dir that sets them, else moshi-finetune's TrainArgs defaults (0.5, 1.0).
  std::optional<double> text_padding_weight, first_codebook_weight_multiplier;
};

// Per-position losses of an LMOutput (see the header comment); every tensor float32 on the CPU.
struct PositionLosses {
  at::Tensor text_loss, audio_loss;   // [B, T]
  at::Tensor audio_loss_per_codebook; // [B, dep_q, T]
  at::Tensor text_weight, audio_weight;  // [B, T]
  double text_mean = 0, audio_mean = 0;  // compute_loss_with_mask's scalars (NaN: no weight)
};
// Unset weights are moshi-finetune's defaults here.
PositionLosses position_losses(const moshi::LMConfig& c, const moshi::LMOutput& out, const at::Tensor& codes,
                               const ScoreOptions& opt);

// The streamed teacher-forced forward (see the header comment): the same LMOutput as
// LMModel::forward(codes) for a model whose streaming is exact. `progress` is advanced per frame.
moshi::LMOutput streamed_forward(moshi::LMModel& lm, const at::Tensor& codes, Progress* progress = nullptr);

// Reads a codes file (key `codes`) and checks it against the model: [B, 1 + n_q, T], token ids
// in range (-1 allowed). Errors name the file and the key.
at::Tensor read_codes(const std::string& path, const moshi::LMConfig& c);

struct ScoreResult {
  std::string input, output, mode, model;
  int64_t batch = 0, frames = 0;
  std::vector<int64_t> logits_shape, text_logits_shape;
  double text_loss = 0, audio_loss = 0;  // compute_loss_with_mask (NaN when no position has weight)
  double text_padding_weight = 0, first_codebook_weight_multiplier = 0;  // the weights used
  std::string loss_weights_from;         // "flags", the run's args.yaml, or "moshi-finetune defaults"
  double wall_seconds = 0;               // the LM forward(s) only
  std::vector<GateStats> gates;
  std::vector<std::string> overrides_applied;
  nlohmann::json to_json() const;
};

// Builds the model from `model` (the usual ttt-infer flags; Mimi only for audio input), scores
// `model.input` and writes `model.output`.
ScoreResult run_score(const InferOptions& model, const ScoreOptions& opt, std::ostream& log);

}  // namespace mtt::infer
