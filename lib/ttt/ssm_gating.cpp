#include "ttt/ssm_gating.h"

#include <sstream>

#include "core/error.h"

namespace mtt::ttt {

namespace {
std::string shape_str(at::IntArrayRef s) {
  std::ostringstream os;
  os << "[";
  for (size_t i = 0; i < s.size(); ++i) os << (i ? "," : "") << s[i];
  os << "]";
  return os.str();
}
}  // namespace

SSMGatingOptions SSMGatingOptions::fork(int64_t dim, double init) {
  SSMGatingOptions o;
  o.dim = dim;
  o.gating_alpha_init = init;
  o.clamp_alpha = true;
  return o;
}

SSMGatingOptions SSMGatingOptions::vdit(int64_t dim, double init) {
  SSMGatingOptions o = fork(dim, init);
  o.clamp_alpha = false;
  return o;
}

SSMGating::SSMGating(const SSMGatingOptions& options) : options_(options) {
  if (options.dim <= 0) throw Error("", "gating_alpha", "SSMGating needs dim > 0", ErrorKind::Usage);
  // Constant init, as VDIT's torch.ones(D) * gating_alpha_init (docs/ttt.md §1.1 table).
  gating_alpha = register_parameter("gating_alpha", at::full({options.dim}, options.gating_alpha_init, at::kFloat));
}

at::Tensor SSMGating::multiplier() const {
  if (forced_multiplier_) {
    return at::full({options_.dim}, *forced_multiplier_, gating_alpha.options().requires_grad(false));
  }
  at::Tensor a = forced_alpha_ ? forced_alpha_->to(gating_alpha.options()).expand({options_.dim}) : gating_alpha;
  // at::clamp passes the gradient at the boundary value itself and zeroes it strictly outside,
  // exactly like torch.clamp in the fork (golden ssm_gating: alpha = 3.0 keeps its gradient).
  if (options_.clamp_alpha) a = at::clamp(a, -options_.clamp_limit, options_.clamp_limit);
  return at::tanh(a);
}

at::Tensor SSMGating::forward(const at::Tensor& y) const {
  if (y.dim() < 1 || y.size(-1) != options_.dim) {
    throw Error("", "gating_alpha",
                "SSMGating: input last dimension " + std::to_string(y.dim() ? y.size(-1) : 0) + " != dim " +
                    std::to_string(options_.dim),
                ErrorKind::Internal);
  }
  at::Tensor m = multiplier();
  // Gate in the input's dtype when it is wider (fp64 reference runs), else in the parameter's.
  if (at::promote_types(m.scalar_type(), y.scalar_type()) != m.scalar_type()) m = m.to(y.scalar_type());
  return m * y;
}

void SSMGating::force_alpha(std::optional<double> alpha) {
  if (alpha) {
    forced_alpha_ = at::full({}, *alpha, at::kDouble);
  } else {
    forced_alpha_.reset();
  }
}

void SSMGating::force_alpha_tensor(std::optional<at::Tensor> alpha) {
  if (alpha) {
    at::Tensor a = alpha->detach();
    if (a.dim() > 1 || (a.dim() == 1 && a.size(0) != 1 && a.size(0) != options_.dim)) {
      throw Error("", "gating_alpha", "forced alpha of shape " + shape_str(a.sizes()) + " does not broadcast to [" +
                                          std::to_string(options_.dim) + "]",
                  ErrorKind::Usage);
    }
    forced_alpha_ = a;
  } else {
    forced_alpha_.reset();
  }
}

void SSMGating::force_multiplier(std::optional<double> multiplier) { forced_multiplier_ = multiplier; }

void load_module_tensors(torch::nn::Module& module, const std::map<std::string, at::Tensor>& tensors,
                         const std::string& prefix, const std::string& file) {
  at::NoGradGuard no_grad;
  auto copy_one = [&](const std::string& name, at::Tensor& dst) {
    const std::string key = prefix + name;
    auto it = tensors.find(key);
    if (it == tensors.end()) throw Error(file, key, "missing tensor");
    const at::Tensor& src = it->second;
    if (!src.sizes().equals(dst.sizes())) {
      throw Error(file, key, "shape " + shape_str(src.sizes()) + ", expected " + shape_str(dst.sizes()));
    }
    dst.copy_(src.to(dst.device()).to(dst.scalar_type()));
  };
  for (auto& p : module.named_parameters(/*recurse=*/true)) copy_one(p.key(), p.value());
  for (auto& b : module.named_buffers(/*recurse=*/true)) copy_one(b.key(), b.value());
}

}  // namespace mtt::ttt
