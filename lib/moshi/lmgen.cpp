#include "moshi/lmgen.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/core/grad_mode.h>

#include <algorithm>

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
  // Sampling runs on the CPU with the CPU generator whatever the model's device, so a CUDA model
  // draws exactly the tokens the CPU model draws for the same logits (upstream order of draws).
  at::Tensor logits = logits_in.to(at::kCPU, at::kFloat);
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
  offset_cpu_ = 0;
  offsets_.assign(static_cast<size_t>(batch), 0);
  exec_.assign(static_cast<size_t>(batch), true);
  const int64_t K = c.num_codebooks();
  cache_ = at::full({batch, K, c.max_delay() + 2}, -2, at::TensorOptions().dtype(at::kLong));
  std::vector<int64_t> init(static_cast<size_t>(K), c.initial_token_id());
  init[0] = c.text_initial_token_id();
  initial_ = at::tensor(init, at::TensorOptions().dtype(at::kLong)).view({1, K, 1});
  state_ = model_.new_state(batch);
  // The token cache stays on the CPU; the model's inputs go to the device of its parameters.
  device_ = at::kCPU;
  for (auto& [name, t] : model_.named_parameters())
    if (t->defined() && !t->is_meta()) {
      device_ = t->device();
      break;
    }
}

void LMGen::reset(const at::Tensor& mask_in) {
  if (batch_ == 0) throw Error("", "LMGen", "call reset(batch) before a per-row reset", ErrorKind::Usage);
  at::Tensor mask = mask_in.to(at::kCPU).to(at::kBool).contiguous();
  if (mask.dim() != 1 || mask.size(0) != batch_)
    throw Error("", "reset_mask", "expected a bool mask of " + std::to_string(batch_) + " rows", ErrorKind::Usage);
  auto acc = mask.accessor<bool, 1>();
  for (int64_t b = 0; b < batch_; ++b) {
    if (!acc[b]) continue;
    offsets_[static_cast<size_t>(b)] = 0;
    exec_[static_cast<size_t>(b)] = true;  // State.reset
  }
  offset_cpu_ = 0;      // _LMGenState.reset: offset_cpu = 0 whatever the mask
  state_.reset(mask);   // reset_callback -> lm_model.reset_streaming(reset_mask)
}

void LMGen::set_exec_mask(const at::Tensor& mask_in) {
  if (batch_ == 0) throw Error("", "LMGen", "call reset(batch) before set_exec_mask()", ErrorKind::Usage);
  at::Tensor mask = mask_in.to(at::kCPU).to(at::kBool).contiguous();
  if (mask.dim() != 1 || mask.size(0) != batch_)
    throw Error("", "exec_mask", "expected a bool mask of " + std::to_string(batch_) + " rows", ErrorKind::Usage);
  auto acc = mask.accessor<bool, 1>();
  for (int64_t b = 0; b < batch_; ++b) exec_[static_cast<size_t>(b)] = acc[b];
  state_.transformer.set_exec_mask(mask);  // set_exec_mask_callback -> lm_model.set_exec_mask
}

