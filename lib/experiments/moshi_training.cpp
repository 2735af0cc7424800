#include "experiments/moshi_training.h"

#include <cmath>
#include <filesystem>
#include <memory>
#include <random>

#include "core/atomic_file.h"
#include "core/error.h"
#include "experiments/chunked_loss.h"
#include "experiments/data_jsonl.h"
#include "experiments/spec.h"
#include "experiments/tbptt.h"
#include "mimi/mimi.h"
#include "moshi/config.h"
#include "moshi/lm.h"

namespace mtt::experiments {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

template <class T>
T number(const json& cfg, const char* key, T def, const std::string& file) {
  if (!cfg.contains(key)) return def;
  if (!cfg[key].is_number()) throw Error(file, key, "expected a number, got " + cfg[key].dump());
  return cfg[key].get<T>();
}

// The tiny LM sized to the codec: K Moshi + K user codebooks of the codec's cardinality, delays
// in moshiko's pattern (text 0, first codebook 0, the others 1, for each speaker).
moshi::LMConfig tiny_lm_for(int K, int bins, const json& cfg, const moshi::TTTSettings& ttt, const std::string& file) {
  moshi::LMConfig c = moshi::LMConfig::tiny();
  c.card = bins;
  c.dep_q = K;
  c.n_q = 2 * K;
  c.delays = {0};
  for (int s = 0; s < 2; ++s)
    for (int k = 0; k < K; ++k) c.delays.push_back(k == 0 ? 0 : 1);
  c.context = number<int64_t>(cfg, "context", 16, file);
  if (*c.context <= 0) throw Error(file, "context", "must be positive");
  c.ttt = ttt;
  c.validate(file);
  return c;
}

}  // namespace

