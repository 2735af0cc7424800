#include "experiments/moshi_training.h"

#include <c10/core/GradMode.h>

#include <cmath>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <memory>
#include <optional>
#include <random>
#include <set>

#include "core/atomic_file.h"
#include "core/dir_lock.h"
#include "core/output_set.h"
#include "core/error.h"
#include "core/version.h"
#include "experiments/chunked_loss.h"
#include "experiments/data_jsonl.h"
#include "experiments/finetune_args.h"
#include "experiments/spec.h"
#include "experiments/tbptt.h"
#include "mimi/mimi.h"
#include "moshi/config.h"
#include "moshi/lm.h"
#include "moshi/ttt_settings.h"

namespace mtt::experiments {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// The tiny LM sized to the codec: K Moshi + K user codebooks of the codec's cardinality, delays
// in moshiko's pattern (text 0, first codebook 0, the others 1, for each speaker).
moshi::LMConfig tiny_lm_for(int K, int bins, int64_t context, const moshi::TTTSettings& ttt, const std::string& file) {
  moshi::LMConfig c = moshi::LMConfig::tiny();
  c.card = bins;
  c.dep_q = K;
  c.n_q = 2 * K;
  c.delays = {0};
  for (int s = 0; s < 2; ++s)
    for (int k = 0; k < K; ++k) c.delays.push_back(k == 0 ? 0 : 1);
  c.context = context;
  c.ttt = ttt;
  c.validate(file);
  return c;
}

// The TTT section's keys that only steer the fork's tooling (TTTSettings reports them).
std::vector<std::string> ttt_not_acted_on(const moshi::TTTSettings& ts) { return ts.not_acted_on; }

// Keys of the YAML that this trainer honours (a mapping covers its children). The `ttt:` section is
// the TTT settings reader's; moshi_paths.mimi_path is added when it is the codec used.
std::set<std::string> acted_on_keys() {
  return {"data.train_data", "data.eval_data", "data.shuffle", "run_dir", "overwrite_run_dir", "seed", "max_steps",
          "batch_size", "num_microbatches", "max_norm", "log_freq", "ckpt_freq", "do_ckpt", "num_ckpt_keep",
          "eval_freq", "do_eval", "optim", "duration_sec", "first_codebook_weight_multiplier", "text_padding_weight",
          "tbptt_chunk", "checkpoint_group", "context", "num_codebooks"};
}

// args.yaml keys that do not change a run's trajectory: a resume may change them.
bool resume_may_change(const std::string& path) {
  static const std::set<std::string> k = {"run_dir", "overwrite_run_dir", "moshi_ttt", "wandb", "num_ckpt_keep",
                                          "ckpt_freq", "do_ckpt", "log_freq", "eval_freq", "do_eval", "data.eval_data"};
  for (std::string p = path;;) {
    if (k.count(p)) return true;
    const auto dot = p.rfind('.');
    if (dot == std::string::npos) return false;
    p = p.substr(0, dot);
  }
}

void flatten(const json& j, const std::string& prefix, std::map<std::string, json>& out) {
  if (j.is_object() && !j.empty()) {
    for (auto it = j.begin(); it != j.end(); ++it) flatten(it.value(), prefix + (prefix.empty() ? "" : ".") + it.key(), out);
  } else {
    out[prefix] = j;
  }
}

// A run dir this command made (or found empty) and that holds no checkpoint when the command fails
// is removed again (issue 15: no partial outputs): args.yaml, the codes cache and the logs of a run
// that never reached a checkpoint are not a run to --resume. A run with a checkpoint stays.
class FreshRunDirGuard {
 public:
  FreshRunDirGuard(fs::path run, bool fresh, bool existed) : run_(std::move(run)), fresh_(fresh), existed_(existed) {}
  ~FreshRunDirGuard() {
    if (!fresh_ || std::uncaught_exceptions() <= uncaught_) return;
    std::error_code ec;
    for (fs::directory_iterator it(run_ / "checkpoints", ec), end; !ec && it != end; it.increment(ec))
      if (it->path().filename().string().rfind("checkpoint_", 0) == 0) return;
    if (!existed_) {
      fs::remove_all(run_, ec);
      return;
    }
    std::vector<fs::path> entries;
    for (fs::directory_iterator it(run_, ec), end; !ec && it != end; it.increment(ec)) entries.push_back(it->path());
    for (const auto& e : entries) fs::remove_all(e, ec);
  }
  FreshRunDirGuard(const FreshRunDirGuard&) = delete;
  FreshRunDirGuard& operator=(const FreshRunDirGuard&) = delete;

