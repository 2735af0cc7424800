// TTT inner loop (dual form, docs/ttt.md §2) and scan with checkpoint groups (§3).
#include "ttt/ttt_scan.h"

#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/custom_function.h>

#include <mutex>
#include <tuple>
#include <string>
#include <utility>

#include "core/error.h"
#include "kernels/common/gelu.h"
#include "ttt/scan_cpu_fused.h"

namespace mtt::ttt {

namespace {

// GELU constants (one definition for the kernels and lib/ttt: kernels/common/gelu.h).
constexpr double kGeluCForward = kernels::gelu_tanh::kCForward;  // gelu(z): F.gelu's sqrt(2/pi)
constexpr double kGeluC = kernels::gelu_tanh::kC;                // gelu'(z): gelu_bwd's literal
constexpr double kGeluA = kernels::gelu_tanh::kA;
constexpr double kGeluC3 = kernels::gelu_tanh::kC3;

at::Tensor head_param(const at::Tensor& p, const at::Tensor& like) {
  // [H, d] -> [1, H, 1, d] in the compute dtype (ttt_norm gamma/beta broadcast over tokens, §2.1).
  return p.to(like.scalar_type()).view({1, p.size(0), 1, p.size(1)});
}

std::mutex g_backends_mu;
std::vector<std::pair<std::string, ScanBackend>>& backends() {
  static std::vector<std::pair<std::string, ScanBackend>> b;
  return b;
}

}  // namespace

at::Tensor gelu_tanh(const at::Tensor& z) {
  return 0.5 * z * (1.0 + at::tanh(kGeluCForward * (z + kGeluA * z * z * z)));
}

at::Tensor gelu_tanh_bwd(const at::Tensor& z) {
  // gelu'(z) = 1/2 (1 + t) + 1/2 z (1 - t^2)(c + c3 z^2), t = tanh(c z (1 + a z^2)).
  at::Tensor t = at::tanh(kGeluC * z * (1.0 + kGeluA * z * z));
  return 0.5 * z * ((1.0 - t * t) * (kGeluC + kGeluC3 * z * z)) + 0.5 * (1.0 + t);
}

namespace {

// gelu(z) and gelu'(z) sharing one tanh (c (z + a z^3) = c z (1 + a z^2)) where the two values of c
// are one number (float32 and below); float64 takes a second tanh for gelu itself (kernels/common/gelu.h).
std::pair<at::Tensor, at::Tensor> gelu_and_grad(const at::Tensor& z) {
  at::Tensor z2 = z * z;
  at::Tensor t = at::tanh(kGeluC * z * (1.0 + kGeluA * z2));
  at::Tensor half_1pt = 0.5 * (1.0 + t);
  at::Tensor g = z.scalar_type() == at::kDouble ? gelu_tanh(z) : z * half_1pt;
  at::Tensor dg = half_1pt + 0.5 * z * ((1.0 - t * t) * (kGeluC + kGeluC3 * z2));
  return {g, dg};
}

}  // namespace

at::Tensor ln_fwd(const at::Tensor& z, const at::Tensor& gamma, const at::Tensor& beta, double eps) {
  // Statistics by ATen's fused layer-norm kernel (biased variance, sqrt(var + eps)), affine per head.
  const int64_t D = z.size(-1);
  at::Tensor zhat = std::get<0>(at::native_layer_norm(z, {D}, {}, {}, eps));
  return gamma * zhat + beta;
}

at::Tensor ln_fused_l2_bwd(const at::Tensor& z, const at::Tensor& target, const at::Tensor& gamma,
                           const at::Tensor& beta, double eps) {
  // §2 helpers: g = gamma*zhat + beta - t; ghat = gamma*g;
  // dl/dz = (d*ghat - sum ghat - zhat * sum(ghat*zhat)) / (d * sigma).
  // (native_layer_norm's mean/rstd outputs carry no gradient, so the statistics come from var_mean.)
  auto [var, mean] = at::var_mean(z, {-1}, /*correction=*/0, /*keepdim=*/true);
  at::Tensor rstd = at::rsqrt(var + eps);
  at::Tensor zhat = (z - mean) * rstd;
  at::Tensor ghat = (gamma * zhat + beta - target) * gamma;
  return (ghat - ghat.mean(-1, true) - zhat * (ghat * zhat).mean(-1, true)) * rstd;
}

at::Tensor ln_l2_loss(const at::Tensor& z, const at::Tensor& target, const at::Tensor& gamma,
                      const at::Tensor& beta, double eps) {
  at::Tensor diff = ln_fwd(z, gamma, beta, eps) - target;
  return (diff * diff).mean(-1);
}

at::Tensor inner_forward(const at::Tensor& X, const std::vector<at::Tensor>& weights,
                         const std::vector<at::Tensor>& biases) {
  at::Tensor h = X;
  const size_t n = weights.size();
  for (size_t k = 0; k < n; ++k) {
    h = at::matmul(h, weights[k]) + biases[k];
    if (k + 1 < n) h = gelu_tanh(h);
  }
  return h;
}

StepOutputs ttt_step(const StepInputs& in, const std::vector<at::Tensor>& W, const std::vector<at::Tensor>& Bv,
                     const std::vector<at::Tensor>& accW, const std::vector<at::Tensor>& accB) {
  const size_t n = W.size();
  check_internal(n >= 1 && Bv.size() == n, "ttt_step: inner weights/biases mismatch");
  const bool has_acc = !accW.empty();
  const int64_t m = in.XQ.size(-2);
  at::Tensor gamma = head_param(in.ln_weight, in.XQ), beta = head_param(in.ln_bias, in.XQ);
  at::Tensor target = in.XV - in.XK;  // §2.1 step 2 (XV arrives as target + XK)

  // Keys through the inner model at the mini-batch start weights.
  std::vector<at::Tensor> X(n), Z(n), G(n), dact(n);
  at::Tensor h = in.XK;
  for (size_t k = 0; k < n; ++k) {
    X[k] = h;
    Z[k] = at::matmul(h, W[k]) + Bv[k];
    if (k + 1 < n) std::tie(h, dact[k]) = gelu_and_grad(Z[k]);
  }
  // Inner gradients (§2.1 step 3, generalised to depth n).
  G[n - 1] = ln_fused_l2_bwd(Z[n - 1], target, gamma, beta, in.ln_eps);
  for (size_t k = n - 1; k-- > 0;) G[k] = at::matmul(G[k + 1], W[k + 1].transpose(-1, -2)) * dact[k];

  StepOutputs out;
  out.weights.resize(n);
  out.biases.resize(n);
  const bool fork_query = query_uses_updated(in.query, n);
  if (fork_query && (has_acc || !in.commit))
    throw Error("", "multilayer_query",
                "fork_updated needs whole mini-batches (the fork pads every call); got a partial mini-batch",
                ErrorKind::Usage);
  if (in.commit && !has_acc) {
    // Carry with the last row of eta (§2.1 step 6).
    at::Tensor e = in.eta.select(-2, m - 1).unsqueeze(-1);  // [B, H, m, 1]
    for (size_t k = 0; k < n; ++k) {
      out.weights[k] = W[k] - at::matmul((e * X[k]).transpose(-1, -2), G[k]);
      out.biases[k] = Bv[k] - (e * G[k]).sum(-2, true);
    }
  }

  // Queries: Zbar_k = Xbar W - (eta * Xbar X^T) G + b - eta G (§2.1 steps 4-5; eta tril'ed for causal),
  // minus row_factor * (Xbar accW + accB) for tokens of this mini-batch seen in earlier calls (§2.4).
  // fork_updated: as the fork's compute_multi_layer_mini_batch writes it, through the end weights.
  const std::vector<at::Tensor>& Wq = fork_query ? out.weights : W;
  const std::vector<at::Tensor>& Bq = fork_query ? out.biases : Bv;
  at::Tensor xb = in.XQ, zb;
  for (size_t k = 0; k < n; ++k) {
    // (eta * A) G + eta G = (eta * (A + 1)) G: one b x b GEMM instead of two.
    at::Tensor A = at::matmul(xb, X[k].transpose(-1, -2));
    zb = at::matmul(xb, Wq[k]) + Bq[k] - at::matmul(in.eta * (A + 1.0), G[k]);
    if (has_acc) zb = zb - in.row_factor * (at::matmul(xb, accW[k]) + accB[k]);
    if (k + 1 < n) xb = gelu_tanh(zb);
  }
  out.XQW = in.XQ + ln_fwd(zb, gamma, beta, in.ln_eps);  // §2.1 step 7 (residual inside the op)

  if (!(in.commit && !has_acc)) {
    // Primal-form accumulation: acc += sum_j lr_j grad_j; commit applies the last row's factor.
    at::Tensor lr = in.lr.unsqueeze(-1);  // [B, H, m, 1]
    std::vector<at::Tensor> aW(n), aB(n);
    for (size_t k = 0; k < n; ++k) {
      aW[k] = at::matmul((lr * X[k]).transpose(-1, -2), G[k]);
      aB[k] = (lr * G[k]).sum(-2, true);
      if (has_acc) {
        aW[k] = accW[k] + aW[k];
        aB[k] = accB[k] + aB[k];
      }
    }
    if (in.commit) {
      at::Tensor f = in.row_factor.narrow(-2, m - 1, 1);  // [.., 1, 1]
      for (size_t k = 0; k < n; ++k) {
        out.weights[k] = W[k] - f * aW[k];
        out.biases[k] = Bv[k] - f * aB[k];
      }
    } else {
      out.weights = W;
      out.biases = Bv;
      out.acc_weights = std::move(aW);
      out.acc_biases = std::move(aB);
    }
  }

  if (in.record_losses) {
    at::NoGradGuard ng;
    out.loss_before = ln_l2_loss(Z[n - 1].detach(), target.detach(), gamma, beta, in.ln_eps);
    std::vector<at::Tensor> Wa(n), Ba(n);
    for (size_t k = 0; k < n; ++k) {
      if (out.acc_weights.empty()) {
        Wa[k] = out.weights[k].detach();
        Ba[k] = out.biases[k].detach();
      } else {
        at::Tensor f = in.row_factor.narrow(-2, m - 1, 1).detach();
        Wa[k] = (out.weights[k] - f * out.acc_weights[k]).detach();
        Ba[k] = (out.biases[k] - f * out.acc_biases[k]).detach();
      }
    }
    out.loss_after = ln_l2_loss(inner_forward(in.XK.detach(), Wa, Ba), target.detach(), gamma, beta, in.ln_eps);
  }
  return out;
}

namespace {

// Plain loop over mini-batches [start, start + count) of the scan inputs.
struct RangeOut {
  at::Tensor XQW;
  std::vector<at::Tensor> W, B;
  at::Tensor lb, la;
};

RangeOut run_range(const at::Tensor& XQ, const at::Tensor& XK, const at::Tensor& XV, const at::Tensor& eta,
                   const at::Tensor& lnw, const at::Tensor& lnb, double eps, std::vector<at::Tensor> W,
                   std::vector<at::Tensor> B, bool record, MultiLayerQuery query) {
  const int64_t NC = XQ.size(2);
  std::vector<at::Tensor> outs, lbs, las;
  outs.reserve(NC);
  // unbind rather than select(2, i): select's backward builds a full-size zero gradient per
  // mini-batch (quadratic in NC); unbind's stacks the pieces once.
  const std::vector<at::Tensor> q = XQ.unbind(2), k = XK.unbind(2), v = XV.unbind(2), e = eta.unbind(2);
  for (int64_t i = 0; i < NC; ++i) {
    StepInputs s;
    s.XQ = q[i];
    s.XK = k[i];
    s.XV = v[i];
    s.eta = e[i];
    s.ln_weight = lnw;
    s.ln_bias = lnb;
    s.ln_eps = eps;
    s.commit = true;
    s.record_losses = record;
    s.query = query;
    StepOutputs o = ttt_step(s, W, B, {}, {});
    outs.push_back(o.XQW);
    if (record) {
      lbs.push_back(o.loss_before);
      las.push_back(o.loss_after);
    }
    W = std::move(o.weights);
    B = std::move(o.biases);
  }
  RangeOut r;
  r.XQW = at::stack(outs, 2);
  r.W = std::move(W);
  r.B = std::move(B);
  if (record) {
    r.lb = at::stack(lbs, 2);
    r.la = at::stack(las, 2);
  }
  return r;
}

// One checkpoint group: forward without saving activations, recomputed in backward
// (torch.utils.checkpoint(use_reentrant=False) semantics of VDIT's scan, §3).
// Inputs: XQ, XK, XV, eta, lnw, lnb, W[0..n), B[0..n). Outputs: XQW, W'[0..n), B'[0..n) (+ lb, la).
struct CheckpointGroup : public torch::autograd::Function<CheckpointGroup> {
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx,
                                                at::TensorList input_list, double eps, int64_t record,
                                                int64_t query) {
    torch::autograd::variable_list inputs = input_list.vec();
    const size_t n = (inputs.size() - 6) / 2;
    ctx->save_for_backward(inputs);
    ctx->saved_data["eps"] = eps;
    ctx->saved_data["query"] = query;
    std::vector<at::Tensor> W(inputs.begin() + 6, inputs.begin() + 6 + n);
    std::vector<at::Tensor> B(inputs.begin() + 6 + n, inputs.end());
    RangeOut r = run_range(inputs[0], inputs[1], inputs[2], inputs[3], inputs[4], inputs[5], eps, W, B, record != 0,
                           static_cast<MultiLayerQuery>(query));
    torch::autograd::variable_list out{r.XQW};
    for (auto& t : r.W) out.push_back(t);
    for (auto& t : r.B) out.push_back(t);
    if (record) {
      ctx->mark_non_differentiable({r.lb, r.la});
      out.push_back(r.lb);
      out.push_back(r.la);
    }
    return out;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_out) {
    auto saved = ctx->get_saved_variables();
    const double eps = ctx->saved_data["eps"].toDouble();
    const auto query = static_cast<MultiLayerQuery>(ctx->saved_data["query"].toInt());
    const size_t n = (saved.size() - 6) / 2;
    std::vector<at::Tensor> leaves;
    leaves.reserve(saved.size());
    for (auto& t : saved) leaves.push_back(t.detach().requires_grad_(true));
    torch::autograd::variable_list outs;
    {
      at::AutoGradMode on(true);
      std::vector<at::Tensor> W(leaves.begin() + 6, leaves.begin() + 6 + n);
      std::vector<at::Tensor> B(leaves.begin() + 6 + n, leaves.end());
      RangeOut r = run_range(leaves[0], leaves[1], leaves[2], leaves[3], leaves[4], leaves[5], eps, W, B, false, query);
      outs.push_back(r.XQW);
      for (auto& t : r.W) outs.push_back(t);
      for (auto& t : r.B) outs.push_back(t);
    }
    torch::autograd::variable_list ys, gs;
    for (size_t i = 0; i < outs.size(); ++i) {
      if (i < grad_out.size() && grad_out[i].defined()) {
        ys.push_back(outs[i]);
        gs.push_back(grad_out[i]);
      }
    }
    torch::autograd::variable_list result(saved.size() + 3);  // + eps, record, query (non-tensor args)
    if (ys.empty()) return result;
    auto grads = torch::autograd::grad(ys, leaves, gs, /*retain_graph=*/false, /*create_graph=*/false,
                                       /*allow_unused=*/true);
    for (size_t i = 0; i < saved.size(); ++i) result[i] = grads[i];
    return result;
  }
};

}  // namespace

