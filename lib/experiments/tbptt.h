#pragma once
// Truncated back-propagation through time over consecutive chunks of one training sequence
// (docs/ttt.md §7c, "training on consecutive chunks of one file ... detach at chunk boundaries
// (TBPTT)"). The forward state (TTT inner weights, KV caches) is carried from chunk to chunk, so
// chunk k sees everything before it; the graph is cut at every boundary, so chunk k's loss sends
// no gradient into earlier chunks and the memory of one backward is that of one chunk.
//
// The loop backpropagates each chunk's share of the sequence loss before running the next chunk.
// The shares are normalised by the whole sequence (not by the chunk), so with one chunk the step is
// the plain trainer's step and with several the loss value is the sequence loss.
#include <ATen/ATen.h>

#include <cstdint>
#include <functional>
#include <utility>
#include <vector>

#include "experiments/trainer.h"
#include "moshi/transformer.h"

namespace mtt::experiments {

// One training sequence as the TBPTT loop drives it.
struct ChunkedSequence {
  int64_t length = 0;  // positions (tokens, Mimi frames)
  // Forward of positions [start, start + len) from the carried state (advancing it); returns this
  // chunk's share of the sequence loss with a graph to the parameters, and its token count.
  std::function<StepLoss(int64_t start, int64_t len)> chunk_loss;
  // Cuts the carried state's graph, keeping its values (TTTState::detach_, KV caches).
  std::function<void()> detach_state;
};

// [start, len) of consecutive chunks of `chunk` positions covering [0, length); the last may be
// shorter. chunk <= 0 (or >= length): one chunk.
std::vector<std::pair<int64_t, int64_t>> chunk_spans(int64_t length, int64_t chunk);

// Forward + backward of every chunk in order, each share divided by `divisor` (the trainer's
// num_microbatches), the state detached after every chunk (it keeps its values, no graph).
// Returns the summed (undivided) loss.
MicroStep backward_in_chunks(const ChunkedSequence& seq, int64_t chunk, double divisor);

// The trainer (AdamW + OneCycle, clipping, accumulation, metrics, checkpoints) on sequences
// trained chunk by chunk: make_sequence(step, micro) builds a micro-batch's sequence with a fresh
// carried state; cfg.tbptt_chunk is the chunk length.
TrainResult train_tbptt(const NamedParams& params, const TrainConfig& cfg,
                        const std::function<ChunkedSequence(int step, int micro)>& make_sequence,
                        const std::string& run_dir, const nlohmann::json& model_config, const TrainHooks& hooks = {},
                        bool progress = true);

// Detaches a Moshi streaming state in place: every layer's ring KV cache (copied, so later
// in-place writes of the ring cannot reach a freed graph) and its TTT state (TTTState::detach_).
void detach_streaming_state(moshi::TransformerState& state);

}  // namespace mtt::experiments
