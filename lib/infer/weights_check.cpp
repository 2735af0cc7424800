#include "infer/weights_check.h"

#include <c10/core/GradMode.h>

#include <cmath>

#include "core/error.h"

namespace mtt::infer {

std::vector<NonFiniteTensor> find_nonfinite(const std::map<std::string, at::Tensor>& tensors) {
  c10::NoGradGuard no_grad;
  std::vector<NonFiniteTensor> out;
  for (const auto& [name, t] : tensors) {
    if (!t.defined() || !at::isFloatingType(t.scalar_type()) || t.numel() == 0) continue;
    if (std::isfinite(t.sum(at::kDouble).item<double>())) continue;
    NonFiniteTensor n;
    n.name = name;
    const at::Tensor flat = t.detach().reshape({-1});
    n.nan = flat.isnan().sum().item<int64_t>();
    n.inf = flat.isinf().sum().item<int64_t>();
    const at::Tensor bad = (~flat.isfinite()).nonzero();
    n.first_index = bad.numel() ? bad[0][0].item<int64_t>() : -1;
    out.push_back(std::move(n));
  }
  return out;
}

void check_finite_weights(const std::map<std::string, at::Tensor>& tensors, const std::string& source, bool allow,
                          std::ostream& log) {
  const auto bad = find_nonfinite(tensors);
  if (bad.empty()) return;
  const NonFiniteTensor& f = bad.front();
  const std::string what = std::to_string(f.nan) + " NaN and " + std::to_string(f.inf) +
                           " Inf values (first at flat index " + std::to_string(f.first_index) + ")" +
                           (bad.size() > 1 ? "; " + std::to_string(bad.size() - 1) + " more tensors hold NaN/Inf" : "");
  if (allow) {
    log << "warning: " << source << ": " << f.name << ": " << what
        << "; generating anyway (--allow-nonfinite): the output is likely degenerate\n";
    return;
  }
  throw Error(source, f.name,
              what + ": the model would generate degenerate audio (ttt-inspect lists them; --allow-nonfinite runs anyway)");
}

}  // namespace mtt::infer