 private:
  fs::path run_;
  bool fresh_, existed_;
  int uncaught_ = std::uncaught_exceptions();
};

std::string string_at(const json& args, const char* dotted) {
  const json* v = find_path(args, dotted);
  return v && v->is_string() ? v->get<std::string>() : std::string();
}

// moshi-finetune's data sources: "path", "path:weight", comma lists, folders of *.jsonl. We read one
// jsonl file.
void check_single_jsonl(const std::string& path, const std::string& file, const std::string& key) {
  std::error_code ec;
  if (fs::is_regular_file(path, ec)) return;
  if (path.find(',') != std::string::npos || (path.find(':') != std::string::npos && !fs::exists(path, ec)))
    throw Error(file, key, "'" + path + "': weighted or several data sources are not supported; give one jsonl file",
                ErrorKind::Usage);
  if (fs::is_directory(path, ec))
    throw Error(file, key, "'" + path + "' is a folder; give one jsonl file (moshi-finetune's folder form is not read)",
                ErrorKind::Usage);
  throw Error(path, "", "no such file (" + key + ")", ErrorKind::Usage);
}

}  // namespace

MoshiTrainResult train_moshi_on_jsonl(const MoshiTrainOptions& opt, std::ostream& log) {
  if (opt.config.empty()) throw Error("", "CONFIG", "a training config (YAML) is required", ErrorKind::Usage);
  const std::string text = read_file(opt.config);
  FinetuneArgs fa = read_finetune_args(text, opt.config);
  json& args = fa.args;
  TrainConfig tc = train_config_from_json(args, opt.config);
  tc.resume = opt.resume;
  moshi::TTTSettings ts;
  if (fa.given.contains("ttt") && fa.given["ttt"].is_object()) {
    ts = moshi::ttt_settings_from_yaml(text, opt.config);
  } else {  // no section: the fork's hybrid in every layer of the tiny model
    ts.enable = true;
    ts.layers = "all";
    args["ttt"]["enable"] = true;
    args["ttt"]["layers"] = "all";
  }
  // The trainer's activation checkpointing is the TTT scan's recomputation groups (docs/ttt.md §3).
  if (tc.checkpoint_group > 0) ts.scan_checkpoint_group_size = tc.checkpoint_group;
  MoshiLossOptions lo;
  lo.first_codebook_weight_multiplier = args["first_codebook_weight_multiplier"].get<double>();
  lo.text_padding_weight = args["text_padding_weight"].get<double>();
  const double duration_sec = args["duration_sec"].get<double>();
  // Finite and bounded before they reach a cast or a tensor size (an hour-long window is already
  // 45000 frames per sequence).
  auto in_range = [&](double v, const char* k, double lo, double hi, bool open_lo) {
    if (!std::isfinite(v) || (open_lo ? !(v > lo) : !(v >= lo)) || v > hi) {
      char buf[160];
      std::snprintf(buf, sizeof buf, "must be a finite number in %s%g, %g], got %g", open_lo ? "(" : "[", lo, hi, v);
      throw Error(opt.config, k, buf);
    }
  };
  in_range(duration_sec, "duration_sec", 0, 3600, true);
  in_range(lo.first_codebook_weight_multiplier, "first_codebook_weight_multiplier", 0, 1e6, false);
  in_range(lo.text_padding_weight, "text_padding_weight", 0, 1e6, false);
  auto int_key = [&](const char* k, int64_t def) -> int64_t {
    if (!args.contains(k) || args[k].is_null()) return def;
    if (!args[k].is_number_integer()) throw Error(opt.config, k, "expected an integer, got " + args[k].dump());
    return args[k].get<int64_t>();
  };
  const int64_t context = int_key("context", 16);
  if (context <= 0 || context > (int64_t{1} << 20)) throw Error(opt.config, "context", "must be in 1..1048576");
  const at::Device device = training_device(opt.device);

  // --- where: flags over the YAML ---
  MoshiTrainResult res;
  res.run_dir = !opt.out.empty() ? opt.out : args["run_dir"].get<std::string>();
  if (res.run_dir.empty())
    throw Error(opt.config, "run_dir", "no run dir: set run_dir in the config or pass --out", ErrorKind::Usage);
  const std::string train_data = !opt.data.empty() ? opt.data : string_at(args, "data.train_data");
  if (train_data.empty())
    throw Error(opt.config, "data.train_data", "no training data: set data.train_data or pass --data", ErrorKind::Usage);
  check_single_jsonl(train_data, opt.config, opt.data.empty() ? "data.train_data" : "--data");
  const std::string eval_data = !opt.eval_data.empty() ? opt.eval_data : string_at(args, "data.eval_data");
  if (tc.do_eval && eval_data.empty())
    throw Error(opt.config, "do_eval", "do_eval is set but there is no eval data (data.eval_data or --eval-data)",
                ErrorKind::Usage);
  if (tc.do_eval) check_single_jsonl(eval_data, opt.config, opt.eval_data.empty() ? "data.eval_data" : "--eval-data");
  std::string mimi_weight = opt.mimi_weight;
  std::set<std::string> acted = acted_on_keys();
  if (mimi_weight.empty() && !opt.tiny_mimi) {
    mimi_weight = string_at(args, "moshi_paths.mimi_path");
    if (!mimi_weight.empty()) acted.insert("moshi_paths.mimi_path");
  }
  if (mimi_weight.empty() && !opt.tiny_mimi)
    throw Error("", "--mimi-weight", "a Mimi checkpoint is required (--mimi-weight, moshi_paths.mimi_path, or --tiny-mimi)",
                ErrorKind::Usage);
  if (!tc.do_eval) acted.erase("data.eval_data");
  const int K = static_cast<int>(int_key("num_codebooks", mimi_weight.empty() ? mimi::MimiConfig::tiny().num_codebooks : 8));
  if (K <= 0) throw Error(opt.config, "num_codebooks", "must be positive");

  // What args.yaml records: the values this run uses.
  args["run_dir"] = res.run_dir;
  args["data"]["train_data"] = train_data;
  args["data"]["eval_data"] = eval_data;
  if (!mimi_weight.empty()) args["moshi_paths"]["mimi_path"] = mimi_weight;
  args["tbptt_chunk"] = tc.tbptt_chunk;
  args["checkpoint_group"] = tc.checkpoint_group > 0 ? json(tc.checkpoint_group) : json(nullptr);
  args["context"] = context;
  args["num_codebooks"] = K;
  args["moshi_ttt"] = build_info();
  // Keys that describe the saved weights say what was done, whatever the YAML asked (the YAML's
  // values are in the ignored line): the whole model trained in float32 without LoRA, saved whole.
  // Readers of args.yaml (the run-dir resolver, the fork's loaders) decide how to load from them.
  args["lora"]["enable"] = false;
  args["full_finetuning"] = true;
  args["save_adapters"] = false;
  args["param_dtype"] = "float32";
  args["gradient_checkpointing"] = false;

  // The one line of what the config says and nothing does.
  res.ignored = keys_not_acted_on(fa, acted);
  for (const auto& k : ttt_not_acted_on(ts)) res.ignored.push_back(k);
  if (!res.ignored.empty()) {
    log << "ignored:";
    for (size_t i = 0; i < res.ignored.size(); ++i) log << (i ? ", " : " ") << res.ignored[i];
    log << "\n";
  }

  // --- codec ---
  std::unique_ptr<mimi::MimiModel> codec;
  std::string codec_id;
  if (!mimi_weight.empty()) {
    codec = std::make_unique<mimi::MimiModel>(mimi::MimiModel::load(mimi_weight));
    codec_id = fs::absolute(mimi_weight).string();
    res.codec = "Mimi " + mimi_weight;
  } else {
    codec = std::make_unique<mimi::MimiModel>(mimi::MimiModel::random(mimi::MimiConfig::tiny(), tc.seed));
    codec_id = "tiny-random-seed-" + std::to_string(tc.seed);
    res.codec = "tiny Mimi, random weights (seed " + std::to_string(tc.seed) + ")";
    log << "[tiny-mimi] the audio is encoded by the tiny Mimi with RANDOM weights: the codes carry no speech\n"
           "            content; this checks the pipeline end to end (use --mimi-weight for real runs).\n";
  }
  try {
    codec->set_num_codebooks(K);
  } catch (const Error& e) {
    // A config value the codec cannot honour: the config's fault, said before any file is written.
    throw Error(opt.config, e.key(), e.reason());
  }

  // Every jsonl line checked before the run dir is made (the audio is read when it is encoded).
  read_finetune_jsonl(train_data);
  if (tc.do_eval) read_finetune_jsonl(eval_data);

  // --- the run dir: moshi-finetune refuses an existing one unless overwrite_run_dir ---
  const fs::path run = res.run_dir;
  std::error_code ec;
  const bool non_empty = fs::is_directory(run, ec) && fs::directory_iterator(run, ec) != fs::directory_iterator();
  if (fs::exists(run, ec) && !fs::is_directory(run, ec))
    throw Error(res.run_dir, "", "the run dir is a file", ErrorKind::Usage);
  const fs::path args_path = run / "args.yaml";
  // Locked before it is read: a second command on the same run dir stops here, whatever it asked.
  const char* const in_use = "is in use by another training run (wait for it to finish, or give another --out)";
  std::optional<DirLock> lock;
  const bool existed = fs::is_directory(run, ec);
  if (existed) lock.emplace(run.string(), /*shared=*/false, in_use);
  bool fresh = !non_empty;  // made (or found empty) by this command: emptied again if it fails
  if (non_empty && opt.resume && !fs::exists(args_path))
    throw Error(res.run_dir, "",
                fs::exists(run / "sweep.json")
                    ? "holds a sweep of ttt-sweep run (sweep.json), not a training run: give another --out"
                    : "is not a training run dir (no args.yaml): --resume continues a run of ttt-sweep train",
                ErrorKind::Usage);
  if (non_empty && opt.resume) {
    if (fs::exists(args_path)) {
      // The run's own settings: a resume continues that run, not another one.
      std::map<std::string, json> was, now;
      const json run_args = yaml_to_json(read_file(args_path.string()), args_path.string());
      if (!run_args.is_object()) throw Error(args_path.string(), "", "expected a YAML mapping (the run's settings)");
      flatten(run_args, "", was);
      flatten(args, "", now);
      for (const auto& [k, v] : now) {
        if (resume_may_change(k)) continue;
        auto it = was.find(k);
        const bool same = it != was.end() && (it->second == v || (it->second.is_number() && v.is_number() &&
                                                                  it->second.get<double>() == v.get<double>()));
        if (!same)
          throw Error(args_path.string(), k,
                      "the run was started with " + (it == was.end() ? std::string("no value") : it->second.dump()) +
                          ", the config now says " + v.dump() + ": --resume continues that run (use another run_dir)",
                      ErrorKind::Usage);
      }
    }
  } else if (non_empty && args["overwrite_run_dir"].get<bool>()) {
    log << "overwrite_run_dir: removing " << res.run_dir << "\n";
    for (fs::directory_iterator it(run), end; it != end; ++it) fs::remove_all(it->path());
    fresh = true;
  } else if (non_empty) {
    throw Error(res.run_dir, "",
                "the run dir exists and is not empty: pass --resume to continue its run, set overwrite_run_dir: true "
                "to replace it, or choose another run_dir",
                ErrorKind::Usage);
  }
  make_output_dir(run.string(), "--out");
  if (!lock) lock.emplace(run.string(), /*shared=*/false, in_use);
  FreshRunDirGuard guard(run, fresh, existed);
  if (!fs::exists(args_path)) write_file_atomic(args_path.string(), finetune_args_yaml(args));

  // --- model ---
  moshi::LMConfig lc = tiny_lm_for(K, codec->config().quantizer.bins, context, ts, opt.config);
  if (lc.ttt.enable && tc.tbptt_chunk > 0 && tc.tbptt_chunk % lc.ttt.mini_batch_size != 0)
    log << "note: tbptt_chunk " << tc.tbptt_chunk << " is not a multiple of ttt.mini_batch_size "
        << lc.ttt.mini_batch_size << ": the fork's streaming pads every chunk to whole mini-batches, so the\n"
        << "      pads update the carried TTT state (docs/ttt.md §6)\n";
  const int64_t window_frames = static_cast<int64_t>(std::ceil(duration_sec * codec->config().frame_rate));
  if (lc.ttt.enable && window_frames % lc.ttt.mini_batch_size != 0)
    log << "note: the window (" << window_frames << " frames) is not a multiple of ttt.mini_batch_size "
        << lc.ttt.mini_batch_size << ": its last mini-batch is zero-padded as the fork does; a zero token's\n"
        << "      XK = wk.bias is L2-normalised (eps 1e-12): the pads update the state, and a wk.bias near zero\n"
        << "      sends huge gradients into it (experiments/pad-tokens.yaml)\n";
  moshi::LMModel lm(lc);
  lm.init_random(tc.seed);
  if (device.is_cuda())
    for (auto& [name, t] : lm.named_parameters())  // aliases share one handle: moved once
      if (t->defined() && t->device() != device) *t = t->to(device);
  lm.set_requires_grad(true);
  NamedParams params;
  for (auto& [name, t] : lm.named_parameters()) params.emplace_back(name, *t);

  // --- data ---
  JsonlDatasetOptions dopt;
  dopt.window = window_frames;
  dopt.cache_dir = opt.codes_cache.empty() ? (run / "codes").string() : opt.codes_cache;
  dopt.codec_id = codec_id;
  dopt.text_token = lc.existing_text_padding_id;
  JsonlDataset ds(train_data, *codec, dopt);
  res.windows = ds.size();
  res.files = static_cast<int64_t>(ds.entries().size());
  res.files_encoded = ds.files_encoded();
  res.files_cached = ds.files_cached();
  log << "data: " << res.files << " files (" << res.files_encoded << " encoded, " << res.files_cached
      << " from the cache " << dopt.cache_dir << "), " << res.windows << " windows of " << dopt.window
      << " frames; TBPTT chunk " << (tc.tbptt_chunk > 0 ? std::to_string(tc.tbptt_chunk) : "= window") << "\n";
  std::unique_ptr<JsonlDataset> eval_ds;
  if (tc.do_eval) {
    eval_ds = std::make_unique<JsonlDataset>(eval_data, *codec, dopt);
    res.eval_windows = eval_ds->size();
    if (eval_ds->size() < tc.batch_size)
      throw Error(eval_data, "", "the eval data has " + std::to_string(eval_ds->size()) + " windows, fewer than one batch of " +
                                     std::to_string(tc.batch_size));
  }

  // The order of windows: moshi-finetune's data.shuffle (default false) reads them in file order
  // epoch after epoch; shuffled, each epoch is a new seeded permutation. Either way sample g is a
  // function of g, so a resumed run reads on from its step.
  const int64_t n = ds.size();
  const bool shuffle = args["data"]["shuffle"].get<bool>();
  auto sample = [&](int64_t g) {
    const int64_t epoch = g / n, i = g % n;
    if (!shuffle) return i;
    std::vector<int64_t> perm(static_cast<size_t>(n));
    for (int64_t k = 0; k < n; ++k) perm[static_cast<size_t>(k)] = k;
    std::mt19937_64 rng(tc.seed * 1000003ULL + static_cast<uint64_t>(epoch));
    std::shuffle(perm.begin(), perm.end(), rng);
    return perm[static_cast<size_t>(i)];
  };
  const int64_t chunk = tc.tbptt_chunk > 0 ? tc.tbptt_chunk : dopt.window;
  TrainHooks hooks;
  if (eval_ds) {
    // finetune/eval.py: the eval windows in order, whole batches only, at most 40 of them; the
    // mean of (text + audio) loss per batch, without gradients; chunked like training.
    hooks.evaluate = [&](int) {
      c10::NoGradGuard no_grad;
      const int64_t batches = std::min<int64_t>(40, eval_ds->size() / tc.batch_size);
      double total = 0;
      for (int64_t b = 0; b < batches; ++b) {
        std::vector<int64_t> idx;
        for (int64_t k = 0; k < tc.batch_size; ++k) idx.push_back(b * tc.batch_size + k);
        const at::Tensor codes = eval_ds->batch(idx).to(device);
        ChunkedSequence seq = moshi_lm_sequence(lm, codes, moshi_tbptt_state(lm, codes.size(0), chunk), lo);
        for (const auto& [s, len] : chunk_spans(seq.length, chunk)) {
          total += seq.chunk_loss(s, len).loss.item<double>();
          seq.detach_state();
        }
      }
      return total / static_cast<double>(batches);
    };
  }
  json model_config = json::parse(lc.to_json());
  res.train = train_tbptt(
      params, tc,
      [&](int step, int micro) {
        std::vector<int64_t> idx;
        for (int b = 0; b < tc.batch_size; ++b)
          idx.push_back(sample((static_cast<int64_t>(step) * tc.num_microbatches + micro) * tc.batch_size + b));
        at::Tensor codes = ds.batch(idx).to(device);
        return moshi_lm_sequence(lm, codes, moshi_tbptt_state(lm, codes.size(0), chunk), lo);
      },
      res.run_dir, model_config, hooks, opt.progress);

  const auto& h = res.train.history;
  json evals = json::array();
  for (const auto& e : res.train.evals) evals.push_back({{"step", e.step}, {"eval_loss", e.eval_loss}, {"perplexity", e.perplexity}});
  res.summary = {{"model", "tiny Moshi-TTT (lib/moshi LMConfig::tiny, random init)"},
                 {"codec", res.codec},
                 {"data", train_data},
                 {"eval_data", tc.do_eval ? json(eval_data) : json(nullptr)},
                 {"device", device.str()},
                 {"files", res.files},
                 {"files_encoded", res.files_encoded},
                 {"files_cached", res.files_cached},
                 {"windows", res.windows},
                 {"window_frames", dopt.window},
                 {"tbptt_chunk", tc.tbptt_chunk},
                 {"steps", h.size()},
                 {"resumed_from", res.train.resumed_from},
                 {"first_loss", h.empty() ? json(nullptr) : json(h.front().loss)},
                 {"final_loss", h.empty() ? json(nullptr) : json(h.back().loss)},
                 {"evals", evals},
                 {"ignored", res.ignored},
                 {"checkpoint", res.train.last_checkpoint},
                 {"moshi_ttt", build_info()}};
  write_file_atomic((run / "result.json").string(), res.summary.dump(2));
  return res;
}

}  // namespace mtt::experiments
