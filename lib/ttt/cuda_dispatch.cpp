// Kernel-vs-LibTorch dispatch for the TTT scan: checks device, dtype, shapes and autograd needs,
// converts at::Tensor to the raw pointers of kernels/ttt_scan/params.h, runs the CUDA launcher (or
// the CPU copy's launchers handed over by test code), and wraps the results back into tensors.
// CUDA runtime calls go through kernels/common/cuda_runtime_info.h; the one CUDA header is
// LibTorch's stream API (c10/cuda/CUDAStream.h), for the stream to launch on.
#include "ttt/cuda_dispatch.h"

#include <torch/csrc/autograd/custom_function.h>

#include <cstdlib>
#include <mutex>

#include "core/error.h"
#include "kernels/common/cuda_runtime_info.h"
#include "kernels/ttt_scan/params.h"
#ifdef MTT_HAVE_CUDA
#include "kernels/ttt_scan/cuda/launch.h"
#endif
#if defined(MTT_HAVE_CUDA) && defined(MTT_TORCH_HAS_CUDA)
#include <c10/cuda/CUDAStream.h>
#endif

namespace mtt::ttt {

namespace {

namespace K = mtt::kernels;

std::mutex g_host_mu;
HostScanLaunchers g_host;

HostScanLaunchers host_launchers() {
  std::lock_guard<std::mutex> lk(g_host_mu);
  return g_host;
}

#ifdef MTT_HAVE_CUDA
// LibTorch's current stream on `dev` (a cudaStream_t): the kernels run in order with the work
// LibTorch queued there, the caching allocator's reuse of a workspace freed after the call is
// ordered after the kernel, and CUDA-graph capture on that stream records the kernel.
void* current_stream(const at::Device& dev) {
#ifdef MTT_TORCH_HAS_CUDA
  return c10::cuda::getCurrentCUDAStream(dev.index()).stream();
#else
  (void)dev;
  return nullptr;  // a LibTorch without CUDA has no CUDA tensors that could lead here
#endif
}

// Runs launch(stream) with the tensors' device current and LibTorch's current stream of that
// device; the caller's current device is restored afterwards.
template <class Launch>
K::KernelStatus on_device(const at::Device& dev, Launch&& launch) {
  K::CudaDeviceScope scope(dev.index());
  if (!scope.ok()) return {2, "could not make the tensors' CUDA device current"};
  return launch(current_stream(dev));
}
#endif

bool any_requires_grad(const ScanInputs& in, const std::vector<at::Tensor>& W, const std::vector<at::Tensor>& Bv) {
  if (!at::GradMode::is_enabled()) return false;
  for (const at::Tensor* t : {&in.XQ, &in.XK, &in.XV, &in.eta, &in.ln_weight, &in.ln_bias})
    if (t->defined() && t->requires_grad()) return true;
  for (const auto& t : W)
    if (t.requires_grad()) return true;
  for (const auto& t : Bv)
    if (t.requires_grad()) return true;
  return false;
}

// Shapes and devices without autograd considerations; "" when fine.
std::string shape_reason(const ScanInputs& in, const std::vector<at::Tensor>& W, const std::vector<at::Tensor>& Bv,
                         KernelImpl impl) {
  if (impl == KernelImpl::cuda && !cuda_kernels_available()) return "CUDA kernels not available: " + cuda_kernels_status();
  if (impl == KernelImpl::cpu_reference && !host_launchers().forward)
    return "the CPU copy of the kernels is test code and was not handed over (set_cpu_reference_launchers)";
  for (const at::Tensor* t : {&in.XQ, &in.XK, &in.XV, &in.eta, &in.ln_weight, &in.ln_bias})
    if (!t->defined()) return "undefined scan input";
  if (in.XQ.dim() != 5) return "XQ must be [B, H, NC, b, d]";
  const auto st = in.XQ.scalar_type();
  if (st != at::kFloat && st != at::kBFloat16) return "dtype must be float32 or bfloat16";
  if (in.XK.sizes() != in.XQ.sizes() || in.XV.sizes() != in.XQ.sizes()) return "XQ/XK/XV shapes differ";
  if (in.XK.scalar_type() != st || in.XV.scalar_type() != st) return "XQ/XK/XV dtypes differ";
  const int64_t B = in.XQ.size(0), H = in.XQ.size(1), NC = in.XQ.size(2), b = in.XQ.size(3), d = in.XQ.size(4);
  if (in.eta.sizes() != at::IntArrayRef({B, H, NC, b, b})) return "eta must be [B, H, NC, b, b]";
  if (in.ln_weight.sizes() != at::IntArrayRef({H, d}) || in.ln_bias.sizes() != at::IntArrayRef({H, d}))
    return "ttt_norm weight/bias must be [H, d]";
  if (query_uses_updated(in.query, W.size())) return "the fork's multi-layer query pass runs on the CPU/op path";
  if (W.size() != Bv.size() || (W.size() != 1 && W.size() != 2)) return "inner model depth must be 1 or 2";
  const int64_t m1 = W[0].dim() == 4 ? W[0].size(3) : -1;
  if (W[0].sizes() != at::IntArrayRef({B, H, d, m1}) || Bv[0].sizes() != at::IntArrayRef({B, H, 1, m1}))
    return "W1/b1 must be [B, H, d, m] / [B, H, 1, m]";
  if (W.size() == 1 && m1 != d) return "TTT-Linear W1 must be [B, H, d, d]";
  if (W.size() == 2 && (W[1].sizes() != at::IntArrayRef({B, H, m1, d}) || Bv[1].sizes() != at::IntArrayRef({B, H, 1, d})))
    return "W2/b2 must be [B, H, hidden, d] / [B, H, 1, d]";
  const at::Device dev = in.XQ.device();
  if (impl == KernelImpl::cuda && !dev.is_cuda()) return "tensors are not on a CUDA device";
  if (impl == KernelImpl::cpu_reference && !dev.is_cpu()) return "the CPU reference needs CPU tensors";
  for (const at::Tensor* t : {&in.XK, &in.XV, &in.eta, &in.ln_weight, &in.ln_bias})
    if (t->device() != dev) return "scan inputs on different devices";
  for (size_t k = 0; k < W.size(); ++k)
    if (W[k].device() != dev || Bv[k].device() != dev) return "inner state on a different device";
  K::TTTScanParams p;
  p.B = static_cast<int>(B);
  p.H = static_cast<int>(H);
  p.NC = static_cast<int>(NC);
  p.b = static_cast<int>(b);
  p.d = static_cast<int>(d);
  p.depth = static_cast<int>(W.size());
  p.hidden = p.depth == 2 ? static_cast<int>(m1) : 0;
  // Pointers are checked by the launchers; mark them present for the shape check.
  static const float dummy = 0.f;
  p.XQ = p.XK = p.XV = p.eta = p.ln_weight = p.ln_bias = &dummy;
  p.XQW = const_cast<float*>(&dummy);
  for (int k = 0; k < p.depth; ++k) {
    p.W_in[k] = p.b_in[k] = &dummy;
    p.W_out[k] = p.b_out[k] = const_cast<float*>(&dummy);
  }
  if (const char* why = K::ttt_scan_unsupported(p)) return why;
  return "";
}

at::Tensor f32c(const at::Tensor& t) { return t.detach().to(at::kFloat).contiguous(); }

struct Prepared {
  K::TTTScanParams p;
  at::Tensor XQ, XK, XV, eta, lnw, lnb;
  std::vector<at::Tensor> W, Bv, Wout, Bout;
  at::Tensor XQW, lb, la, ws;
};

Prepared prepare(const ScanInputs& in, const std::vector<at::Tensor>& W, const std::vector<at::Tensor>& Bv,
                 KernelImpl impl, bool backward) {
  Prepared r;
  K::TTTScanParams& p = r.p;
  r.XQ = in.XQ.detach().contiguous();
  r.XK = in.XK.detach().contiguous();
  r.XV = in.XV.detach().contiguous();
  r.eta = f32c(in.eta);
  r.lnw = f32c(in.ln_weight);
  r.lnb = f32c(in.ln_bias);
  p.B = static_cast<int>(r.XQ.size(0));
  p.H = static_cast<int>(r.XQ.size(1));
  p.NC = static_cast<int>(r.XQ.size(2));
  p.b = static_cast<int>(r.XQ.size(3));
  p.d = static_cast<int>(r.XQ.size(4));
  p.depth = static_cast<int>(W.size());
  p.hidden = p.depth == 2 ? static_cast<int>(W[0].size(3)) : 0;
  p.io = r.XQ.scalar_type() == at::kBFloat16 ? K::IoType::bf16 : K::IoType::f32;
  p.XQ = r.XQ.data_ptr();
  p.XK = r.XK.data_ptr();
  p.XV = r.XV.data_ptr();
  p.eta = r.eta.data_ptr<float>();
  p.ln_weight = r.lnw.data_ptr<float>();
  p.ln_bias = r.lnb.data_ptr<float>();
  p.ln_eps = static_cast<float>(in.ln_eps);
  for (int k = 0; k < p.depth; ++k) {
    r.W.push_back(f32c(W[k]));
    r.Bv.push_back(f32c(Bv[k]));
    r.Wout.push_back(at::empty_like(r.W[k]));
    r.Bout.push_back(at::empty_like(r.Bv[k]));
    p.W_in[k] = r.W[k].data_ptr<float>();
    p.b_in[k] = r.Bv[k].data_ptr<float>();
    p.W_out[k] = r.Wout[k].data_ptr<float>();
    p.b_out[k] = r.Bout[k].data_ptr<float>();
  }
  r.XQW = at::empty_like(r.XQ);
  p.XQW = r.XQW.data_ptr();
  auto fopt = r.XQ.options().dtype(at::kFloat);
  if (in.record_losses && !backward) {
    r.lb = at::empty({p.B, p.H, p.NC, p.b}, fopt);
    r.la = at::empty({p.B, p.H, p.NC, p.b}, fopt);
    p.loss_before = r.lb.data_ptr<float>();
    p.loss_after = r.la.data_ptr<float>();
  }
  p.checkpoint_group = static_cast<int>(in.checkpoint_group);
  // bf16 inputs run the GEMMs on tensor cores; fp32 inputs keep fp32 FMA so results match the
  // LibTorch fp32 path to float tolerance.
  p.tensor_cores = p.io == K::IoType::bf16;
  if (impl == KernelImpl::cuda) {
    const size_t bytes = backward ? K::ttt_scan_bwd_workspace_bytes(p) : K::ttt_scan_workspace_bytes(p);
    r.ws = at::empty({static_cast<int64_t>(bytes)}, r.XQ.options().dtype(at::kByte));
    p.workspace = r.ws.data_ptr();
    p.workspace_bytes = bytes;
  }
  return r;
}

void check_status(const K::KernelStatus& s, const char* what) {
  if (!s.ok()) {
    std::string extra = kernels::cuda_last_error();
    throw Error("", what, std::string(s.message) + (extra.empty() ? "" : " (" + extra + ")"), ErrorKind::Internal);
  }
}

}  // namespace

void set_cpu_reference_launchers(const HostScanLaunchers& launchers) {
  std::lock_guard<std::mutex> lk(g_host_mu);
  g_host = launchers;
}

std::string cuda_kernels_status() { return kernels::cuda_status(); }
bool cuda_kernels_available() {
  // Cached: the backend is asked on every ttt_scan() call.
  // MTT_DISABLE_CUDA_KERNELS=1 forces the LibTorch path (kill switch until the kernels have been
  // validated on a GPU, scripts/gpu_check.sh).
  static const bool available = !std::getenv("MTT_DISABLE_CUDA_KERNELS") && kernels::built_with_cuda() &&
                                kernels::cuda_device_count() > 0;
  return available;
}

std::string kernel_unsupported_reason(const ScanInputs& in, const std::vector<at::Tensor>& weights,
                                      const std::vector<at::Tensor>& biases, KernelImpl impl) {
  std::string r = shape_reason(in, weights, biases, impl);
  if (!r.empty()) return r;
  if (any_requires_grad(in, weights, biases) && weights.size() != 1)
    return "autograd needs the graph and the TTT-MLP backward kernel is not implemented (TTT-Linear only)";
  return "";
}

namespace {
ScanOutputs run_forward(const ScanInputs& in, const std::vector<at::Tensor>& weights,
                        const std::vector<at::Tensor>& biases, KernelImpl impl);

// TTT-Linear scan as one autograd node: forward = the scan kernel, backward = the backward kernel
// (recompute per checkpoint group), so training runs both on the kernels.
struct LinearScanFn : torch::autograd::Function<LinearScanFn> {
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx, at::Tensor XQ, at::Tensor XK,
                                                at::Tensor XV, at::Tensor eta, at::Tensor lnw, at::Tensor lnb,
                                                at::Tensor W, at::Tensor b, double eps, int64_t group, bool record,
                                                int64_t impl) {
    ScanInputs in;
    in.XQ = XQ; in.XK = XK; in.XV = XV; in.eta = eta; in.ln_weight = lnw; in.ln_bias = lnb;
    in.ln_eps = eps;
    in.checkpoint_group = group;
    in.record_losses = record;
    ScanOutputs o = run_forward(in, {W}, {b}, static_cast<KernelImpl>(impl));
    ctx->save_for_backward({XQ, XK, XV, eta, lnw, lnb, W, b});
    ctx->saved_data["eps"] = eps;
    ctx->saved_data["group"] = group;
    ctx->saved_data["impl"] = impl;
    if (!record) return {o.XQW, o.weights[0], o.biases[0]};
    ctx->mark_non_differentiable({o.loss_before, o.loss_after});
    return {o.XQW, o.weights[0], o.biases[0], o.loss_before, o.loss_after};
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    auto sv = ctx->get_saved_variables();
    ScanInputs in;
    in.XQ = sv[0]; in.XK = sv[1]; in.XV = sv[2]; in.eta = sv[3]; in.ln_weight = sv[4]; in.ln_bias = sv[5];
    in.ln_eps = ctx->saved_data["eps"].toDouble();
    in.checkpoint_group = ctx->saved_data["group"].toInt();
    const auto impl = static_cast<KernelImpl>(ctx->saved_data["impl"].toInt());
    at::Tensor dO = grads[0].defined() ? grads[0] : at::zeros_like(sv[0]);
    auto g = kernel_scan_backward(in, {sv[6]}, {sv[7]}, dO, {grads[1]}, {grads[2]}, impl);
    check_internal(g.has_value(), "ttt linear scan backward: kernel declined inputs its forward accepted");
    auto like = [](const at::Tensor& grad, const at::Tensor& x) { return grad.to(x.scalar_type()); };
    return {like(g->dXQ, sv[0]), like(g->dXK, sv[1]), like(g->dXV, sv[2]), like(g->deta, sv[3]),
            like(g->dln_weight, sv[4]), like(g->dln_bias, sv[5]), like(g->dweights[0], sv[6]),
            like(g->dbiases[0], sv[7]), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};
}  // namespace

std::optional<ScanOutputs> kernel_scan(const ScanInputs& in, const std::vector<at::Tensor>& weights,
                                       const std::vector<at::Tensor>& biases, KernelImpl impl) {
  if (!kernel_unsupported_reason(in, weights, biases, impl).empty()) return std::nullopt;
  if (any_requires_grad(in, weights, biases)) {
    auto o = LinearScanFn::apply(in.XQ, in.XK, in.XV, in.eta, in.ln_weight, in.ln_bias, weights[0], biases[0],
                                 in.ln_eps, in.checkpoint_group, in.record_losses, static_cast<int64_t>(impl));
    ScanOutputs out;
    out.XQW = o[0];
    out.weights = {o[1]};
    out.biases = {o[2]};
    if (in.record_losses) {
      out.loss_before = o[3];
      out.loss_after = o[4];
    }
    return out;
  }
  return run_forward(in, weights, biases, impl);
}

namespace {
ScanOutputs run_forward(const ScanInputs& in, const std::vector<at::Tensor>& weights,
                        const std::vector<at::Tensor>& biases, KernelImpl impl) {
  Prepared r = prepare(in, weights, biases, impl, false);
  if (impl == KernelImpl::cpu_reference) {
    check_status(host_launchers().forward(r.p), "ttt scan forward (CPU copy)");
  } else {
#ifdef MTT_HAVE_CUDA
    const K::TTTScanParams& p = r.p;
    if (p.depth == 1)
      check_status(on_device(in.XQ.device(), [&](void* st) { return K::ttt_linear_scan_forward(p, st); }),
                   "ttt_linear_scan_forward");
    else
      check_status(on_device(in.XQ.device(), [&](void* st) { return K::ttt_mlp_scan_forward(p, st); }),
                   "ttt_mlp_scan_forward");
#else
    check_status({3, "built without CUDA"}, "ttt scan");
#endif
  }
  ScanOutputs out;
  out.XQW = r.XQW;
  out.weights = r.Wout;
  out.biases = r.Bout;
  out.loss_before = r.lb;
  out.loss_after = r.la;
  return out;
}
}  // namespace

std::optional<ScanOutputs> cuda_scan_backend(const ScanInputs& in, const std::vector<at::Tensor>& weights,
                                             const std::vector<at::Tensor>& biases) {
  return kernel_scan(in, weights, biases, KernelImpl::cuda);
}

bool register_cuda_scan_backend() {
  static std::once_flag once;
  std::call_once(once, [] { register_scan_backend("cuda", cuda_scan_backend); });
  return cuda_kernels_available();
}

std::optional<ScanGrads> kernel_scan_backward(const ScanInputs& in, const std::vector<at::Tensor>& weights,
                                              const std::vector<at::Tensor>& biases, const at::Tensor& dXQW,
                                              const std::vector<at::Tensor>& d_final_weights,
                                              const std::vector<at::Tensor>& d_final_biases, KernelImpl impl) {
  if (!shape_reason(in, weights, biases, impl).empty() || weights.size() != 1) return std::nullopt;
  if (!dXQW.defined() || dXQW.sizes() != in.XQ.sizes()) return std::nullopt;
  Prepared r = prepare(in, weights, biases, impl, true);
  K::TTTScanGradParams g;
  at::Tensor dO = f32c(dXQW);
  g.dXQW = dO.data_ptr<float>();
  at::Tensor dWo, dbo;
  if (!d_final_weights.empty() && d_final_weights[0].defined()) {
    dWo = f32c(d_final_weights[0]);
    g.dW_out[0] = dWo.data_ptr<float>();
  }
  if (!d_final_biases.empty() && d_final_biases[0].defined()) {
    dbo = f32c(d_final_biases[0]);
    g.db_out[0] = dbo.data_ptr<float>();
  }
  auto fopt = r.XQ.options().dtype(at::kFloat);
  ScanGrads out;
  out.dXQ = at::empty(r.XQ.sizes(), fopt);
  out.dXK = at::empty(r.XQ.sizes(), fopt);
  out.dXV = at::empty(r.XQ.sizes(), fopt);
  out.deta = at::empty(r.eta.sizes(), fopt);
  at::Tensor dgam = at::empty({r.p.B, r.p.H, r.p.d}, fopt), dbet = at::empty({r.p.B, r.p.H, r.p.d}, fopt);
  out.dweights = {at::empty_like(r.W[0])};
  out.dbiases = {at::empty_like(r.Bv[0])};
  g.dXQ = out.dXQ.data_ptr<float>();
  g.dXK = out.dXK.data_ptr<float>();
  g.dXV = out.dXV.data_ptr<float>();
  g.deta = out.deta.data_ptr<float>();
  g.dln_weight = dgam.data_ptr<float>();
  g.dln_bias = dbet.data_ptr<float>();
  g.dW_in[0] = out.dweights[0].data_ptr<float>();
  g.db_in[0] = out.dbiases[0].data_ptr<float>();
  if (impl == KernelImpl::cpu_reference) {
    const HostScanLaunchers h = host_launchers();
    if (!h.linear_backward) return std::nullopt;
    check_status(h.linear_backward(r.p, g), "ttt linear scan backward (CPU copy)");
  } else {
#ifdef MTT_HAVE_CUDA
    check_status(on_device(in.XQ.device(), [&](void* st) { return K::ttt_linear_scan_backward(r.p, g, st); }),
                 "ttt_linear_scan_backward");
#else
    return std::nullopt;
#endif
  }
  out.dln_weight = dgam.sum(0);
  out.dln_bias = dbet.sum(0);
  return out;
}

namespace {
// Registered at load time so every ttt_scan() call considers the kernels (it declines quickly for
// CPU tensors); lib/ttt can also call register_cuda_scan_backend() explicitly (idempotent).
const bool g_registered = (register_cuda_scan_backend(), true);
}  // namespace

}  // namespace mtt::ttt
