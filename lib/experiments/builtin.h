#pragma once
// Constructors of the built-in experiment kinds, one file each (experiments/<name>.yaml runs them).
#include <vector>

#include "experiments/registry.h"

namespace mtt::experiments {

std::vector<ExperimentKind> make_builtin_experiments();

ExperimentKind make_causal_leak();
ExperimentKind make_batch_state();
ExperimentKind make_norm_variant();
ExperimentKind make_mini_batch();
ExperimentKind make_gating();
ExperimentKind make_gradient_flow();
ExperimentKind make_ring_cache();
ExperimentKind make_pad_tokens();
ExperimentKind make_inplace_update();
ExperimentKind make_fork_streaming();

}  // namespace mtt::experiments
