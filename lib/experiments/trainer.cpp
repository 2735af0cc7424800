#include "experiments/trainer.h"

#include <c10/core/GradMode.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <set>
#include <sstream>

#include "core/atomic_file.h"
#include "core/error.h"
#include "core/output_set.h"
#include "core/progress.h"
#include "nn/tensor_io.h"

namespace mtt::experiments {

namespace fs = std::filesystem;
using nlohmann::json;

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

std::string save_run_checkpoint(const std::string& run_dir, int step, const NamedParams& tensors,
                                const json& model_config) {
  char name[32];
  std::snprintf(name, sizeof name, "checkpoint_%06d", step);
  fs::path dir = fs::path(run_dir) / "checkpoints" / name / "consolidated";
  make_output_dir(dir.string());
  std::map<std::string, at::Tensor> m;
  for (const auto& [n, t] : tensors) m[n] = t.detach().contiguous().cpu();
  std::string path = (dir / "consolidated.safetensors").string();
  nn::save_tensors(path, m, {{"format", "pt"}, {"step", std::to_string(step)}});
  write_file_atomic((dir / "config.json").string(), model_config.dump(2));
  return path;
}

TrainResult train(const NamedParams& params, const TrainConfig& cfg,
                  const std::function<StepLoss(int, int)>& loss_fn, const std::string& run_dir,
                  const json& model_config, const TrainHooks& hooks, bool progress) {
  return train_micro(
      params, cfg,
      [&](int step, int micro, double divisor) {
        StepLoss sl = loss_fn(step, micro);
        (sl.loss / divisor).backward();
        return MicroStep{sl.loss.item<double>(), sl.tokens};
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
  std::ostringstream jsonl;
  Progress bar("train", static_cast<uint64_t>(cfg.max_steps), progress);
  const auto start = std::chrono::steady_clock::now();
  int64_t total_tokens = 0;
  const std::string metrics_path = run_dir.empty() ? "" : (fs::path(run_dir) / "metrics.train.jsonl").string();
  if (!run_dir.empty()) make_output_dir(run_dir, "--out");

  for (int step = 0; step < cfg.max_steps; ++step) {
    const auto t0 = std::chrono::steady_clock::now();
    for (auto& [n, p] : trainable) p.mutable_grad() = at::Tensor();
    double loss_sum = 0;
    int64_t tokens = 0;
    for (int micro = 0; micro < cfg.num_microbatches; ++micro) {
      MicroStep ms = micro_fn(step, micro, static_cast<double>(cfg.num_microbatches));
      loss_sum += ms.loss;
      tokens += ms.tokens;
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
    total_tokens += tokens;
    const auto now = std::chrono::steady_clock::now();
    const double step_s = std::chrono::duration<double>(now - t0).count();
    const double elapsed = std::chrono::duration<double>(now - start).count();
    if (!metrics_path.empty() && (rec.step % std::max(1, cfg.log_freq) == 0 || rec.step == cfg.max_steps)) {
      json line = {{"lr", lr},
                   {"step", rec.step},
                   {"loss", rec.loss},
                   {"grad_norm", grad_norm},
                   {"percent_done", 100.0 * rec.step / cfg.max_steps},
                   {"peak_allocated_mem", 0.0},
                   {"allocated_mem", 0.0},
                   {"wps", step_s > 0 ? tokens / step_s : 0.0},
                   {"avg_wps", elapsed > 0 ? total_tokens / elapsed : 0.0},
                   {"eta_in_sec", elapsed / rec.step * (cfg.max_steps - rec.step)}};
      jsonl << line.dump() << "\n";
      write_file_atomic(metrics_path, jsonl.str());
    }
    bar.advance();
    if (!run_dir.empty() && cfg.ckpt_freq > 0 && rec.step % cfg.ckpt_freq == 0 && rec.step != cfg.max_steps)
      result.last_checkpoint = save_run_checkpoint(run_dir, rec.step, params, model_config);
  }
  bar.finish();
  if (!run_dir.empty()) result.last_checkpoint = save_run_checkpoint(run_dir, cfg.max_steps, params, model_config);
  return result;
}

}  // namespace mtt::experiments
