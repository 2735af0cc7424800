#include "experiments/tbptt.h"

#include <algorithm>

#include "core/error.h"
#include "moshi/hybrid.h"

namespace mtt::experiments {

std::vector<std::pair<int64_t, int64_t>> chunk_spans(int64_t length, int64_t chunk) {
  std::vector<std::pair<int64_t, int64_t>> spans;
  if (length <= 0) return spans;
  if (chunk <= 0 || chunk >= length) return {{0, length}};
  for (int64_t s = 0; s < length; s += chunk) spans.emplace_back(s, std::min(chunk, length - s));
  return spans;
}

MicroStep backward_in_chunks(const ChunkedSequence& seq, int64_t chunk, double divisor) {
  check_internal(static_cast<bool>(seq.chunk_loss), "backward_in_chunks: no chunk_loss");
  MicroStep ms;
  const auto spans = chunk_spans(seq.length, chunk);
  for (const auto& [start, len] : spans) {
    StepLoss sl = seq.chunk_loss(start, len);
    // Backward now, before the next chunk's forward: this chunk's graph (activations, the state's
    // history inside the chunk) is freed before the next one is built.
    if (sl.loss.requires_grad()) (sl.loss / divisor).backward();
    ms.loss += sl.loss.item<double>();
    ms.tokens += sl.tokens;
    ms.real_tokens = (ms.real_tokens < 0 ? 0 : ms.real_tokens) + (sl.real_tokens < 0 ? sl.tokens : sl.real_tokens);
    // Cut after every chunk: the carried values stay, their (freed) history goes.
    if (seq.detach_state) seq.detach_state();
  }
  return ms;
}

TrainResult train_tbptt(const NamedParams& params, const TrainConfig& cfg,
                        const std::function<ChunkedSequence(int, int)>& make_sequence, const std::string& run_dir,
                        const nlohmann::json& model_config, const TrainHooks& hooks, bool progress) {
  return train_micro(
      params, cfg,
      [&](int step, int micro, double divisor) {
        ChunkedSequence seq = make_sequence(step, micro);
        return backward_in_chunks(seq, cfg.tbptt_chunk, divisor);
      },
      run_dir, model_config, hooks, progress);
}

void detach_streaming_state(moshi::TransformerState& st) {
  for (auto& kv : st.kv) {
    // nn::RingKVCache::complete writes the ring in place; a detached alias would share the version
    // counter with tensors saved by the previous chunk's (already freed) graph, a copy does not.
    if (kv.keys.defined()) kv.keys = kv.keys.detach().clone();
    if (kv.values.defined()) kv.values = kv.values.detach().clone();
  }
  for (auto& t : st.ttt)
    if (t) t->detach_();  // fork TTT and In-Place fast weights alike
}

}  // namespace mtt::experiments