ScanOutputs ttt_scan_reference(const ScanInputs& in, const std::vector<at::Tensor>& weights,
                               const std::vector<at::Tensor>& biases) {
  const int64_t NC = in.XQ.size(2);
  check_internal(in.XQ.dim() == 5 && in.eta.dim() == 5, "ttt_scan: XQ/eta must be [B,H,NC,b,d]/[B,H,NC,b,b]");
  ScanOutputs out;
  if (NC == 0) {
    out.XQW = in.XQ;
    out.weights = weights;
    out.biases = biases;
    return out;
  }
  int64_t g = in.checkpoint_group;
  bool any_grad = at::GradMode::is_enabled() &&
                  (in.XQ.requires_grad() || in.XK.requires_grad() || in.XV.requires_grad() ||
                   in.eta.requires_grad() || in.ln_weight.requires_grad() || in.ln_bias.requires_grad());
  for (auto& t : weights) any_grad = any_grad || (at::GradMode::is_enabled() && t.requires_grad());
  for (auto& t : biases) any_grad = any_grad || (at::GradMode::is_enabled() && t.requires_grad());
  if (g <= 0 || !any_grad) {
    RangeOut r = run_range(in.XQ, in.XK, in.XV, in.eta, in.ln_weight, in.ln_bias, in.ln_eps, weights, biases,
                           in.record_losses, in.query);
    out.XQW = r.XQW;
    out.weights = std::move(r.W);
    out.biases = std::move(r.B);
    out.loss_before = r.lb;
    out.loss_after = r.la;
    return out;
  }
  g = std::min(g, NC);  // g = min(max(group, 1), NC) (§3)
  std::vector<at::Tensor> W = weights, B = biases, outs, lbs, las;
  const size_t n = W.size();
  for (int64_t s = 0; s < NC; s += g) {
    const int64_t c = std::min(g, NC - s);
    torch::autograd::variable_list args{in.XQ.narrow(2, s, c), in.XK.narrow(2, s, c), in.XV.narrow(2, s, c),
                                        in.eta.narrow(2, s, c), in.ln_weight, in.ln_bias};
    for (auto& t : W) args.push_back(t);
    for (auto& t : B) args.push_back(t);
    auto res = CheckpointGroup::apply(at::TensorList(args), in.ln_eps, static_cast<int64_t>(in.record_losses),
                                      static_cast<int64_t>(in.query));
    outs.push_back(res[0]);
    for (size_t k = 0; k < n; ++k) {
      W[k] = res[1 + k];
      B[k] = res[1 + n + k];
    }
    if (in.record_losses) {
      lbs.push_back(res[1 + 2 * n]);
      las.push_back(res[2 + 2 * n]);
    }
  }
  out.XQW = at::cat(outs, 2);
  out.weights = std::move(W);
  out.biases = std::move(B);
  if (in.record_losses) {
    out.loss_before = at::cat(lbs, 2);
    out.loss_after = at::cat(las, 2);
  }
  return out;
}

void register_scan_backend(const char* name, ScanBackend backend) {
  std::lock_guard<std::mutex> lk(g_backends_mu);
  backends().emplace_back(name, std::move(backend));
}

void clear_scan_backends() {
  std::lock_guard<std::mutex> lk(g_backends_mu);
  backends().clear();
}

ScanOutputs ttt_scan(const ScanInputs& in, const std::vector<at::Tensor>& weights, const std::vector<at::Tensor>& biases) {
  std::vector<std::pair<std::string, ScanBackend>> bs;
  {
    std::lock_guard<std::mutex> lk(g_backends_mu);
    bs = backends();
  }
  for (auto& [name, fn] : bs) {
    if (auto r = fn(in, weights, biases)) return std::move(*r);
  }
  // CPU float32/float64: the fused path (same math, lib/ttt/scan_cpu_fused.h) unless
  // MTT_TTT_SCAN=reference asks for the op-by-op path.
  if (cpu_fused_scan_enabled())
    if (auto r = cpu_fused_scan(in, weights, biases)) return std::move(*r);
  return ttt_scan_reference(in, weights, biases);
}

}  // namespace mtt::ttt
