#include "infer/infer.h"

#include <ATen/Parallel.h>
#include <c10/core/GradMode.h>

#include <chrono>
#include <cmath>
#include <limits>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <utility>

#include "core/atomic_file.h"
#include "core/output_set.h"
#include "core/error.h"
#include "core/progress.h"
#include "infer/models.h"
#include "infer/weights_check.h"
#include "io/audio.h"
#include "io/checkpoint.h"
#include "io/text_tokenizer.h"
#include "mimi/mimi.h"
#include "moshi/hybrid.h"
#include "moshi/lm.h"
#include "moshi/lmgen.h"

namespace mtt::infer {

using nlohmann::json;

namespace {

std::string gate_key(int layer, const char* gate) {
  return "transformer.layers." + std::to_string(layer) + ".seq_modeling_block." + gate + ".gating_alpha";
}

GateStats stats_of(int layer, const char* name, ttt::SSMGating& g) {
  GateStats s;
  s.layer = layer;
  s.gate = name;
  at::Tensor a = g.gating_alpha.detach().to(at::kDouble);
  s.alpha_mean = a.mean().item<double>();
  s.alpha_min = a.min().item<double>();
  s.alpha_max = a.max().item<double>();
  s.alpha_std = a.numel() > 1 ? a.std().item<double>() : 0.0;
  s.multiplier_mean_pct = 100.0 * g.multiplier().detach().to(at::kDouble).mean().item<double>();
  s.overridden = g.overridden();
  return s;
}

}  // namespace

json InferResult::summary_json() const {
  json j = to_json();
  j.erase("audio_codes");
  return j;
}

json InferResult::to_json() const {
  json g = json::array();
  for (const auto& s : gates)
    g.push_back({{"layer", s.layer}, {"gate", s.gate}, {"alpha_mean", s.alpha_mean}, {"alpha_min", s.alpha_min},
                 {"alpha_max", s.alpha_max}, {"alpha_std", s.alpha_std},
                 {"multiplier_mean_pct", s.multiplier_mean_pct}, {"overridden", s.overridden}});
  json j = {{"gates", g},           {"overrides", overrides_applied}, {"text", text},
            {"text_tokens", text_tokens}, {"frames", frames},          {"audio_seconds", audio_seconds},
            {"wall_seconds", wall_seconds}, {"rtf", rtf},              {"audio_codes", audio_codes},
            {"outputs", outputs_written}};
  if (texts.size() > 1) {
    j["texts"] = texts;
    j["texts_tokens"] = texts_tokens;
  }
  if (!run.is_null()) j["run"] = run;
  return j;
}

std::string batch_output_path(const std::string& output, int row, int batch_size) {
  if (batch_size <= 1) return output;
  const std::filesystem::path p(output);
  return (p.parent_path() / (p.stem().string() + "-" + std::to_string(row) + p.extension().string())).string();
}

moshi::SamplingOptions sampling_options_of(const InferOptions& opt, const moshi::LMConfig& config, json* source) {
  if (opt.greedy) {
    if (source) *source = "--greedy";
    return moshi::SamplingOptions::greedy();
  }
  moshi::SamplingOptions so = moshi::SamplingOptions::from_config(config);
  json from = json::object();
  auto pick = [&](auto& value, const auto& flag, const char* key, const char* flag_name) {
    if (flag) value = *flag;
    from[key] = flag ? std::string(flag_name) : std::string("checkpoint");
  };
  pick(so.temp, opt.temp, "temp", "--temp");
  pick(so.temp_text, opt.temp_text, "temp_text", "--temp-text");
  pick(so.top_k, opt.top_k, "top_k", "--top-k");
  pick(so.top_k_text, opt.top_k_text, "top_k_text", "--top-k-text");
  if (source) *source = from;
  return so;
}

void add_layer_alpha(GateOverride& g, const std::string& spec) {
  const char* flag = "--force-gating-alpha-layer";
  const auto eq = spec.find('=');
  auto bad = [&](const std::string& why) { throw Error("", flag, why + ", got '" + spec + "'", ErrorKind::Usage); };
  if (eq == std::string::npos || eq == 0) bad("expected LAYER=A (e.g. 3=0.5)");
  const std::string layer = spec.substr(0, eq), alpha = spec.substr(eq + 1);
  if (layer.find_first_not_of("0123456789") != std::string::npos || layer.size() > 6)
    bad("LAYER must be a layer index (0, 1, ...)");
  char* end = nullptr;
  const double a = std::strtod(alpha.c_str(), &end);
  if (alpha.empty() || *end != '\0' || !std::isfinite(a)) bad("A must be a finite number");
  const int l = std::stoi(layer);
  if (g.alpha_per_layer.count(l)) bad("layer " + layer + " is given twice");
  g.alpha_per_layer[l] = a;
}

namespace {
std::string number_text(double v) {
  char buf[40];
  std::snprintf(buf, sizeof buf, "%g", v);
  return buf;
}
}  // namespace

void check_infer_options(const InferOptions& opt) {
  auto bad = [](const char* flag, const std::string& why) { throw Error("", flag, why, ErrorKind::Usage); };
  auto finite_nonneg = [&](double v, const char* flag) {
    if (!std::isfinite(v) || v < 0) bad(flag, "must be a finite number >= 0 (0: greedy), got " + std::to_string(v));
  };
  // LibTorch starts one OpenMP thread per request: 10^5 of them never finish starting.
  if (opt.threads < 0 || opt.threads > kMaxThreads)
    bad("--threads", "must be an integer in 0.." + std::to_string(kMaxThreads) + " (0: one per core), got " +
                         std::to_string(opt.threads));
  if (opt.temp) finite_nonneg(*opt.temp, "--temp");
  if (opt.temp_text) finite_nonneg(*opt.temp_text, "--temp-text");
  if (opt.top_k && *opt.top_k < 0)
    bad("--top-k", "must be an integer >= 0 (0: no top-k), got " + std::to_string(*opt.top_k));
  if (opt.top_k_text && *opt.top_k_text < 0)
    bad("--top-k-text", "must be an integer >= 0 (0: no top-k), got " + std::to_string(*opt.top_k_text));
  if (opt.greedy && (opt.temp || opt.temp_text || opt.top_k || opt.top_k_text))
    bad("--greedy", "takes no sampling settings (--temp, --temp-text, --top-k, --top-k-text): they would be ignored");
  if (opt.batch_size < 1 || opt.batch_size > kMaxBatch)
    bad("--batch-size", "must be an integer in 1.." + std::to_string(kMaxBatch) + ", got " + std::to_string(opt.batch_size));
  if (opt.step && *opt.step < 0) bad("--step", "must be a checkpoint step >= 0");
  const GateOverride& g = opt.gates;
  // The gates are float32 tensors: a value beyond float's range would overflow on the way in.
  auto gate_value = [&](const std::optional<double>& v, const char* flag) {
    if (v && !(std::isfinite(*v) && std::fabs(*v) <= std::numeric_limits<float>::max()))
      bad(flag, "must be a finite number in -3.4e38..3.4e38 (a float32 gate), got " + number_text(*v));
  };
  gate_value(g.alpha, "--force-gating-alpha");
  gate_value(g.multiplier, "--force-gating-multiplier");
  for (const auto& [layer, a] : g.alpha_per_layer) {
    if (layer < 0) bad("--force-gating-alpha-layer", "layer " + std::to_string(layer) + " is not a layer index");
    if (!std::isfinite(a) || std::fabs(a) > std::numeric_limits<float>::max())
      bad("--force-gating-alpha-layer", "alpha of layer " + std::to_string(layer) +
                                            " must be a finite number in -3.4e38..3.4e38 (a float32 gate), got " +
                                            number_text(a));
  }
  // The multiplier replaces tanh(alpha): with both, one of them would be silently ignored.
  if (g.multiplier && (g.alpha || !g.alpha_per_layer.empty()))
    bad("--force-gating-multiplier",
        std::string("replaces tanh(alpha), so it cannot be combined with ") +
            (g.alpha ? "--force-gating-alpha" : "--force-gating-alpha-layer") + ": give one of them");
  if (!opt.ttt_layers.empty()) {
    const std::string preset = opt.tiny ? (opt.checkpoint.empty() ? "tiny" : "") : opt.random_preset;
    if (preset.empty())
      bad("--ttt-layers", "only for a model with random weights (--tiny without --checkpoint, or --random-weights): a "
                          "checkpoint's TTT layers are those it holds");
    moshi::TTTSettings t;
    t.enable = true;
    t.layers = opt.ttt_layers;
    try {
      t.resolve_layers(moshi::LMConfig::preset(preset).num_layers);
    } catch (const Error& e) {
      bad("--ttt-layers", e.reason());
    }
  }
}

InferOptions with_weight_sources(InferOptions opt) {
  if (opt.checkpoint.empty() && !opt.moshi_weight.empty()) std::swap(opt.checkpoint, opt.moshi_weight);
  if (opt.checkpoint.empty() && !opt.hf_repo.empty()) opt.checkpoint = opt.hf_repo;
  return opt;
}

ModelOptions model_options_of(const InferOptions& opt_in) {
  const InferOptions opt = with_weight_sources(opt_in);
  check_infer_options(opt);
  ModelOptions mo;
  mo.random_preset = opt.tiny ? "tiny" : opt.random_preset;
  mo.ttt_layers = opt.ttt_layers;
  mo.checkpoint = opt.checkpoint;
  mo.mimi_weight = opt.mimi_weight;
  mo.config = opt.config;
  mo.moshi_weight = opt.moshi_weight;
  mo.lora_weight = opt.lora_weight;
  mo.fuse_lora = opt.fuse_lora;
  mo.model_folder = opt.hf_repo;
  mo.step = opt.step;
  if (opt.fork_numerics == "auto") mo.fork_numerics = moshi::ForkNumerics::automatic;
  else if (opt.fork_numerics == "fork") mo.fork_numerics = moshi::ForkNumerics::fork;
  else if (opt.fork_numerics == "ours") mo.fork_numerics = moshi::ForkNumerics::ours;
  else throw Error("", "--fork-numerics", "expected auto, fork or ours, got '" + opt.fork_numerics + "'", ErrorKind::Usage);
  mo.seed = opt.seed;
  if (opt.dtype != "f32" && opt.dtype != "bf16")
    throw Error("", "--dtype", "expected f32 or bf16, got '" + opt.dtype + "'", ErrorKind::Usage);
  mo.dtype = opt.dtype == "bf16" ? at::kBFloat16 : at::kFloat;
  try {
    mo.device = at::Device(opt.device);
  } catch (const std::exception&) {
    throw Error("", "--device", "expected cpu, cuda or cuda:N, got '" + opt.device + "'", ErrorKind::Usage);
  }
  return mo;
}

std::vector<GateStats> apply_gate_overrides(moshi::LMModel& lm, const GateOverride& gates, std::ostream& log,
                                            std::vector<std::string>* applied) {
  std::vector<GateStats> stats;
  std::vector<std::string> done;
  auto& layers = lm.transformer().layers();
  // A layer without a gate would silently keep its own alpha.
  for (const auto& [layer, a] : gates.alpha_per_layer) {
    if (layer >= 0 && static_cast<std::size_t>(layer) < layers.size() && layers[layer].hybrid) continue;
    std::string with;
    for (std::size_t i = 0; i < layers.size(); ++i)
      if (layers[i].hybrid) with += (with.empty() ? "" : ",") + std::to_string(i);
    throw Error("", "--force-gating-alpha-layer",
                "layer " + std::to_string(layer) + " has no TTT gate (the model has " + std::to_string(layers.size()) +
                    " layers; TTT layers: " + (with.empty() ? "none" : with) + ")",
                ErrorKind::Usage);
  }
  for (std::size_t i = 0; i < layers.size(); ++i) {
    auto& hb = layers[i].hybrid;
    if (!hb) continue;
    const int li = static_cast<int>(i);
    for (auto [name, gate] : {std::pair<const char*, ttt::SSMGating*>{"forward_ssm_gating", &hb->forward_gate()},
                              std::pair<const char*, ttt::SSMGating*>{"backward_ssm_gating", &hb->backward_gate()}}) {
      std::optional<double> a = gates.alpha;
      if (auto it = gates.alpha_per_layer.find(li); it != gates.alpha_per_layer.end()) a = it->second;
      if (a) {
        gate->force_alpha(*a);
        done.push_back(gate_key(li, name) + " := " + std::to_string(*a));
      }
      if (gates.multiplier) {
        gate->force_multiplier(*gates.multiplier);
        done.push_back(gate_key(li, name) + " multiplier := " + std::to_string(*gates.multiplier));
      }
      stats.push_back(stats_of(li, name, *gate));
    }
  }
  for (const auto& o : done) log << "set " << o << "\n";
  if (!stats.empty()) {
    log << "TTT gates (the branch is multiplied by tanh(alpha) and added to the residual):\n";
    char buf[256];
    std::snprintf(buf, sizeof buf, "  %-5s %-20s %9s %9s %9s %9s %10s\n", "layer", "gate", "mean", "min", "max", "std",
                  "tanh(a) %");
    log << buf;
    for (const auto& s : stats) {
      std::snprintf(buf, sizeof buf, "  %-5d %-20s %9.4f %9.4f %9.4f %9.4f %9.2f%%%s\n", s.layer, s.gate.c_str(),
                    s.alpha_mean, s.alpha_min, s.alpha_max, s.alpha_std, s.multiplier_mean_pct,
                    s.overridden ? "  (forced)" : "");
      log << buf;
    }
  } else {
    log << "no TTT layers in this model\n";
  }
  if (applied) *applied = std::move(done);
  return stats;
}

InferResult run_inference(const InferOptions& opt_in, std::ostream& log) {
  const InferOptions opt = with_weight_sources(opt_in);
  check_infer_options(opt);
  c10::NoGradGuard no_grad;
  // The input first: a bad file fails before any model is built.
  std::vector<float> pcm = io::load_mono(opt.input);
  // Every output opened now (an unwritable one fails before the models are built) and put in
  // place together at the end: all of them or none (issue 15).
  const int B = opt.batch_size;
  OutputSet outputs;
  for (int b = 0; b < B; ++b) outputs.add(batch_output_path(opt.output, b, B), "output");
  if (!opt.stereo_output.empty())
    for (int b = 0; b < B; ++b) outputs.add(batch_output_path(opt.stereo_output, b, B), "--stereo-output");
  if (!opt.stats_json.empty()) outputs.add(opt.stats_json, "--stats-json");
  // --- models ---
  ModelOptions mo = model_options_of(opt);
  // Small models stream faster on one thread: LibTorch's OpenMP workers spin between the many
  // tiny ops of a frame, which costs far more than it saves on a busy machine (tiny model, 2 busy
  // cores: RTF 2.2 with 2 threads, 0.06 with 1).
  if (opt.threads > 0) at::set_num_threads(opt.threads);
  Models models = build_models(mo, log);
  mimi::MimiModel* codec = models.codec.get();
  moshi::LMModel& lm = *models.lm;
  check_finite_weights(lm.state_dict(), opt.checkpoint.empty() ? models.label : opt.checkpoint, opt.allow_nonfinite,
                       log);
  const moshi::LMConfig& lcfg = lm.config();
  const mimi::MimiConfig& mcfg = codec->config();

  // --- gates: overrides, then the statistics generation will use ---
  InferResult res;
  res.gates = apply_gate_overrides(lm, opt.gates, log, &res.overrides_applied);

  // --- audio in, frame by frame ---
  const int64_t fs = codec->frame_size();
  const int64_t n_frames = (static_cast<int64_t>(pcm.size()) + fs - 1) / fs;
  if (n_frames == 0) throw Error(opt.input, "", "no audio frames");
  pcm.resize(static_cast<std::size_t>(n_frames * fs), 0.0f);
  at::Tensor audio = at::from_blob(pcm.data(), {1, 1, n_frames * fs}, at::kFloat).to(mo.device);

  json sampling_source;
  const moshi::SamplingOptions so = sampling_options_of(opt, lcfg, &sampling_source);
  res.run = {{"model", models.label},
             {"dtype", opt.dtype},
             {"device", opt.device},
             {"threads", at::get_num_threads()},
             {"seed", opt.seed},
             {"batch_size", B},
             {"sampling",
              {{"use_sampling", so.use_sampling}, {"temp", so.temp}, {"temp_text", so.temp_text}, {"top_k", so.top_k},
               {"top_k_text", so.top_k_text}, {"from", sampling_source}}}};
  {
    char line[160];
    std::snprintf(line, sizeof line, "sampling: %s", so.use_sampling ? "" : "greedy (argmax)");
    std::string l = line;
    if (so.use_sampling)
      l += "temp " + std::to_string(so.temp) + ", temp_text " + std::to_string(so.temp_text) + ", top_k " +
           std::to_string(so.top_k) + ", top_k_text " + std::to_string(so.top_k_text) +
           " (unset flags: the checkpoint's lm_gen_config)";
    log << l << "\n";
  }
  moshi::LMGen gen(lm, so, opt.seed);
  // moshi's run_inference: the same input in every row, each row sampled on its own.
  gen.reset(B);
  mimi::MimiStreamer enc(*codec), dec(*codec);
  std::unique_ptr<io::TextTokenizer> tok;
  const std::string tok_path = !opt.tokenizer.empty() ? opt.tokenizer : models.tokenizer_path;
  if (!tok_path.empty()) tok = std::make_unique<io::TextTokenizer>(io::TextTokenizer::load(tok_path));

  std::vector<std::vector<float>> out_pcm(static_cast<std::size_t>(B));
  res.texts.assign(static_cast<std::size_t>(B), "");
  res.texts_tokens.assign(static_cast<std::size_t>(B), {});
  // The tokenizer's streaming state is per row.
  std::vector<std::unique_ptr<io::TextTokenizer>> toks;
  for (int b = 0; b < B && tok; ++b)
    toks.push_back(b == 0 ? std::move(tok) : std::make_unique<io::TextTokenizer>(io::TextTokenizer::load(tok_path)));
  Progress bar("ttt-infer", static_cast<uint64_t>(n_frames), opt.progress, "frame");
  const auto t0 = std::chrono::steady_clock::now();
  for (int64_t f = 0; f < n_frames; ++f) {
    // One encode: every row has the same input, and Mimi's encoding is deterministic.
    at::Tensor codes = enc.encode_step(audio.narrow(2, f * fs, fs));  // [1, K, 1]
    at::Tensor user = codes.narrow(1, 0, lcfg.n_q - lcfg.dep_q);
    if (B > 1) user = user.expand({B, user.size(1), 1}).contiguous();
    at::Tensor tokens = gen.step(user);
    bar.advance();
    if (!tokens.defined()) continue;  // priming the delays
    ++res.frames;
    const at::Tensor host = tokens.to(at::kCPU).contiguous();  // [B, 1 + dep_q, 1]
    for (int b = 0; b < B; ++b) {
      const int64_t text_id = host[b][0][0].item<int64_t>();
      res.texts_tokens[b].push_back(text_id);
      if (!toks.empty()) res.texts[b] += toks[b]->stream_text(static_cast<int>(text_id));
    }
    std::vector<int64_t> row;
    for (int64_t k = 0; k < lcfg.dep_q; ++k) row.push_back(host[0][1 + k][0].item<int64_t>());
    res.audio_codes.push_back(row);
    at::Tensor audio_codes = tokens.narrow(1, 1, lcfg.dep_q);  // [B, dep_q, 1]
    at::Tensor y = dec.decode_step(audio_codes.to(mo.device)).to(at::kCPU).contiguous();  // [B, 1, fs]
    for (int b = 0; b < B; ++b) {
      const float* p = y[b].contiguous().data_ptr<float>();
      out_pcm[b].insert(out_pcm[b].end(), p, p + y[b].numel());
    }
  }
  bar.finish();
  res.text = res.texts[0];
  res.text_tokens = res.texts_tokens[0];
  res.wall_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  res.audio_seconds = static_cast<double>(n_frames * fs) / mcfg.sample_rate;
  res.rtf = res.wall_seconds / res.audio_seconds;

  std::vector<std::string> bytes;
  for (int b = 0; b < B; ++b) {
    out_pcm[b].resize(pcm.size(), 0.0f);  // same length as the input (the first frames prime the delays)
    bytes.push_back(io::encode_wav(outputs[b].path(), out_pcm[b], 1, mcfg.sample_rate));
  }
  if (!opt.stereo_output.empty()) {
    for (int b = 0; b < B; ++b) {
      std::vector<float> st(2 * pcm.size());
      for (std::size_t i = 0; i < pcm.size(); ++i) {
        st[2 * i] = pcm[i];
        st[2 * i + 1] = out_pcm[b][i];
      }
      bytes.push_back(io::encode_wav(outputs[B + b].path(), st, 2, mcfg.sample_rate));
    }
  }
  for (std::size_t i = 0; i < outputs.size(); ++i) res.outputs_written.push_back(outputs[i].path());
  if (!opt.stats_json.empty()) bytes.push_back(res.to_json().dump(2));
  // Files first, devices and FIFOs last: what goes to a FIFO cannot be taken back.
  for (bool special : {false, true})
    for (std::size_t i = 0; i < outputs.size(); ++i)
      if (outputs[i].special() == special) outputs[i].write(bytes[i]);
  outputs.commit();
  return res;
}

}  // namespace mtt::infer