at::Tensor LMGen::depformer_step(const at::Tensor& text_token, const at::Tensor& h) {
  // LMGen.depformer_step (lm.py:809-850): a fresh depformer state per time step; codebook k's
  // input token is the one sampled at k-1 (the text token for k = 0).
  const LMConfig& c = model_.config();
  TransformerState st = model_.new_depformer_state(batch_);
  at::Tensor prev = text_token;
  std::vector<at::Tensor> toks;
  for (int64_t k = 0; k < c.dep_q; ++k) {
    at::Tensor logits = model_.depformer_step(k, prev.to(h.device()), h, st);
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
  const int64_t CT = cache_.size(2), K = c.num_codebooks(), B = batch_;
  auto long_t = [](const std::vector<int64_t>& v, std::vector<int64_t> shape) {
    return at::tensor(v, at::TensorOptions().dtype(at::kLong)).view(shape);
  };
  // Per-row cache columns (lm.py LMGen._step; every row has its own offset after per-row resets).
  std::vector<int64_t> idx_user, idx_in, idx_gen, idx_out;
  std::vector<uint8_t> is_init;
  const bool all_exec = std::all_of(exec_.begin(), exec_.end(), [](bool e) { return e; });
  for (int64_t b = 0; b < B; ++b) {
    const int64_t o = offsets_[static_cast<size_t>(b)];
    const bool run = exec_[static_cast<size_t>(b)];
    for (int64_t j = 0; j < needed; ++j) idx_user.push_back((o + c.delays[static_cast<size_t>(c.dep_q + 1 + j)]) % CT);
    for (int64_t k = 0; k < K; ++k) {
      idx_in.push_back(o % CT);
      // Start tokens while priming, and for rows that do not execute ("to avoid crashing", lm.py).
      is_init.push_back(o <= c.delays[static_cast<size_t>(k)] || !run ? 1 : 0);
    }
  }
  // Cache writes of rows that do not execute are dropped (scatter_with_mask_).
  auto masked_scatter = [&](at::Tensor dst, const at::Tensor& index, const at::Tensor& src) {
    if (all_exec) {
      dst.scatter_(2, index, src);
      return;
    }
    for (int64_t b = 0; b < B; ++b)
      if (exec_[static_cast<size_t>(b)]) dst.select(0, b).scatter_(1, index.select(0, b), src.select(0, b));
  };
  at::Tensor user = user_in.narrow(1, 0, needed).to(at::kLong);
  // 1. user codebook j goes to row dep_q+1+j at column (offset + delay) % CT (lm.py:706-711).
  masked_scatter(cache_.narrow(1, c.dep_q + 1, needed), long_t(idx_user, {B, needed, 1}), user);
  // 2. model input = cache column offset % CT, start tokens where offset <= delay.
  at::Tensor input = cache_.gather(2, long_t(idx_in, {B, K, 1}));
  at::Tensor init_mask = at::tensor(std::vector<int64_t>(is_init.begin(), is_init.end()),
                                    at::TensorOptions().dtype(at::kLong)).view({B, K, 1}).to(at::kBool);
  input = at::where(init_mask, initial_, input);
  // 3. temporal transformer, text sampling, depformer.
  auto [h, text_logits] = model_.forward_text(input.to(device_), &state_);
  last_hidden_ = h;
  last_text_logits_ = text_logits.select(1, 0).select(1, 0).to(at::kFloat);
  at::Tensor text = sample_token(last_text_logits_, opt_.use_sampling, opt_.temp_text, opt_.top_k_text, gen_);
  at::Tensor audio = forced.defined() ? forced.to(at::kLong) : depformer_step(text, h);
  // 4. offsets += 1; sampled tokens written at column offset % CT.
  offset_cpu_ += 1;
  for (int64_t b = 0; b < B; ++b) {
    if (exec_[static_cast<size_t>(b)]) ++offsets_[static_cast<size_t>(b)];
    const int64_t o = offsets_[static_cast<size_t>(b)];
    for (int64_t k = 0; k <= c.dep_q; ++k) idx_gen.push_back(o % CT);
    for (int64_t k = 0; k <= c.dep_q; ++k) {
      const int64_t col = ((o - c.max_delay() + c.delays[static_cast<size_t>(k)]) % CT + CT) % CT;
      idx_out.push_back(col);
    }
  }
  at::Tensor generated = at::cat({text.view({B, 1}), audio.view({B, c.dep_q})}, 1).unsqueeze(2);
  masked_scatter(cache_.narrow(1, 0, 1 + c.dep_q), long_t(idx_gen, {B, 1 + c.dep_q, 1}), generated);
  // 5. aligned output once max_delay steps have run; rows still priming hold -2.
  if (!out_of_sync_ && offset_cpu_ <= c.max_delay()) return at::Tensor();
  at::Tensor out = cache_.narrow(1, 0, 1 + c.dep_q).gather(2, long_t(idx_out, {B, 1 + c.dep_q, 1}));
  for (int64_t b = 0; b < B; ++b)
    if (offsets_[static_cast<size_t>(b)] <= c.max_delay() || !exec_[static_cast<size_t>(b)]) out.select(0, b).fill_(-2);
  return out;
}

}  // namespace mtt::moshi
