#include "nn/attention_mask.h"

namespace mtt::nn {

at::Tensor causal_window_mask(const at::Tensor& offsets, int64_t T, const at::Tensor& pos_k,
                              std::optional<int64_t> context) {
  const at::Tensor steps = at::arange(T, pos_k.options().dtype(at::kLong));
  at::Tensor pos_q = offsets.to(pos_k.device()).view({-1, 1, 1}) + steps.view({1, -1, 1});  // [B or 1, T, 1]
  at::Tensor pk = pos_k.unsqueeze(1);                                                        // [B or 1, 1, S]
  at::Tensor delta = pos_q - pk;
  at::Tensor m = (pk >= 0) & (delta >= 0);
  if (context) m = m & (delta < *context);
  return m.unsqueeze(1);
}

}  // namespace mtt::nn
