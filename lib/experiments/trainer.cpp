#include "experiments/trainer.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/detail/CUDAHooksInterface.h>
#include <c10/core/GradMode.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <mutex>
#include <set>
#include <sstream>

#include "core/atomic_file.h"
#include "core/error.h"
#include "core/parse_number.h"
#include "io/strict_json.h"
#include "core/output_set.h"
#include "core/progress.h"
#include "experiments/memory_stats.h"
#include "experiments/metrics_logger.h"
#include "io/checkpoint.h"
#include "io/safetensors.h"
#include "nn/tensor_io.h"

namespace mtt::experiments {

namespace fs = std::filesystem;
using nlohmann::json;

at::Device training_device(const std::string& spec, const std::string& flag) {
  std::optional<at::Device> d;
  try {
    d = at::Device(spec);
  } catch (const std::exception&) {
  }
  if (!d || !(d->is_cpu() || d->is_cuda()))
    throw Error("", flag, "expected cpu, cuda or cuda:N, got '" + spec + "'", ErrorKind::Usage);
  if (d->is_cuda()) {
    const int n = at::detail::getCUDAHooks().deviceCount();
    if (n <= 0)
      throw Error("", flag, "no CUDA device is visible to LibTorch (a CPU-only LibTorch, no GPU or no driver)",
                  ErrorKind::Usage);
    if (d->has_index() && d->index() >= n)
      throw Error("", flag, spec + ": only " + std::to_string(n) + " CUDA device(s) visible", ErrorKind::Usage);
    if (!d->has_index()) d = at::Device(at::kCUDA, 0);
  }
  return *d;
}

bool is_ttt_param(const std::string& n) {
  return n.find("ttt") != std::string::npos || n.find("ssm") != std::string::npos;
}

bool is_no_decay_param(const std::string& n) {
  for (const char* s : {"bias", "norm", "b1", "b2", "gating_alpha", "biases."})
    if (n.find(s) != std::string::npos) return true;
  return false;
}

double one_cycle_lr(double max_lr, int step, int total_steps, double pct_start) {
  // torch.optim.lr_scheduler.OneCycleLR, two phases, cos annealing: the lr used for update
  // number `step` (0-based).
  const double initial = max_lr / 25.0, min_lr = initial / 1e4;
  const double warm_end = pct_start * total_steps - 1;
  const double last = total_steps - 1;
  auto cos_anneal = [](double start, double end, double pct) { return end + (start - end) / 2.0 * (std::cos(M_PI * pct) + 1); };
  if (step <= warm_end) return cos_anneal(initial, max_lr, warm_end > 0 ? step / warm_end : 1.0);
  double span = last - warm_end;
  return cos_anneal(max_lr, min_lr, span > 0 ? (step - warm_end) / span : 1.0);
}

double one_cycle_beta1(int step, int total_steps, double pct_start) {
  const double base = 0.85, max = 0.95;
  const double warm_end = pct_start * total_steps - 1;
  const double last = total_steps - 1;
  auto cos_anneal = [](double start, double end, double pct) { return end + (start - end) / 2.0 * (std::cos(M_PI * pct) + 1); };
  if (step <= warm_end) return cos_anneal(max, base, warm_end > 0 ? step / warm_end : 1.0);
  double span = last - warm_end;
  return cos_anneal(base, max, span > 0 ? (step - warm_end) / span : 1.0);
}

AdamW::AdamW(NamedParams params, const TrainConfig& cfg) : params_(std::move(params)), cfg_(cfg) {
  for (const auto& [name, p] : params_) {
    m_.push_back(at::zeros_like(p, p.options().dtype(at::kFloat)));
    v_.push_back(at::zeros_like(p, p.options().dtype(at::kFloat)));
  }
}

void AdamW::step(double lr, double ssm_lr, double beta1) {
  c10::NoGradGuard no_grad;
  ++t_;
  // torch.optim.AdamW takes the bias correction with the group's current beta1.
  const double bc1 = 1 - std::pow(beta1, static_cast<double>(t_));
  const double bc2 = 1 - std::pow(cfg_.beta2, static_cast<double>(t_));
  for (std::size_t i = 0; i < params_.size(); ++i) {
    const auto& [name, p] = params_[i];
    if (!p.grad().defined()) continue;
    const double plr = is_ttt_param(name) && ssm_lr >= 0 ? ssm_lr : lr;
    const double wd = is_no_decay_param(name) ? 0.0 : cfg_.weight_decay;
    at::Tensor g = p.grad().to(at::kFloat);
    // Moments in fp32 whatever the parameter dtype (standards: statistics in fp32).
    m_[i].mul_(beta1).add_(g, 1 - beta1);
    v_[i].mul_(cfg_.beta2).addcmul_(g, g, 1 - cfg_.beta2);
    at::Tensor denom = (v_[i] / bc2).sqrt_().add_(cfg_.eps);
    at::Tensor update = (m_[i] / bc1) / denom;
    at::Tensor p32 = p.to(at::kFloat);
    p32.mul_(1 - plr * wd).sub_(update, plr);
    p.copy_(p32);
  }
}

at::Tensor AdamW::exp_avg(const std::string& name) const {
  for (std::size_t i = 0; i < params_.size(); ++i)
    if (params_[i].first == name) return m_[i];
  throw Error("", name, "no such parameter in the optimizer", ErrorKind::Internal);
}

at::Tensor AdamW::exp_avg_sq(const std::string& name) const {
  for (std::size_t i = 0; i < params_.size(); ++i)
    if (params_[i].first == name) return v_[i];
  throw Error("", name, "no such parameter in the optimizer", ErrorKind::Internal);
}

void AdamW::save_state(std::map<std::string, at::Tensor>& out) const {
  for (std::size_t i = 0; i < params_.size(); ++i) {
    out["optimizer.exp_avg." + params_[i].first] = m_[i];
    out["optimizer.exp_avg_sq." + params_[i].first] = v_[i];
  }
}

void AdamW::load_state(const std::map<std::string, at::Tensor>& in, int64_t steps, const std::string& file) {
  c10::NoGradGuard no_grad;
  for (std::size_t i = 0; i < params_.size(); ++i) {
    for (auto [prefix, dst] : {std::pair<const char*, at::Tensor*>{"optimizer.exp_avg.", &m_[i]},
                               std::pair<const char*, at::Tensor*>{"optimizer.exp_avg_sq.", &v_[i]}}) {
      auto it = in.find(prefix + params_[i].first);
      if (it == in.end()) throw Error(file, prefix + params_[i].first, "missing from the training state");
      if (!it->second.sizes().equals(dst->sizes()))
        throw Error(file, prefix + params_[i].first, "shape differs from the model's parameter");
      dst->copy_(it->second);
    }
  }
  t_ = steps;
}

namespace {

constexpr const char* kStateFile = "training_state.safetensors";
constexpr const char* kStateFormat = "moshi-ttt/training-state/1";

std::string checkpoint_name(int step) {
  char name[32];
  std::snprintf(name, sizeof name, "checkpoint_%06d", step);
  return name;
}

// The settings that decide a run's trajectory: a resume must use the same ones.
nlohmann::json trajectory_settings(const TrainConfig& c) {
  return {{"max_steps", c.max_steps}, {"seed", c.seed}, {"batch_size", c.batch_size},
          {"num_microbatches", c.num_microbatches}, {"max_norm", c.max_norm}, {"optim.lr", c.lr},
          {"optim.weight_decay", c.weight_decay}, {"optim.pct_start", c.pct_start}, {"ttt.lr", c.ssm_lr},
          {"tbptt_chunk", c.tbptt_chunk}, {"checkpoint_group", c.checkpoint_group}};
}

std::string num(double v) {
  char b[40];
  std::snprintf(b, sizeof b, "%.17g", v);
  return b;
}

// Per-run counters that the metrics carry across a resume (moshi-finetune's TrainState).
struct RunState {
  double elapsed = 0;       // seconds spent in steps
  int64_t seen_tokens = 0;  // tokens of every step so far
  std::optional<double> prev_alpha_raw;
};

at::Generator cpu_generator() { return at::detail::getDefaultCPUGenerator(); }

}  // namespace

std::string save_run_checkpoint(const std::string& run_dir, int step, const NamedParams& tensors, const json& model_config,
                                const std::map<std::string, ExtraCheckpointFile>& extra) {
  const fs::path ckdir = fs::path(run_dir) / "checkpoints";
  const std::string name = checkpoint_name(step);
  const fs::path tmp = ckdir / ("tmp." + name), final_dir = ckdir / name;
  fs::remove_all(tmp);
  make_output_dir((tmp / "consolidated").string());
  try {
    std::map<std::string, at::Tensor> m;
    for (const auto& [n, t] : tensors) m[n] = t.detach().contiguous().cpu();
    nn::save_tensors((tmp / "consolidated" / "consolidated.safetensors").string(), m,
                     {{"format", "pt"}, {"step", std::to_string(step)}});
    write_file_atomic((tmp / "consolidated" / "config.json").string(), model_config.dump(2));
    for (const auto& [file, content] : extra) {
      std::map<std::string, at::Tensor> cpu;
      for (const auto& [k, t] : content.tensors) cpu[k] = t.detach().contiguous().cpu();
      nn::save_tensors((tmp / "consolidated" / file).string(), cpu, content.metadata);
    }
  } catch (...) {
    // A save that failed (a full disk) leaves no half checkpoint beside the complete ones.
    std::error_code ec;
    fs::remove_all(tmp, ec);
    throw;
  }
  // moshi-finetune's Checkpointer writes tmp.checkpoint_NNNNNN and renames it the same way.
  fs::remove_all(final_dir);
  fs::rename(tmp, final_dir);
  return (final_dir / "consolidated" / "consolidated.safetensors").string();
}

int newest_resumable_step(const std::string& run_dir) {
  std::error_code ec;
  const fs::path ckdir = fs::path(run_dir) / "checkpoints";
  int best = -1;
  for (fs::directory_iterator it(ckdir, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string n = it->path().filename().string();
    if (n.rfind("checkpoint_", 0) != 0 || n.size() != 17) continue;
    if (n.find_first_not_of("0123456789", 11) != std::string::npos) continue;
    if (!fs::exists(it->path() / "consolidated" / kStateFile)) continue;
    best = std::max(best, std::stoi(n.substr(11)));
  }
  return best;
}

TrainResult train(const NamedParams& params, const TrainConfig& cfg,
                  const std::function<StepLoss(int, int)>& loss_fn, const std::string& run_dir,
                  const json& model_config, const TrainHooks& hooks, bool progress) {
  return train_micro(
      params, cfg,
      [&](int step, int micro, double divisor) {
        StepLoss sl = loss_fn(step, micro);
        (sl.loss / divisor).backward();
        return MicroStep{sl.loss.item<double>(), sl.tokens, sl.real_tokens};
      },
      run_dir, model_config, hooks, progress);
}

TrainResult train_micro(const NamedParams& params, const TrainConfig& cfg,
                        const std::function<MicroStep(int, int, double)>& micro_fn, const std::string& run_dir,
                        const json& model_config, const TrainHooks& hooks, bool progress) {
  NamedParams trainable;
  // A tensor registered under two names (the fork's duplicate original_layer.* copies, lm.cpp) is
  // one parameter, as in torch's model.parameters(): updated and counted in the norm once.
  std::set<const void*> seen;
  for (const auto& np : params)
    if (np.second.requires_grad() && seen.insert(np.second.unsafeGetTensorImpl()).second) trainable.push_back(np);
  AdamW opt(trainable, cfg);
  TrainResult result;
  if (cfg.do_eval && !hooks.evaluate)
    throw Error(run_dir, "do_eval", "this training has no eval split (set do_eval: false)", ErrorKind::Usage);

  // What the TTT fork's metrics add for a TTT model: the per-group lrs and the first gate in
  // module order (the forward gate of the first TTT layer).
  bool has_ttt = false;
  for (const auto& [n, p] : trainable) has_ttt = has_ttt || is_ttt_param(n);
  at::Tensor gate;
  for (const auto& [n, p] : params) {
    if (n.size() >= 12 && n.compare(n.size() - 12, 12, "gating_alpha") == 0) {
      gate = p;
      break;
    }
  }
  const int device_index =
      !trainable.empty() && trainable.front().second.is_cuda() ? trainable.front().second.get_device() : -1;

  // Every RNG from the config's seed first, as moshi-finetune's train.py (set_random_seed(args.seed)):
  // two runs of one config give the same metrics, and a resume that finds no checkpoint yet starts
  // where the interrupted run started. A resume from a checkpoint then restores its RNG state.
  at::manual_seed(cfg.seed);

  RunState rs;
  int start = 0;
  std::unique_ptr<MetricsLogger> train_log, eval_log;
  if (!run_dir.empty()) {
    fs::create_directories(run_dir);
    std::error_code ec;
    for (fs::directory_iterator it(fs::path(run_dir) / "checkpoints", ec), end; !ec && it != end; it.increment(ec))
      if (it->path().filename().string().rfind("tmp.checkpoint_", 0) == 0) fs::remove_all(it->path());  // a killed save
    if (cfg.resume) {
      const int s = newest_resumable_step(run_dir);
      if (s > 0) {
        const fs::path dir = fs::path(run_dir) / "checkpoints" / checkpoint_name(s) / "consolidated";
        const std::string state_path = (dir / kStateFile).string();
        auto file = io::SafetensorsFile::open(state_path);
        const auto& meta = file->metadata();
        auto get = [&](const char* k) {
          auto it = meta.find(k);
          if (it == meta.end()) throw Error(state_path, k, "missing from the training state's metadata");
          return it->second;
        };
        if (get("format") != kStateFormat) throw Error(state_path, "format", "not a " + std::string(kStateFormat) + " file");
        const json was = io::parse_json_strict(get("train_config"), state_path, "train_config"),
                   now = trajectory_settings(cfg);
        if (!was.is_object()) throw Error(state_path, "train_config", "expected a JSON object");
        for (auto it = now.begin(); it != now.end(); ++it)
          if (!was.contains(it.key()) || was[it.key()] != it.value())
            throw Error(state_path, it.key(),
                        "the run was trained with " + (was.contains(it.key()) ? was[it.key()].dump() : std::string("none")) +
                            ", the config now says " + it.value().dump() + ": a resume needs the same settings",
                        ErrorKind::Usage);
        const auto tensors = nn::load_tensors(state_path);
        const auto steps = parse_int64(get("optimizer_steps"));
        if (!steps || *steps < 0)
          throw Error(state_path, "optimizer_steps", "expected a step count, got '" + get("optimizer_steps") + "'");
        opt.load_state(tensors, *steps, state_path);
        // The weights of that step, into the live parameters (every name, aliases included).
        const std::string weights = (dir / "consolidated.safetensors").string();
        const auto saved = nn::load_tensors(weights);
        {
          c10::NoGradGuard no_grad;
          for (const auto& [n, p] : params) {
            auto it = saved.find(n);
            if (it == saved.end()) throw Error(weights, n, "missing: this checkpoint is not of this model");
            if (!it->second.sizes().equals(p.sizes())) throw Error(weights, n, "shape differs from the model's");
            p.copy_(it->second);
          }
        }
        // The RNG where the uninterrupted run had it after step s.
        if (auto it = tensors.find("rng.cpu"); it != tensors.end()) {
          at::Generator g = cpu_generator();
          std::lock_guard<std::mutex> lock(g.mutex());
          g.set_state(it->second);
        }
        if (auto it = tensors.find("rng.cuda"); it != tensors.end() && device_index >= 0) {
          at::Generator g = at::globalContext().defaultGenerator(at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(device_index)));
          std::lock_guard<std::mutex> lock(g.mutex());
          g.set_state(it->second);
        }
        // Metadata a person may have edited: numbers or a one-line error naming the key.
        auto number = [&](const char* k) {
          const auto v = parse_finite_double(get(k));
          if (!v) throw Error(state_path, k, "expected a number, got '" + get(k) + "'");
          return *v;
        };
        auto integer = [&](const char* k) {
          const auto v = parse_int64(get(k));
          if (!v || *v < 0) throw Error(state_path, k, "expected a count, got '" + get(k) + "'");
          return *v;
        };
        rs.elapsed = number("elapsed_time");
        rs.seen_tokens = integer("n_seen_tokens");
        if (const std::string a = get("prev_gating_alpha_raw"); !a.empty()) rs.prev_alpha_raw = number("prev_gating_alpha_raw");
        const int64_t pos = integer("data_position");
        const int64_t expect = static_cast<int64_t>(s) * cfg.num_microbatches * cfg.batch_size;
        if (pos != expect)
          throw Error(state_path, "data_position", "is " + std::to_string(pos) + ", the step implies " + std::to_string(expect));
        start = s;
        result.resumed_from = s;
      }
      truncate_metrics_after(run_dir, "train", start);
      truncate_metrics_after(run_dir, "eval", start);
    }
    train_log = std::make_unique<MetricsLogger>(run_dir, "train");
    eval_log = std::make_unique<MetricsLogger>(run_dir, "eval");
  }

  Progress bar("train", static_cast<uint64_t>(cfg.max_steps), progress, "step");
  bar.resume_at(static_cast<uint64_t>(start));
  for (int step = start; step < cfg.max_steps; ++step) {
    const auto t0 = std::chrono::steady_clock::now();
    for (auto& [n, p] : trainable) p.mutable_grad() = at::Tensor();
    double loss_sum = 0;
    int64_t tokens = 0, real_tokens = 0;
    for (int micro = 0; micro < cfg.num_microbatches; ++micro) {
      MicroStep ms = micro_fn(step, micro, static_cast<double>(cfg.num_microbatches));
      loss_sum += ms.loss;
      tokens += ms.tokens;
      real_tokens += ms.real_tokens < 0 ? ms.tokens : ms.real_tokens;
    }
    // Global L2 norm over every gradient (torch.nn.utils.clip_grad_norm_).
    double sq = 0;
    for (auto& [n, p] : trainable)
      if (p.grad().defined()) sq += p.grad().to(at::kDouble).pow(2).sum().item<double>();
    const double grad_norm = std::sqrt(sq);
    if (cfg.max_norm > 0 && grad_norm > cfg.max_norm) {
      const double scale = cfg.max_norm / (grad_norm + 1e-6);
      for (auto& [n, p] : trainable)
        if (p.grad().defined()) p.mutable_grad().mul_(scale);
    }
    if (hooks.on_gradients) hooks.on_gradients(step);
    const double lr = one_cycle_lr(cfg.lr, step, cfg.max_steps, cfg.pct_start);
    const double ssm_lr = cfg.ssm_lr >= 0 ? one_cycle_lr(cfg.ssm_lr, step, cfg.max_steps, cfg.pct_start) : -1;
    opt.step(lr, ssm_lr, one_cycle_beta1(step, cfg.max_steps, cfg.pct_start));

    StepRecord rec{step + 1, loss_sum / cfg.num_microbatches, lr, grad_norm};
    result.history.push_back(rec);
    if (hooks.after_step) hooks.after_step(rec);

    // train.py's order: eval, then the step's timing, the train log line, the checkpoint.
    if (cfg.do_eval && ((cfg.eval_freq > 0 && rec.step % cfg.eval_freq == 0) || rec.step == cfg.max_steps)) {
      const double el = hooks.evaluate(rec.step);
      EvalRecord er{rec.step, el, std::pow(2.0, el), rec.loss};
      result.evals.push_back(er);
      if (eval_log)
        eval_log->log({{"step", er.step}, {"train_loss", er.train_loss}, {"perplexity", er.perplexity}, {"eval_loss", el}},
                      rec.step);
    }
    const double step_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    rs.elapsed += step_s;
    rs.seen_tokens += tokens;
    if (train_log && rec.step % cfg.log_freq == 0) {
      const MemoryStats mem = memory_stats(device_index);
      constexpr double GB = 1024.0 * 1024.0 * 1024.0;
      nlohmann::ordered_json m = {
          {"lr", lr},
          {"step", rec.step},
          {"loss", rec.loss},
          {"prob_real_tokens", tokens > 0 ? static_cast<double>(real_tokens) / static_cast<double>(tokens) : 0.0},
          {"percent_done", 100.0 * rec.step / cfg.max_steps},
          {"peak_allocated_mem", static_cast<double>(mem.peak_bytes) / GB},
          {"allocated_mem", static_cast<double>(mem.current_bytes) / GB},
          {"wps", step_s > 0 ? tokens / step_s : 0.0},
          {"avg_wps", rs.elapsed > 0 ? rs.seen_tokens / rs.elapsed : 0.0},
          {"eta_in_seconds", (cfg.max_steps - rec.step) * (rs.elapsed / rec.step)}};
      if (has_ttt) {  // the fork's multi-lr fields (base, TTT weights, gating alpha)
        m["lr_base"] = lr;
        m["lr_ttt_weights"] = ssm_lr >= 0 ? ssm_lr : lr;
        m["lr_ttt_alpha"] = ssm_lr >= 0 ? ssm_lr : lr;
      }
      if (gate.defined()) {
        c10::NoGradGuard no_grad;
        const double raw = gate.detach().to(at::kDouble).mean().item<double>();
        m["ttt_gating_alpha"] = gate.detach().to(at::kDouble).tanh().mean().item<double>();
        m["ttt_gating_alpha_raw"] = raw;
        if (rs.prev_alpha_raw) m["ttt_alpha_change"] = std::abs(raw - *rs.prev_alpha_raw);
        rs.prev_alpha_raw = raw;
      }
      train_log->log(m, rec.step);
    }
    {
      char note[48];
      std::snprintf(note, sizeof note, "loss %.4f", rec.loss);
      bar.note(note);
    }
    bar.advance();
    if (!run_dir.empty() && cfg.do_ckpt &&
        ((cfg.ckpt_freq > 0 && rec.step % cfg.ckpt_freq == 0) || rec.step == cfg.max_steps)) {
      ExtraCheckpointFile st;
      opt.save_state(st.tensors);
      st.tensors["rng.cpu"] = cpu_generator().get_state();
      if (device_index >= 0)
        st.tensors["rng.cuda"] =
            at::globalContext().defaultGenerator(at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(device_index))).get_state();
      st.metadata = {{"format", kStateFormat},
                     {"step", std::to_string(rec.step)},
                     {"optimizer_steps", std::to_string(opt.steps())},
                     {"elapsed_time", num(rs.elapsed)},
                     {"n_seen_tokens", std::to_string(rs.seen_tokens)},
                     {"data_position", std::to_string(static_cast<int64_t>(rec.step) * cfg.num_microbatches * cfg.batch_size)},
                     {"prev_gating_alpha_raw", rs.prev_alpha_raw ? num(*rs.prev_alpha_raw) : ""},
                     {"train_config", trajectory_settings(cfg).dump()}};
      result.last_checkpoint = save_run_checkpoint(run_dir, rec.step, params, model_config, {{kStateFile, st}});
      if (cfg.num_ckpt_keep) {
        const auto steps = io::Checkpoint::list_steps(run_dir);
        for (size_t i = 0; i + static_cast<size_t>(*cfg.num_ckpt_keep) < steps.size(); ++i)
          fs::remove_all(fs::path(run_dir) / "checkpoints" / checkpoint_name(static_cast<int>(steps[i])));
      }
    }
  }
  bar.finish();
  return result;
}

}  // namespace mtt::experiments