MoshiTrainResult train_moshi_on_jsonl(const MoshiTrainOptions& opt, std::ostream& log) {
  if (opt.config.empty()) throw Error("", "--config", "a training config (YAML) is required", ErrorKind::Usage);
  if (opt.data.empty()) throw Error("", "--data", "a moshi-finetune jsonl is required", ErrorKind::Usage);
  if (opt.out.empty()) throw Error("", "--out", "a run directory is required", ErrorKind::Usage);
  const std::string text = read_file(opt.config);
  const json cfg = yaml_to_json(text, opt.config);
  TrainConfig tc = train_config_from_json(cfg, opt.config);
  moshi::TTTSettings ts;
  if (cfg.contains("ttt")) {
    ts = moshi::ttt_settings_from_yaml(text, opt.config);
  } else {  // no section: the fork's hybrid in every layer of the tiny model
    ts.enable = true;
    ts.layers = "all";
  }
  // The trainer's activation checkpointing is the TTT scan's recomputation groups (ttt.md §3).
  if (tc.checkpoint_group > 0) ts.scan_checkpoint_group_size = tc.checkpoint_group;
  MoshiLossOptions lo;
  lo.first_codebook_weight_multiplier = number<double>(cfg, "first_codebook_weight_multiplier", 1.0, opt.config);
  lo.text_padding_weight = number<double>(cfg, "text_padding_weight", 0.5, opt.config);
  const double duration_sec = number<double>(cfg, "duration_sec", 10.0, opt.config);
  if (!(duration_sec > 0)) throw Error(opt.config, "duration_sec", "must be positive");

  // --- codec ---
  MoshiTrainResult res;
  std::unique_ptr<mimi::MimiModel> codec;
  std::string codec_id;
  int K = 0;
  if (!opt.mimi_weight.empty()) {
    codec = std::make_unique<mimi::MimiModel>(mimi::MimiModel::load(opt.mimi_weight));
    K = number<int>(cfg, "num_codebooks", 8, opt.config);
    codec_id = fs::absolute(opt.mimi_weight).string();
    res.codec = "Mimi " + opt.mimi_weight;
  } else if (opt.tiny_mimi) {
    codec = std::make_unique<mimi::MimiModel>(mimi::MimiModel::random(mimi::MimiConfig::tiny(), tc.seed));
    K = number<int>(cfg, "num_codebooks", mimi::MimiConfig::tiny().num_codebooks, opt.config);
    codec_id = "tiny-random-seed-" + std::to_string(tc.seed);
    res.codec = "tiny Mimi, random weights (seed " + std::to_string(tc.seed) + ")";
    log << "[tiny-mimi] the audio is encoded by the tiny Mimi with RANDOM weights: the codes carry no speech\n"
           "            content; this checks the pipeline end to end (use --mimi-weight for real runs).\n";
  } else {
    throw Error("", "--mimi-weight", "a Mimi checkpoint is required (or --tiny-mimi)", ErrorKind::Usage);
  }
  codec->set_num_codebooks(K);

  // --- model ---
  moshi::LMConfig lc = tiny_lm_for(K, codec->config().quantizer.bins, cfg, ts, opt.config);
  if (lc.ttt.enable && tc.tbptt_chunk > 0 && tc.tbptt_chunk % lc.ttt.mini_batch_size != 0)
    log << "note: tbptt_chunk " << tc.tbptt_chunk << " is not a multiple of ttt.mini_batch_size "
        << lc.ttt.mini_batch_size << ": the fork's streaming pads every chunk to whole mini-batches, so the\n"
        << "      pads update the carried TTT state (ttt.md §6)\n";
  const int64_t window_frames = static_cast<int64_t>(std::ceil(duration_sec * codec->config().frame_rate));
  if (lc.ttt.enable && window_frames % lc.ttt.mini_batch_size != 0)
    log << "note: the window (" << window_frames << " frames) is not a multiple of ttt.mini_batch_size "
        << lc.ttt.mini_batch_size << ": its last mini-batch is zero-padded as the fork does; a zero token's\n"
        << "      XK = wk.bias is L2-normalised (eps 1e-12): the pads update the state, and a wk.bias near zero\n"
        << "      sends huge gradients into it (experiments/pad-tokens.yaml)\n";
  moshi::LMModel lm(lc);
  lm.init_random(tc.seed);
  lm.set_requires_grad(true);
  NamedParams params;
  for (auto& [name, t] : lm.named_parameters()) params.emplace_back(name, *t);

  // --- data ---
  JsonlDatasetOptions dopt;
  dopt.window = window_frames;
  dopt.cache_dir = opt.codes_cache.empty() ? (fs::path(opt.out) / "codes").string() : opt.codes_cache;
  dopt.codec_id = codec_id;
  dopt.text_token = lc.existing_text_padding_id;
  JsonlDataset ds(opt.data, *codec, dopt);
  res.windows = ds.size();
  res.files = static_cast<int64_t>(ds.entries().size());
  res.files_encoded = ds.files_encoded();
  res.files_cached = ds.files_cached();
  log << "data: " << res.files << " files (" << res.files_encoded << " encoded, " << res.files_cached
      << " from the cache " << dopt.cache_dir << "), " << res.windows << " windows of " << dopt.window
      << " frames; TBPTT chunk " << (tc.tbptt_chunk > 0 ? std::to_string(tc.tbptt_chunk) : "= window") << "\n";

  // Windows in a seeded order, reshuffled every epoch (moshi-finetune's shuffle: true).
  const int64_t n = ds.size();
  auto sample = [&](int64_t g) {
    const int64_t epoch = g / n, i = g % n;
    std::vector<int64_t> perm(static_cast<size_t>(n));
    for (int64_t k = 0; k < n; ++k) perm[static_cast<size_t>(k)] = k;
    std::mt19937_64 rng(tc.seed * 1000003ULL + static_cast<uint64_t>(epoch));
    std::shuffle(perm.begin(), perm.end(), rng);
    return perm[static_cast<size_t>(i)];
  };
  const int64_t chunk = tc.tbptt_chunk > 0 ? tc.tbptt_chunk : dopt.window;
  json model_config = json::parse(lc.to_json());
  res.train = train_tbptt(
      params, tc,
      [&](int step, int micro) {
        std::vector<int64_t> idx;
        for (int b = 0; b < tc.batch_size; ++b)
          idx.push_back(sample((static_cast<int64_t>(step) * tc.num_microbatches + micro) * tc.batch_size + b));
        at::Tensor codes = ds.batch(idx);
        return moshi_lm_sequence(lm, codes, moshi_tbptt_state(lm, codes.size(0), chunk), lo);
      },
      opt.out, model_config, {}, opt.progress);

  const auto& h = res.train.history;
  res.summary = {{"model", "tiny Moshi-TTT (lib/moshi LMConfig::tiny, random init)"},
                 {"codec", res.codec},
                 {"data", opt.data},
                 {"files", res.files},
                 {"files_encoded", res.files_encoded},
                 {"files_cached", res.files_cached},
                 {"windows", res.windows},
                 {"window_frames", dopt.window},
                 {"tbptt_chunk", tc.tbptt_chunk},
                 {"steps", h.size()},
                 {"first_loss", h.empty() ? 0.0 : h.front().loss},
                 {"final_loss", h.empty() ? 0.0 : h.back().loss},
                 {"checkpoint", res.train.last_checkpoint}};
  write_file_atomic((fs::path(opt.out) / "result.json").string(), res.summary.dump(2));
  return res;
}

}  // namespace mtt::experiments
