#include "moshi/lmgen.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/core/grad_mode.h>

#include "core/error.h"

namespace mtt::moshi {

SamplingOptions SamplingOptions::from_config(const LMConfig& c) {
  SamplingOptions o;
  o.temp = c.temp;
  o.temp_text = c.temp_text;
  o.top_k = c.top_k;
  o.top_k_text = c.top_k_text;
  return o;
}

SamplingOptions SamplingOptions::greedy() {
  SamplingOptions o;
  o.use_sampling = false;
  return o;
}

at::Tensor sample_token(const at::Tensor& logits_in, bool use_sampling, double temp, int64_t top_k,
                        at::Generator& gen) {
  at::Tensor logits = logits_in.to(at::kFloat);
  if (!use_sampling || temp <= 0.0) return logits.argmax(-1);
  at::Tensor probs = at::softmax(logits / temp, -1);
  at::Tensor idx;
  if (top_k > 0) {
    // sample_top_k: k = min(k, V), keep the top-k probabilities without renormalising.
    const int64_t k = std::min<int64_t>(top_k, probs.size(-1));
    std::tie(probs, idx) = at::topk(probs, k, -1);
  }
  // multinomial(num_samples=1): argmax(p / q), q ~ Exp(1) drawn as one [rows, k] tensor.
  at::Tensor p2 = probs.reshape({-1, probs.size(-1)});
  at::Tensor q = at::empty_like(p2).exponential_(1.0, gen);
  at::Tensor choice = (p2 / q).argmax(-1, /*keepdim=*/true);
  if (idx.defined()) choice = idx.reshape({-1, idx.size(-1)}).gather(-1, choice);
  return choice.view(logits.sizes().slice(0, logits.dim() - 1));
}

LMGen::LMGen(LMModel& model, SamplingOptions opt, uint64_t seed)
    : model_(model), opt_(opt), gen_(at::make_generator<at::CPUGeneratorImpl>(seed)) {}

void LMGen::reset(int64_t batch) {
  const LMConfig& c = model_.config();
  batch_ = batch;
  offset_ = 0;
  const int64_t K = c.num_codebooks();
  cache_ = at::full({batch, K, c.max_delay() + 2}, -2, at::TensorOptions().dtype(at::kLong));
  std::vector<int64_t> init(static_cast<size_t>(K), c.initial_token_id());
  init[0] = c.text_initial_token_id();
  initial_ = at::tensor(init, at::TensorOptions().dtype(at::kLong)).view({1, K, 1});
  state_ = model_.new_state(batch);
}

at::Tensor LMGen::depformer_step(const at::Tensor& text_token, const at::Tensor& h) {
  // LMGen.depformer_step (lm.py:809-850): a fresh depformer state per time step; codebook k's
  // input token is the one sampled at k-1 (the text token for k = 0).
  const LMConfig& c = model_.config();
  TransformerState st = model_.new_depformer_state(batch_);
  at::Tensor prev = text_token;
  std::vector<at::Tensor> toks;
  for (int64_t k = 0; k < c.dep_q; ++k) {
    at::Tensor logits = model_.depformer_step(k, prev, h, st);
    prev = sample_token(logits, opt_.use_sampling, opt_.temp, opt_.top_k, gen_);
    toks.push_back(prev);
  }
  return at::stack(toks, 1);
}

at::Tensor LMGen::step(const at::Tensor& user_codes) { return step_forced(user_codes, at::Tensor()); }

at::Tensor LMGen::step_forced(const at::Tensor& user_in, const at::Tensor& forced) {
  const LMConfig& c = model_.config();
  if (batch_ == 0) throw Error("", "LMGen", "call reset(batch) before step()", ErrorKind::Usage);
  const int64_t needed = c.n_q - c.dep_q;
  if (user_in.dim() != 3 || user_in.size(0) != batch_ || user_in.size(1) < needed || user_in.size(2) != 1)
    throw Error("", "user_codes", "expected [" + std::to_string(batch_) + ", " + std::to_string(needed) + ", 1]",
                ErrorKind::Usage);
  at::NoGradGuard ng;
  const int64_t CT = cache_.size(2), K = c.num_codebooks();
  at::Tensor user = user_in.narrow(1, 0, needed).to(at::kLong);
  // 1. user codebook j goes to row dep_q+1+j at column (offset + delay) % CT (lm.py:706-711).
  for (int64_t j = 0; j < needed; ++j) {
    const int64_t row = c.dep_q + 1 + j;
    const int64_t col = (offset_ + c.delays[static_cast<size_t>(row)]) % CT;
    cache_.select(1, row).select(1, col).copy_(user.select(1, j).select(1, 0));
  }
  // 2. model input = cache column offset % CT, start tokens where offset <= delay.
  at::Tensor input = cache_.narrow(2, offset_ % CT, 1).clone();
  for (int64_t k = 0; k < K; ++k)
    if (offset_ <= c.delays[static_cast<size_t>(k)]) input.select(1, k).fill_(initial_.select(1, k).item<int64_t>());
  // 3. temporal transformer, text sampling, depformer.
  auto [h, text_logits] = model_.forward_text(input, &state_);
  last_hidden_ = h;
  last_text_logits_ = text_logits.select(1, 0).select(1, 0).to(at::kFloat);
  at::Tensor text = sample_token(last_text_logits_, opt_.use_sampling, opt_.temp_text, opt_.top_k_text, gen_);
  at::Tensor audio = forced.defined() ? forced.to(at::kLong) : depformer_step(text, h);
  // 4. offset += 1; sampled tokens written at column offset % CT.
  offset_ += 1;
  const int64_t col = offset_ % CT;
  cache_.select(1, 0).select(1, col).copy_(text);
  for (int64_t k = 0; k < c.dep_q; ++k) cache_.select(1, 1 + k).select(1, col).copy_(audio.select(1, k));
  // 5. aligned output once max_delay steps have run.
  if (offset_ <= c.max_delay()) return at::Tensor();
  at::Tensor out = at::empty({batch_, 1 + c.dep_q, 1}, cache_.options());
  for (int64_t k = 0; k <= c.dep_q; ++k) {
    const int64_t cc = ((offset_ - c.max_delay() + c.delays[static_cast<size_t>(k)]) % CT + CT) % CT;
    out.select(1, k).copy_(cache_.select(1, k).narrow(1, cc, 1));
  }
  return out;
}

}  // namespace mtt::moshi
