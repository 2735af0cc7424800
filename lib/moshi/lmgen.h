#pragma once
// Generation with the Moshi LM (docs/moshi.md §3 sampling, §6.2-6.3 LMGen): one frame per step,
// user audio codes in, text token + audio codes out, the delay cache of upstream LMGen, the
// temporal transformer streaming through its ring KV caches and the depformer in a fresh state
// per step.
//
// Sampling follows utils/sampling.py exactly, random draws included: probs = softmax(logits/temp)
// in f32, top-k (not renormalised), then the "exponential race" argmax(p / Exp(1)) with one
// exponential_ draw of shape [B, k] per token, text first then codebooks 0..dep_q-1. With the same
// generator seed (torch.manual_seed(s) == a CPU generator seeded s) and the same LibTorch, the
// tokens equal upstream's token for token; greedy (argmax) when use_sampling is false or temp <= 0.
#include <ATen/ATen.h>
#include <cstdint>
#include <optional>
#include <vector>

#include "moshi/lm.h"

namespace mtt::moshi {

struct SamplingOptions {
  bool use_sampling = true;
  double temp = 0.8, temp_text = 0.7;      // LMGen defaults (lm.py:557-573)
  int64_t top_k = 250, top_k_text = 25;
  static SamplingOptions from_config(const LMConfig& c);  // lm_gen_config overrides
  static SamplingOptions greedy();
};

// logits [B, V] (any float dtype) -> tokens [B] int64 (sampling.py:sample_token).
at::Tensor sample_token(const at::Tensor& logits, bool use_sampling, double temp, int64_t top_k,
                        at::Generator& gen);

class LMGen {
 public:
  LMGen(LMModel& model, SamplingOptions opt, uint64_t seed = 4242);
  // Starts a new stream of `batch` rows (fresh KV caches, TTT states, delay cache, offsets).
  void reset(int64_t batch);
  // Per-row reset for batched serving (upstream LMGen.reset_streaming(reset_mask), lm.py
  // _LMGenState.reset): rows with mask[b] (bool [B]) restart at offset 0 (start tokens, empty KV
  // rows, TTT rows back to W0); their delay-cache columns are not cleared, as upstream, because a
  // restarted row only reads columns it has written since. The host step counter restarts too, so
  // step() returns an undefined tensor for the next max_delay steps unless support_out_of_sync.
  void reset(const at::Tensor& mask);
  // LMGen.set_exec_mask (streaming.py): rows with mask[b] false take part in the next steps (on
  // start tokens) but nothing of theirs moves: offsets, delay cache, KV and TTT rows; their output
  // rows hold -2. A per-row reset makes a row execute again.
  void set_exec_mask(const at::Tensor& mask);
  // Upstream's support_out_of_sync: always return tokens, with -2 (ungenerated) in the rows that
  // are still priming after their reset.
  void set_support_out_of_sync(bool on) { out_of_sync_ = on; }
  // user_codes [B, n_q - dep_q, 1] (extra codebooks ignored). Returns [B, 1 + dep_q, 1] aligned
  // tokens (text, audio 0..dep_q-1), or an undefined tensor while the first max_delay steps prime
  // (rows still priming after a per-row reset hold -2).
  at::Tensor step(const at::Tensor& user_codes);
  // The same, with the depformer's audio tokens replaced by `forced` [B, dep_q] (teacher forcing).
  at::Tensor step_forced(const at::Tensor& user_codes, const at::Tensor& forced);

  at::Tensor last_text_logits() const { return last_text_logits_; }  // [B, text_card_out], f32
  at::Tensor last_hidden() const { return last_hidden_; }            // [B, 1, dim]
  int64_t offset() const { return offset_cpu_; }                 // host steps since the last reset
  const std::vector<int64_t>& offsets() const { return offsets_; }  // per row
  at::Generator& generator() { return gen_; }
  LMState& state() { return state_; }

 private:
  at::Tensor depformer_step(const at::Tensor& text_token, const at::Tensor& h);
  LMModel& model_;
  SamplingOptions opt_;
  at::Generator gen_;
  int64_t batch_ = 0, offset_cpu_ = 0;
  std::vector<int64_t> offsets_;  // per row (upstream _LMGenState.offsets)
  std::vector<bool> exec_;        // per row (upstream State.exec_mask)
  bool out_of_sync_ = false;
  at::Tensor cache_;    // [B, K, max_delay + 2] int64, -2 = ungenerated
  at::Device device_ = at::kCPU;  // where the model's parameters live (inputs go there)
  at::Tensor initial_;  // [1, K, 1]
  LMState state_;
  at::Tensor last_text_logits_, last_hidden_;
};

}  // namespace mtt::moshi
