#include "ttt/gradient_flow.h"

#include <cmath>

#include <ATen/CPUGeneratorImpl.h>

#include "core/error.h"

namespace mtt::ttt {

namespace {

at::Tensor draw(const TargetInit& init, at::IntArrayRef shape, at::Generator& gen, bool square) {
  switch (init.kind) {
    case TargetInitKind::zero: return at::zeros(shape, at::kFloat);
    case TargetInitKind::normal: return at::randn(shape, gen, at::kFloat) * init.std;
    case TargetInitKind::diagonal: {
      if (!square) throw Error("", "", "diagonal init needs a square [D, D] weight", ErrorKind::Usage);
      return at::diag(at::randn({shape[0]}, gen, at::kFloat) * init.std);
    }
  }
  return {};
}

}  // namespace

void init_target_generator(InPlaceTTT& block, const TargetInit& conv, const TargetInit& target_proj) {
  at::Generator gen = at::detail::createCPUGenerator(0x5eed);
  at::NoGradGuard no_grad;
  block.conv_weight.copy_(draw(conv, block.conv_weight.sizes(), gen, false));
  if (block.target_proj.defined()) block.target_proj.copy_(draw(target_proj, block.target_proj.sizes(), gen, true));
}

std::vector<GradientFlowStep> gradient_flow_probe(const GradientFlowConfig& cfg) {
  if (cfg.steps <= 0 || cfg.batch <= 0 || cfg.seq_len <= 0) {
    throw Error("", "", "gradient_flow_probe: steps, batch and seq_len must be > 0", ErrorKind::Usage);
  }
  InPlaceTTT block(cfg.block);
  at::Generator gen = at::detail::createCPUGenerator(cfg.seed);
  const int64_t D = cfg.block.dim;
  {
    // Every slow weight drawn from the probe's own generator so a seed fixes the whole run.
    at::NoGradGuard no_grad;
    for (auto& p : block.named_parameters(true)) {
      const double fan_in = static_cast<double>(p.value().size(-1));
      p.value().copy_(at::randn(p.value().sizes(), gen, at::kFloat) / std::sqrt(fan_in));
    }
    if (block.options().variant == InPlaceVariant::moshi_port) {
      block.w_down.copy_(block.linear_out);  // as the port's loader
      block.w_down_pretrained.copy_(block.linear_out);
    }
    at::Generator tg = at::detail::createCPUGenerator(cfg.seed + 1);
    block.conv_weight.copy_(draw(cfg.conv_init, block.conv_weight.sizes(), tg, false));
    if (block.target_proj.defined()) {
      block.target_proj.copy_(draw(cfg.target_proj_init, block.target_proj.sizes(), tg, true));
    }
  }
  at::Tensor x = at::randn({cfg.batch, cfg.seq_len, D}, gen, at::kFloat);
  at::Tensor t = at::randn({cfg.batch, cfg.seq_len, D}, gen, at::kFloat);
  at::Tensor y_star = at::randn({cfg.batch, cfg.seq_len, D}, gen, at::kFloat);

  auto trainable = [&](const std::string& name) {
    if (name.find("target_generator") != std::string::npos || name.rfind("ttt_", 0) == 0) return true;
    if (name == "w_down" || name == "down_proj.weight") return true;
    if (cfg.train_slow_ffn) return name == "linear_in.weight" || name == "gate_proj.weight" || name == "up_proj.weight";
    return false;
  };

  std::vector<GradientFlowStep> out;
  for (int64_t s = 0; s < cfg.steps; ++s) {
    GradientFlowStep rec;
    rec.step = s;
    for (auto& p : block.named_parameters(true)) {
      p.value().mutable_grad() = at::Tensor();
      rec.param_norms[p.key()] = p.value().detach().norm().item<double>();
    }
    at::Tensor y = block.forward(x, t).y;
    at::Tensor loss = (y - y_star).pow(2).mean();
    loss.backward();
    rec.loss = loss.item<double>();
    for (auto& p : block.named_parameters(true)) {
      const at::Tensor& g = p.value().grad();
      rec.grad_norms[p.key()] = g.defined() ? g.norm().item<double>() : 0.0;
    }
    {
      at::NoGradGuard no_grad;
      for (auto& p : block.named_parameters(true)) {
        if (trainable(p.key()) && p.value().grad().defined()) p.value().sub_(cfg.sgd_lr * p.value().grad());
      }
    }
    out.push_back(std::move(rec));
  }
  return out;
}

}  // namespace mtt::ttt
