#include "experiments/builtin.h"

namespace mtt::experiments {

std::vector<ExperimentKind> make_builtin_experiments() {
  std::vector<ExperimentKind> kinds;
  kinds.push_back(make_causal_leak());
  kinds.push_back(make_batch_state());
  kinds.push_back(make_norm_variant());
  kinds.push_back(make_mini_batch());
  kinds.push_back(make_gating());
  kinds.push_back(make_gradient_flow());
  kinds.push_back(make_ring_cache());
  kinds.push_back(make_inplace_update());
  kinds.push_back(make_fork_streaming());
  kinds.push_back(make_pad_tokens());
  return kinds;
}

}  // namespace mtt::experiments
