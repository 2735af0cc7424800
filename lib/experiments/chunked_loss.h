#pragma once
// Language-model losses as chunked sequences for the truncated-BPTT trainer (experiments/tbptt.h):
// the toy TTT LM's next-token loss and the Moshi LM's training loss as moshi-finetune computes it
// (train.py: text_loss + audio_loss, each finetune/loss.py compute_loss_with_mask), evaluated
// chunk by chunk with a streaming state that carries the TTT inner weights and the KV caches.
#include <ATen/ATen.h>

#include <memory>

#include "experiments/tbptt.h"
#include "experiments/toy_lm.h"
#include "moshi/lm.h"
#include "ttt/ttt_layer.h"

namespace mtt::experiments {

// The toy LM's lm_loss (mean next-token cross-entropy over positions 0..L-2 of tokens [B, L]),
// chunk by chunk from `state` (an undefined state starts from W0). Each chunk's share is its mean
// times (its targets / all targets), so one chunk is exactly ToyTTTLM::lm_loss.
ChunkedSequence toy_lm_sequence(ToyTTTLM& model, const at::Tensor& tokens, std::shared_ptr<ttt::TTTState> state,
                                const ttt::Options& opt = {});

// moshi-finetune's loss weights (TrainArgs: first_codebook_weight_multiplier, text_padding_weight;
// the text padding ids are the model's existing_text_padding_id and existing_text_end_padding_id).
struct MoshiLossOptions {
  double first_codebook_weight_multiplier = 1.0;
  double text_padding_weight = 0.5;
};

struct MoshiLoss {
  at::Tensor text, audio;  // scalars; each sum(w * CE) / sum(w) (0 when no target has weight)
  at::Tensor total() const { return text + audio; }
};

// compute_loss_with_mask's terms on LMModel::forward's output for codes [B, 1 + n_q, T] (text,
// Moshi codebooks, user codebooks; -1 = no target), as train.py calls it on the text and the dep_q
// Moshi streams: the weights (mask; text padding targets x text_padding_weight; codebook 0 x
// first_codebook_weight_multiplier), the per-position cross-entropies in float32 (0 where the
// weight is 0) and the two scalars sum(w * ce) / sum(w).
struct MoshiLossTerms {
  at::Tensor text_ce, text_w;    // [B, 1, T]
  at::Tensor audio_ce, audio_w;  // [B, dep_q, T]
  MoshiLoss loss;
};
MoshiLossTerms moshi_output_loss(const moshi::LMConfig& c, const moshi::LMOutput& out, const at::Tensor& codes,
                                 const MoshiLossOptions& opt = {});

// The reference: LMModel::forward on codes, then moshi_output_loss.
MoshiLoss moshi_lm_loss(moshi::LMModel& lm, const at::Tensor& codes, const MoshiLossOptions& opt = {});

// A fresh streaming state for chunks of up to `chunk` frames. Every ring KV cache is widened to
// context + chunk - 1 slots so that each query of a chunk still sees its whole attention window
// (the ring of capacity `context` loses the chunk-1 oldest keys, docs/moshi.md §2.6 note); the
// attention mask still limits every query to `context` keys, so the chunked forward equals the
// full-sequence forward.
std::shared_ptr<moshi::LMState> moshi_tbptt_state(moshi::LMModel& lm, int64_t batch, int64_t chunk);

// The same loss in the delayed layout (the positions LMModel::forward undelays), chunk by chunk
// through forward_text with `state` (from moshi_tbptt_state) and the teacher-forced depformer.
// Each share is normalised by the weight of the whole sequence, so the shares sum to
// moshi_lm_loss(...).total() when the chunked forward equals the full one (chunks that are
// multiples of the TTT mini-batch: the fork's streaming pads every call to whole mini-batches).
ChunkedSequence moshi_lm_sequence(moshi::LMModel& lm, const at::Tensor& codes, std::shared_ptr<moshi::LMState> state,
                                  const MoshiLossOptions& opt = {});

}  // namespace mtt::experiments
