// `gradient-flow`: where gradients can and cannot flow (seed 003, seed 002 §"state written into
// parameters", docs/ttt.md §7c, §8).
//   probe = inplace:<conv>/<W_target> with each factor "zero" or "random" (N(0, init_std)):
//     per-parameter gradient norms of the In-Place TTT target generator over the first steps.
//     The math: V^ = W_target(conv(t)) is a product; both zero => both gradients exactly zero
//     forever; exactly one zero => the zero factor gets a non-zero gradient.
//   probe = state:functional | state:legacy_write_params: the toy TTT LM trained twice on the same
//     data, once with the functional state and once in the given mode; drift of W0 and of the Adam
//     moments from the functional trajectory (functional vs functional is the determinism control).
#include <cmath>
#include <cstdio>

#include "core/error.h"
#include "experiments/builtin.h"
#include "experiments/config_keys.h"
#include "experiments/toy_training.h"
#include "ttt/gradient_flow.h"

namespace mtt::experiments {

namespace {

ttt::TargetInit parse_init(const std::string& s, double std, const std::string& where) {
  if (s == "zero") return ttt::TargetInit::zero();
  if (s == "random") return ttt::TargetInit::normal(std);
  if (s == "diagonal") return ttt::TargetInit::diagonal(std);
  throw Error(where, "probe", "unknown init '" + s + "' (zero, random, diagonal)");
}

double find_norm(const std::map<std::string, double>& m, const char* needle) {
  for (const auto& [k, v] : m)
    if (k.find(needle) != std::string::npos) return v;
  return NAN;
}

RunResult run_inplace_probe(const RunContext& ctx, const std::string& spec) {
  const auto& cfg = ctx.point.config;
  auto slash = spec.find('/');
  if (slash == std::string::npos) throw Error(ctx.point.id, "probe", "expected inplace:<conv>/<W_target>");
  const double init_std = cfg.value("init_std", 1e-4);
  ttt::GradientFlowConfig g;
  g.conv_init = parse_init(spec.substr(0, slash), init_std, ctx.point.id);
  g.target_proj_init = parse_init(spec.substr(slash + 1), init_std, ctx.point.id);
  g.steps = cfg.value("max_steps", 3);
  g.seed = cfg.value("seed", 0);
  g.sgd_lr = cfg.value("sgd_lr", 1e-2);
  // Several chunks per sequence, or no delta ever reaches an output (a chunk never sees its own).
  g.seq_len = cfg.value("seq_len", 16);
  g.block.chunk_size = cfg.value("chunk_size", 4);
  g.block.lr = cfg.value("inplace_lr", g.block.lr);
  const double clip = cfg.value("delta_clip_fro_norm", 1e-5);
  g.block.delta_clip_fro_norm = clip > 0 ? std::optional<double>(clip) : std::nullopt;
  auto steps = ttt::gradient_flow_probe(g);
  RunResult r;
  std::vector<double> conv, wt;
  for (const auto& s : steps) {
    conv.push_back(find_norm(s.grad_norms, "conv"));
    double w = find_norm(s.grad_norms, "W_target");
    if (std::isnan(w)) w = find_norm(s.grad_norms, "ttt_proj");
    wt.push_back(w);
  }
  r.metrics["conv_grad_first"] = conv.front();
  r.metrics["W_target_grad_first"] = wt.front();
  r.metrics["conv_grad_last"] = conv.back();
  r.metrics["W_target_grad_last"] = wt.back();
  r.evidence["probe"] = "inplace:" + spec;
  r.evidence["chunk_size"] = g.block.chunk_size;
  r.evidence["seq_len"] = g.seq_len;
  r.evidence["conv_grad_by_step"] = conv;
  r.evidence["W_target_grad_by_step"] = wt;
  nlohmann::json all = nlohmann::json::array();
  for (const auto& s : steps) all.push_back(s.grad_norms);
  r.evidence["grad_norms"] = all;
  return r;
}

RunResult run_state_probe(const RunContext& ctx, const std::string& mode) {
  ttt::Options ref_opt, var_opt;
  if (mode == "legacy_write_params")
    var_opt.state_mode = ttt::StateMode::legacy_write_params;
  else if (mode == "legacy_batch0_copy")
    var_opt.state_mode = ttt::StateMode::legacy_batch0_copy;
  else if (mode != "functional")
    throw Error(ctx.point.id, "probe", "unknown state mode '" + mode + "'");
  ToyRun ref = train_toy_lm(ctx, ref_opt, {}, /*write_run_dir=*/false);
  ToyRun var = train_toy_lm(ctx, var_opt, {}, /*write_run_dir=*/true);
  const std::string w1 = std::string(ToyTTTLM::kPrefix) + "ttt_layer.ttt.W1";
  at::Tensor a, b;
  for (auto& [n, t] : ref.model->named_parameters())
    if (n == w1) a = t.detach().to(at::kDouble);
  for (auto& [n, t] : var.model->named_parameters())
    if (n == w1) b = t.detach().to(at::kDouble);
  RunResult r;
  r.metrics["W0_drift_rel"] = ((b - a).norm() / a.norm()).item<double>();
  r.metrics["final_loss_functional"] = tail_mean_loss(ref.train, 5);
  r.metrics["final_loss_variant"] = tail_mean_loss(var.train, 5);
  r.metrics["eval_loss_functional"] = ref.eval_loss;
  r.metrics["eval_loss_variant"] = var.eval_loss;
  r.evidence["probe"] = "state:" + mode;
  return r;
}

RunResult run_gradient_flow(const RunContext& ctx) {
  std::string probe = ctx.point.config.value("probe", "");
  if (probe.rfind("inplace:", 0) == 0) return run_inplace_probe(ctx, probe.substr(8));
  if (probe.rfind("state:", 0) == 0) return run_state_probe(ctx, probe.substr(6));
  throw Error(ctx.point.id, "probe", "expected inplace:<conv>/<W_target> or state:<mode>, got '" + probe + "'");
}

Verdict verdict_gradient_flow(const std::vector<PointOutcome>& pts) {
  Verdict v;
  bool ok = true;
  std::string text;
  for (const auto& p : pts) {
    std::string probe = p.result.evidence.value("probe", "");
    char buf[256];
    if (probe.rfind("inplace:", 0) == 0) {
      double c = p.result.metrics.value("conv_grad_first", NAN), w = p.result.metrics.value("W_target_grad_first", NAN);
      bool conv_zero = probe.find("inplace:zero/") == 0, wt_zero = probe.size() >= 5 && probe.substr(probe.size() - 5) == "/zero";
      // What the chain rule requires of the first step's gradients.
      bool expect_c = !wt_zero, expect_w = !conv_zero;
      ok = ok && ((c != 0) == expect_c) && ((w != 0) == expect_w);
      std::snprintf(buf, sizeof buf, "%s: |dL/dconv| %.3g, |dL/dW_target| %.3g. ", probe.c_str(), c, w);
    } else {
      double d = p.result.metrics.value("W0_drift_rel", NAN);
      bool functional = probe == "state:functional";
      ok = ok && (functional ? d == 0.0 : d > 0.0);
      std::snprintf(buf, sizeof buf, "%s: W0 drift from the functional trajectory %.3g. ", probe.c_str(), d);
    }
    text += buf;
  }
  v.text = text + (ok ? "All as the chain rule requires: both factors zero block both gradients; one zero factor "
                        "still receives gradient; writing state into W0 moves it off its trajectory."
                      : "Some probe disagrees with what the math requires.");
  v.status = ok ? "confirmed" : "refuted";
  return v;
}

}  // namespace

ExperimentKind make_gradient_flow() {
  ExperimentKind k{"gradient-flow",
                   "In-Place TTT target-generator inits and TTT state written into W0: gradient norms, drift",
                   run_gradient_flow, verdict_gradient_flow, /*device_aware=*/false, {}};
  std::vector<std::string> probes;
  for (const char* conv : {"zero", "random", "diagonal"})
    for (const char* target : {"zero", "random", "diagonal"}) probes.push_back(std::string("inplace:") + conv + "/" + target);
  for (const char* mode : {"functional", "legacy_write_params", "legacy_batch0_copy"})
    probes.push_back(std::string("state:") + mode);
  // In-Place probes: init_std, sgd_lr, chunk_size, inplace_lr, delta_clip_fro_norm (<= 0: no clip),
  // seq_len, max_steps, seed; state probes: the toy LM's keys.
  k.config = io::ConfigRules()
                 .include(toy_lm_rules())
                 .choice("probe", probes)
                 .number("init_std", 0)
                 .number("sgd_lr", 0)
                 .integer("chunk_size", 1, 65536)
                 .number("inplace_lr", 0)
                 .number("delta_clip_fro_norm");
  return k;
}

}  // namespace mtt::experiments
