#include "infer/score.h"

#include <ATen/Parallel.h>
#include <c10/core/GradMode.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <limits>
#include <map>

#include "core/error.h"
#include "core/progress.h"
#include "infer/models.h"
#include "infer/weights_check.h"
#include "io/audio.h"
#include "io/safetensors.h"
#include "mimi/mimi.h"
#include "nn/tensor_io.h"

namespace mtt::infer {

using nlohmann::json;

namespace {

std::string shape_of(at::IntArrayRef s) {
  std::string r = "[";
  for (std::size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
  return r + "]";
}

bool is_codes_file(const std::string& path) {
  const std::string ext = std::filesystem::path(path).extension().string();
  return ext == ".safetensors";
}

// The undelayed outputs and masks exactly as LMModel::forward builds them (lm.py:365-376).
moshi::LMOutput undelay(const moshi::LMConfig& c, const at::Tensor& codes, const at::Tensor& logits,
                        const at::Tensor& text_logits) {
  moshi::LMOutput out;
  std::vector<int64_t> ad(c.delays.begin() + 1, c.delays.begin() + 1 + c.dep_q);
  std::tie(out.logits, out.mask) = moshi::undelay_sequence(ad, logits, std::nan(""));
  out.mask = out.mask & (codes.narrow(1, 1, c.dep_q) != -1);
  std::tie(out.text_logits, out.text_mask) = moshi::undelay_sequence({c.delays[0]}, text_logits, std::nan(""));
  out.text_mask = out.text_mask & (codes.narrow(1, 0, 1) != -1);
  return out;
}

// Cross-entropies [B, K, T] of logits [B, K, T, V] against target [B, K, T] where mask (NaN
// elsewhere): the masked logits are NaN in LMOutput and the targets may be -1, so both are
// replaced before the CE, as compute_loss_with_mask does.
at::Tensor masked_ce(const at::Tensor& logits, const at::Tensor& target, const at::Tensor& mask) {
  const int64_t V = logits.size(-1);
  at::Tensor lg = at::where(mask.unsqueeze(-1), logits, at::zeros_like(logits)).reshape({-1, V});
  at::Tensor tg = at::where(mask, target, at::zeros_like(target)).reshape({-1});
  at::Tensor ce = at::cross_entropy_loss(lg, tg, {}, at::Reduction::None).view(target.sizes());
  return at::where(mask, ce, at::full({}, std::numeric_limits<float>::quiet_NaN(), ce.options()));
}

// sum_k w CE / sum_k w over dim 1 (NaN where the weight is 0), and sum_k w.
std::pair<at::Tensor, at::Tensor> weighted_over_k(const at::Tensor& ce, const at::Tensor& w) {
  at::Tensor num = at::where(w > 0, ce * w, at::zeros_like(ce)).sum(1);
  at::Tensor den = w.sum(1);
  at::Tensor loss = at::where(den > 0, num / den.clamp_min(std::numeric_limits<float>::min()),
                              at::full({}, std::numeric_limits<float>::quiet_NaN(), num.options()));
  return {loss, den};
}

double weighted_mean(const at::Tensor& loss, const at::Tensor& w) {
  const double total = w.sum().item<double>();
  if (!(total > 0)) return std::numeric_limits<double>::quiet_NaN();
  return at::where(w > 0, loss.to(at::kDouble) * w.to(at::kDouble), at::zeros({}, at::kDouble)).sum().item<double>() /
         total;
}

// Both channels of a stereo file Mimi-encoded, in the LM layout [1, 1 + n_q, T].
at::Tensor encode_audio(const std::string& path, const mimi::MimiModel& codec, const moshi::LMConfig& c,
                        StereoLayout layout, const at::Device& device) {
  io::Audio a = io::read_audio(path);
  if (a.channels != 2)
    throw Error(path, "", "expected a stereo file (" +
                              std::string(layout == StereoLayout::moshi_user ? "channel 0 = Moshi, channel 1 = user"
                                                                             : "channel 0 = user, channel 1 = Moshi") +
                              "), got " + std::to_string(a.channels) + " channel(s)");
  const int64_t K = codec.config().num_codebooks;
  const int64_t user_q = c.n_q - c.dep_q;
  if (K < c.dep_q || K < user_q)
    throw Error(path, "codebooks",
                "the codec has " + std::to_string(K) + " codebooks, the model reads " + std::to_string(c.dep_q) +
                    " (Moshi) + " + std::to_string(user_q) + " (user)");
  if (codec.config().quantizer.bins > c.card)
    throw Error(path, "card",
                "the codec's codebooks have " + std::to_string(codec.config().quantizer.bins) +
                    " entries, the model's card is " + std::to_string(c.card));
  auto encode = [&](int ch) {
    std::vector<float> x = io::to_mono(a, ch, path);
    if (a.sample_rate != codec.config().sample_rate)
      x = io::resample(x, 1, a.sample_rate, codec.config().sample_rate, io::ResampleQuality::VeryHigh, path);
    at::Tensor t = at::from_blob(x.data(), {1, 1, static_cast<int64_t>(x.size())}, at::kFloat).to(device, at::kFloat,
                                                                                                  false, true);
    return codec.encode(t).to(at::kCPU, at::kLong);  // [1, K, T]
  };
  const int moshi_ch = layout == StereoLayout::moshi_user ? 0 : 1;
  at::Tensor moshi_codes = encode(moshi_ch), user_codes = encode(1 - moshi_ch);
  const int64_t T = moshi_codes.size(2);
  if (T == 0) throw Error(path, "", "no audio frames");
  at::Tensor text = at::full({1, 1, T}, c.existing_text_padding_id, at::kLong);
  return at::cat({text, moshi_codes.narrow(1, 0, c.dep_q), user_codes.narrow(1, 0, user_q)}, 1).contiguous();
}

}  // namespace

at::Tensor read_codes(const std::string& path, const moshi::LMConfig& c) {
  if (!std::filesystem::exists(path)) throw Error(path, "", "file not found");
  auto file = io::SafetensorsFile::open(path);
  const io::TensorInfo* info = file->find("codes");
  if (!info) throw Error(path, "codes", "no tensor named 'codes' (expected int64 [B, 1 + n_q, T])");
  if (info->dtype != DType::I64 && info->dtype != DType::I32 && info->dtype != DType::I16)
    throw Error(path, "codes", std::string("expected an integer tensor (int64), got ") + dtype_name(info->dtype));
  at::Tensor codes = nn::to_tensor(file->view(*info)).to(at::kLong).clone();
  const int64_t K = c.num_codebooks();
  if (codes.dim() != 3 || codes.size(1) != K || codes.size(0) < 1 || codes.size(2) < 1)
    throw Error(path, "codes",
                "expected [B, 1 + n_q = " + std::to_string(K) + ", T] for this model (text, " + std::to_string(c.dep_q) +
                    " Moshi and " + std::to_string(c.n_q - c.dep_q) + " user codebooks), got " + shape_of(codes.sizes()));
  auto check = [&](const at::Tensor& rows, int64_t hi, const std::string& what) {
    at::Tensor bad = (rows < -1) | (rows >= hi);
    if (!bad.any().item<bool>()) return;
    at::Tensor idx = bad.nonzero().select(0, 0);
    const int64_t b = idx[0].item<int64_t>(), k = idx[1].item<int64_t>(), t = idx[2].item<int64_t>();
    throw Error(path, "codes",
                what + " token " + std::to_string(rows[b][k][t].item<int64_t>()) + " at [" + std::to_string(b) + ", " +
                    std::to_string(k + (what == "text" ? 0 : 1)) + ", " + std::to_string(t) + "] is outside [-1, " +
                    std::to_string(hi) + ") (-1 = no token)");
  };
  check(codes.narrow(1, 0, 1), c.text_card, "text");
  check(codes.narrow(1, 1, c.n_q), c.card, "audio");
  return codes;
}

PositionLosses position_losses(const moshi::LMConfig& c, const moshi::LMOutput& out, const at::Tensor& codes_in,
                               const ScoreOptions& opt) {
  PositionLosses r;
  at::Tensor codes = codes_in.to(at::kCPU, at::kLong);
  at::Tensor text_mask = out.text_mask.to(at::kCPU), mask = out.mask.to(at::kCPU);
  // compute_loss_with_mask (finetune/loss.py): the padding ids are looked up in the target after
  // masked targets are replaced by 0.
  at::Tensor text_tgt = codes.narrow(1, 0, 1);
  at::Tensor text_ce = masked_ce(out.text_logits.to(at::kCPU, at::kFloat), text_tgt, text_mask);
  at::Tensor tw = text_mask.to(at::kFloat);
  at::Tensor masked_tgt = at::where(text_mask, text_tgt, at::zeros_like(text_tgt));
  at::Tensor is_pad = (masked_tgt == c.existing_text_padding_id) | (masked_tgt == c.existing_text_end_padding_id);
  tw = at::where(is_pad, tw * opt.text_padding_weight.value_or(0.5), tw);
  r.text_loss = text_ce.select(1, 0).contiguous();
  r.text_weight = tw.select(1, 0).contiguous();

  at::Tensor audio_tgt = codes.narrow(1, 1, c.dep_q);
  r.audio_loss_per_codebook = masked_ce(out.logits.to(at::kCPU, at::kFloat), audio_tgt, mask).contiguous();
  at::Tensor aw = mask.to(at::kFloat);
  aw.select(1, 0).mul_(opt.first_codebook_weight_multiplier.value_or(1.0));
  std::tie(r.audio_loss, r.audio_weight) = weighted_over_k(r.audio_loss_per_codebook, aw);
  r.audio_loss = r.audio_loss.contiguous();
  r.text_mean = weighted_mean(r.text_loss, r.text_weight);
  r.audio_mean = weighted_mean(r.audio_loss, r.audio_weight);
  return r;
}

moshi::LMOutput streamed_forward(moshi::LMModel& lm, const at::Tensor& codes, Progress* progress) {
  c10::NoGradGuard no_grad;
  const moshi::LMConfig& c = lm.config();
  const int64_t B = codes.size(0), T = codes.size(2);
  at::Tensor delayed = moshi::delayed_with_initial(c, codes);  // [B, K, T + 1]
  moshi::LMState state = lm.new_state(B);
  std::vector<at::Tensor> text_steps, audio_steps;
  text_steps.reserve(static_cast<std::size_t>(T));
  audio_steps.reserve(static_cast<std::size_t>(T));
  for (int64_t t = 0; t < T; ++t) {
    auto [h, text_logits] = lm.forward_text(delayed.narrow(2, t, 1), &state);  // h [B, 1, dim]
    text_steps.push_back(text_logits);                                         // [B, 1, 1, V]
    // LMGen.depformer_step, teacher-forced: codebook k's input is the token of column t + 1 in
    // stream k (the text for k = 0, Moshi's codebook k - 1 otherwise).
    moshi::TransformerState dep = lm.new_depformer_state(B);
    at::Tensor next = delayed.select(2, t + 1);  // [B, K]
    std::vector<at::Tensor> per_k;
    for (int64_t k = 0; k < c.dep_q; ++k) per_k.push_back(lm.depformer_step(k, next.select(1, k), h, dep));
    audio_steps.push_back(at::stack(per_k, 1).unsqueeze(2));  // [B, dep_q, 1, card]
    if (progress) progress->advance();
  }
  return undelay(c, codes, at::cat(audio_steps, 2), at::cat(text_steps, 2));
}

json ScoreResult::to_json() const {
  json g = json::array();
  for (const auto& s : gates)
    g.push_back({{"layer", s.layer}, {"gate", s.gate}, {"alpha_mean", s.alpha_mean},
                 {"multiplier_mean_pct", s.multiplier_mean_pct}, {"overridden", s.overridden}});
  auto num = [](double v) { return std::isfinite(v) ? json(v) : json(nullptr); };
  return {{"input", input},
          {"output", output},
          {"mode", mode},
          {"model", model},
          {"batch", batch},
          {"frames", frames},
          {"shapes", {{"logits", logits_shape}, {"text_logits", text_logits_shape}, {"text_loss", {batch, frames}},
                      {"audio_loss", {batch, frames}}}},
          {"text_loss", num(text_loss)},
          {"audio_loss", num(audio_loss)},
          {"loss", num(text_loss + audio_loss)},
          {"loss_weights", {{"text_padding_weight", text_padding_weight},
                            {"first_codebook_weight_multiplier", first_codebook_weight_multiplier},
                            {"from", loss_weights_from}}},
          {"wall_seconds", wall_seconds},
          {"frames_per_second", wall_seconds > 0 ? json(static_cast<double>(batch * frames) / wall_seconds) : json(nullptr)},
          {"gates", g},
          {"overrides", overrides_applied}};
}

ScoreResult run_score(const InferOptions& model_opt, const ScoreOptions& opt, std::ostream& log) {
  const InferOptions mopt = with_weight_sources(model_opt);
  c10::NoGradGuard no_grad;
  if (mopt.output.empty()) throw Error("", "OUTPUT", "an output .safetensors path is required", ErrorKind::Usage);
  if (std::filesystem::path(mopt.output).extension() != ".safetensors")
    throw Error(mopt.output, "", "the scores are written as safetensors: name the output *.safetensors",
                ErrorKind::Usage);
  // The loss weights given as flags, before any work (moshi-finetune's weights: >= 0 and finite).
  auto weight_flag = [](const std::optional<double>& v, const char* flag) {
    if (v && !(std::isfinite(*v) && *v >= 0 && *v <= 1e6)) {
      char buf[40];
      std::snprintf(buf, sizeof buf, "%g", *v);
      throw Error("", flag, std::string("must be a finite number in 0..1e6, got ") + buf, ErrorKind::Usage);
    }
  };
  weight_flag(opt.text_padding_weight, "--text-padding-weight");
  weight_flag(opt.first_codebook_weight_multiplier, "--first-codebook-weight-multiplier");
  if (!std::filesystem::exists(mopt.input)) throw Error(mopt.input, "", "file not found");
  const bool codes_input = is_codes_file(mopt.input);
  ModelOptions mo = model_options_of(mopt);
  mo.need_codec = !codes_input;
  if (mopt.threads > 0) at::set_num_threads(mopt.threads);
  Models models = build_models(mo, log);
  moshi::LMModel& lm = *models.lm;
  check_finite_weights(lm.state_dict(), mopt.checkpoint.empty() ? models.label : mopt.checkpoint,
                       mopt.allow_nonfinite, log);
  const moshi::LMConfig& c = lm.config();

  ScoreResult res;
  res.input = mopt.input;
  res.output = mopt.output;
  res.mode = opt.streaming ? "streaming" : "full";
  res.model = models.label;
  at::Device device = at::kCPU;  // the LM's (the codec follows it)
  for (auto& [name, t] : lm.named_parameters())
    if (t->defined() && !t->is_meta()) {
      device = t->device();
      break;
    }
  // The input before the gate table: a bad codes file fails with its one line only.
  at::Tensor codes = codes_input ? read_codes(mopt.input, c)
                                 : encode_audio(mopt.input, *models.codec, c, opt.channels, device);
  res.gates = apply_gate_overrides(lm, mopt.gates, log, &res.overrides_applied);
  res.batch = codes.size(0);
  res.frames = codes.size(2);
  log << "scoring " << mopt.input << ": B " << res.batch << ", T " << res.frames << " frames ("
      << (opt.streaming ? "streaming, frame by frame" : "full sequence") << ")\n";

  at::Tensor codes_dev = codes.to(device);
  const auto t0 = std::chrono::steady_clock::now();
  moshi::LMOutput out;
  if (opt.streaming) {
    Progress bar("ttt-infer --score", static_cast<uint64_t>(res.frames), mopt.progress, "frame");
    out = streamed_forward(lm, codes_dev, &bar);
    bar.finish();
  } else {
    out = lm.forward(codes_dev);
  }
  out.logits = out.logits.to(at::kCPU, at::kFloat).contiguous();
  out.text_logits = out.text_logits.to(at::kCPU, at::kFloat).contiguous();
  out.mask = out.mask.to(at::kCPU).contiguous();
  out.text_mask = out.text_mask.to(at::kCPU).contiguous();
  res.wall_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

  // The loss weights: the flags, else the run's own (train.py computed its losses with them).
  ScoreOptions wopt = opt;
  std::vector<std::string> from;
  auto pick = [&](std::optional<double>& v, const char* key, double def) {
    if (v) {
      from.push_back(std::string(key) + " from the flags");
      return;
    }
    if (auto it = models.run_args.find(key); it != models.run_args.end()) {
      try {
        std::size_t used = 0;
        v = std::stod(it->second, &used);
        if (used != it->second.size()) throw std::invalid_argument(it->second);
      } catch (const std::exception&) {
        throw Error(models.run_args_file, key, "expected a number, got '" + it->second + "'");
      }
      if (!(std::isfinite(*v) && *v >= 0 && *v <= 1e6))
        throw Error(models.run_args_file, key, "must be a finite number in 0..1e6, got '" + it->second + "'");
      from.push_back(std::string(key) + " from " + models.run_args_file);
      return;
    }
    v = def;
    from.push_back(std::string(key) + " = moshi-finetune's default");
  };
  pick(wopt.text_padding_weight, "text_padding_weight", 0.5);
  pick(wopt.first_codebook_weight_multiplier, "first_codebook_weight_multiplier", 1.0);
  res.text_padding_weight = *wopt.text_padding_weight;
  res.first_codebook_weight_multiplier = *wopt.first_codebook_weight_multiplier;
  for (const auto& f : from) res.loss_weights_from += (res.loss_weights_from.empty() ? "" : "; ") + f;
  log << "loss weights: text_padding_weight " << res.text_padding_weight << ", first_codebook_weight_multiplier "
      << res.first_codebook_weight_multiplier << " (" << res.loss_weights_from << ")\n";
  PositionLosses pl = position_losses(c, out, codes, wopt);
  res.text_loss = pl.text_mean;
  res.audio_loss = pl.audio_mean;
  res.logits_shape = out.logits.sizes().vec();
  res.text_logits_shape = out.text_logits.sizes().vec();

  std::map<std::string, std::string> meta{
      {"format", "moshi-ttt/score/1"},
      {"input", mopt.input},
      {"mode", res.mode},
      {"model", models.label},
      {"dtype", mopt.dtype},
      {"text_padding_weight", std::to_string(res.text_padding_weight)},
      {"first_codebook_weight_multiplier", std::to_string(res.first_codebook_weight_multiplier)},
      {"loss_weights_from", res.loss_weights_from},
      {"loss_definition",
       "per position: text_loss = CE where text_mask; audio_loss = sum_k w_k CE_k / sum_k w_k with w = mask "
       "(codebook 0 times first_codebook_weight_multiplier); NaN where no target; weights as moshi-finetune "
       "compute_loss_with_mask (text padding targets times text_padding_weight)"},
  };
  if (!codes_input)
    meta["channels"] = opt.channels == StereoLayout::moshi_user ? "moshi_user" : "user_moshi";
  nn::save_tensors(mopt.output,
                   {{"logits", out.logits},
                    {"mask", out.mask},
                    {"text_logits", out.text_logits},
                    {"text_mask", out.text_mask},
                    {"text_loss", pl.text_loss},
                    {"audio_loss", pl.audio_loss},
                    {"audio_loss_per_codebook", pl.audio_loss_per_codebook},
                    {"text_weight", pl.text_weight},
                    {"audio_weight", pl.audio_weight},
                    {"codes", codes.contiguous()}},
                   meta);
  return res;
}

}  // namespace mtt::infer
