#include "experiments/chunked_loss.h"

#include <algorithm>

#include "core/error.h"

namespace mtt::experiments {

ChunkedSequence toy_lm_sequence(ToyTTTLM& model, const at::Tensor& tokens, std::shared_ptr<ttt::TTTState> state,
                                const ttt::Options& opt) {
  ChunkedSequence seq;
  const int64_t L = tokens.size(1);
  seq.length = L;
  seq.chunk_loss = [&model, tokens, state, opt, L](int64_t start, int64_t len) {
    // Targets of this chunk: tokens[p + 1] for p in [start, start + len), p <= L - 2.
    const int64_t n = std::min(len, L - 1 - start);
    if (n <= 0) return StepLoss{at::zeros({}, at::kFloat), 0};
    at::Tensor logits = model.forward(tokens.narrow(1, start, len), state.get(), opt);
    at::Tensor pred = logits.narrow(1, 0, n).reshape({-1, logits.size(-1)});
    at::Tensor tgt = tokens.narrow(1, start + 1, n).reshape({-1});
    // Same reduction as ToyTTTLM::lm_loss, rescaled to this chunk's share of all L-1 targets.
    at::Tensor loss = at::cross_entropy_loss(pred.to(at::kFloat), tgt);
    if (n != L - 1) loss = loss * (static_cast<double>(n) / static_cast<double>(L - 1));
    return StepLoss{loss, tokens.size(0) * len};
  };
  seq.detach_state = [state] {
    if (state && state->defined()) state->detach_();
  };
  return seq;
}

namespace {

// Per-position loss weights of compute_loss_with_mask in the delayed layout: the logits of
// delayed position p for stream k predict delayed[p + 1], which is codes[p - delay_k] when
// p >= delay_k (lm_utils.py _undelay_sequence keeps exactly those); -1 codes have no target.
struct Targets {
  at::Tensor delayed;   // [B, K, T + 1] with the initial tokens in front
  at::Tensor text_w;    // [B, T] float
  at::Tensor audio_w;   // [B, dep_q, T] float
  at::Tensor real;      // [T] positions with a target, text and dep_q streams summed over B
  double text_total = 0, audio_total = 0;
};

Targets make_targets(const moshi::LMConfig& c, const at::Tensor& codes, const MoshiLossOptions& o) {
  const int64_t T = codes.size(2);
  Targets t;
  t.delayed = moshi::delayed_with_initial(c, codes);
  at::Tensor tgt = t.delayed.narrow(2, 1, T);
  at::Tensor pos = at::arange(T, codes.options());
  auto valid = [&](int64_t k) { return (pos >= c.delays[static_cast<size_t>(k)]).view({1, T}) & (tgt.select(1, k) != -1); };
  at::Tensor tw = valid(0).to(at::kFloat);
  const at::Tensor text = tgt.select(1, 0);
  at::Tensor is_pad = (text == c.existing_text_padding_id) | (text == c.existing_text_end_padding_id);
  t.text_w = at::where(is_pad, tw * o.text_padding_weight, tw);
  std::vector<at::Tensor> aw;
  at::Tensor real = valid(0).expand({codes.size(0), T}).sum(0);
  for (int64_t k = 1; k <= c.dep_q; ++k) {
    real = real + valid(k).expand({codes.size(0), T}).sum(0);
    at::Tensor w = valid(k).to(at::kFloat);
    if (k == 1) w = w * o.first_codebook_weight_multiplier;
    aw.push_back(w);
  }
  t.audio_w = at::stack(aw, 1);
  t.real = real.to(at::kLong).cpu();
  t.text_total = t.text_w.sum().item<double>();
  t.audio_total = t.audio_w.sum().item<double>();
  return t;
}

// sum(w * CE(logits, target)) with masked targets replaced by 0 (finetune/loss.py). logits
// [..., V] (any dtype, computed in fp32), target/w shaped like logits without V.
at::Tensor weighted_ce_sum(const at::Tensor& logits, const at::Tensor& target, const at::Tensor& w) {
  at::Tensor tg = at::where(w > 0, target, at::zeros_like(target)).reshape({-1});
  at::Tensor lg = logits.reshape({-1, logits.size(-1)}).to(at::kFloat);
  at::Tensor ww = w.reshape({-1});
  at::Tensor ce = at::cross_entropy_loss(lg, tg, {}, at::Reduction::None);
  return at::where(ww > 0, ce * ww, at::zeros_like(ce)).sum();
}

}  // namespace

MoshiLossTerms moshi_output_loss(const moshi::LMConfig& c, const moshi::LMOutput& out, const at::Tensor& codes,
                                 const MoshiLossOptions& o) {
  MoshiLossTerms r;
  // Masked logits are NaN in LMModel::forward: replaced before the CE (their weight is 0), and
  // masked targets by 0 (finetune/loss.py), so every term is finite.
  auto term = [](at::Tensor logits, const at::Tensor& mask, const at::Tensor& target, const at::Tensor& w,
                 at::Tensor& ce_out) {
    logits = at::where(mask.unsqueeze(-1), logits, at::zeros_like(logits));
    at::Tensor tg = at::where(w > 0, target, at::zeros_like(target));
    at::Tensor ce = at::cross_entropy_loss(logits.reshape({-1, logits.size(-1)}).to(at::kFloat), tg.reshape({-1}), {},
                                           at::Reduction::None)
                        .view(w.sizes());
    ce_out = at::where(w > 0, ce, at::zeros_like(ce));
    const double total = w.sum().item<double>();
    if (total <= 0) return at::zeros({}, logits.options().dtype(at::kFloat));
    return (ce_out * w).sum() / total;
  };
  at::Tensor text_tgt = codes.narrow(1, 0, 1);
  at::Tensor tw = out.text_mask.to(at::kFloat);
  r.text_w = at::where((text_tgt == c.existing_text_padding_id) | (text_tgt == c.existing_text_end_padding_id),
                       tw * o.text_padding_weight, tw);
  r.loss.text = term(out.text_logits, out.text_mask, text_tgt, r.text_w, r.text_ce);
  at::Tensor audio_tgt = codes.narrow(1, 1, c.dep_q);
  r.audio_w = out.mask.to(at::kFloat);
  r.audio_w.select(1, 0).mul_(o.first_codebook_weight_multiplier);
  r.loss.audio = term(out.logits, out.mask, audio_tgt, r.audio_w, r.audio_ce);
  return r;
}

MoshiLoss moshi_lm_loss(moshi::LMModel& lm, const at::Tensor& codes, const MoshiLossOptions& o) {
  return moshi_output_loss(lm.config(), lm.forward(codes), codes, o).loss;
}

std::shared_ptr<moshi::LMState> moshi_tbptt_state(moshi::LMModel& lm, int64_t batch, int64_t chunk) {
  auto st = std::make_shared<moshi::LMState>(lm.new_state(batch));
  const auto& tc = lm.transformer().config();
  if (!tc.context) return st;  // unlimited context: the ring grows (capacity 0 never happens here)
  const int64_t cap = *tc.context + std::max<int64_t>(chunk, 1) - 1;
  for (auto& kv : st->transformer.kv) {
    if (kv.capacity >= cap) continue;
    kv.capacity = cap;
    std::vector<int64_t> shape = kv.keys.sizes().vec();
    shape[2] = cap;
    kv.keys = at::zeros(shape, kv.keys.options());
    kv.values = at::zeros(shape, kv.values.options());
  }
  return st;
}

ChunkedSequence moshi_lm_sequence(moshi::LMModel& lm, const at::Tensor& codes, std::shared_ptr<moshi::LMState> state,
                                  const MoshiLossOptions& o) {
  auto t = std::make_shared<Targets>(make_targets(lm.config(), codes, o));
  ChunkedSequence seq;
  seq.length = codes.size(2);
  const int64_t dep_q = lm.config().dep_q;
  seq.chunk_loss = [&lm, t, state, dep_q](int64_t s, int64_t n) {
    auto [h, text_logits] = lm.forward_text(t->delayed.narrow(2, s, n), state.get());
    at::Tensor logits = lm.forward_depformer_training(t->delayed.narrow(2, s + 1, n), h);
    at::Tensor tgt = t->delayed.narrow(2, s + 1, n);
    at::Tensor loss = at::zeros({}, h.options().dtype(at::kFloat));
    if (t->text_total > 0)
      loss = loss + weighted_ce_sum(text_logits.select(1, 0), tgt.select(1, 0), t->text_w.narrow(1, s, n)) / t->text_total;
    if (t->audio_total > 0)
      loss = loss + weighted_ce_sum(logits, tgt.narrow(1, 1, dep_q), t->audio_w.narrow(2, s, n)) / t->audio_total;
    // Tokens as moshi-finetune counts them: text_mask.numel() + mask.numel(); the real ones are
    // the mask's true entries (prob_real_tokens).
    return StepLoss{loss, t->delayed.size(0) * (1 + dep_q) * n, t->real.narrow(0, s, n).sum().item<int64_t>()};
  };
  seq.detach_state = [state] {
    if (state) detach_streaming_state(state->transformer);
  };
  return seq;
}

}  // namespace mtt::experiments
