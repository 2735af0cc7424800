#pragma once
// Constructors of the built-in experiment kinds, one file each (experiments/<name>.yaml runs them).
#include <vector>

#include "experiments/registry.h"

namespace mtt::experiments {

std::vector<ExperimentKind> make_builtin_experiments();

}  // namespace mtt::experiments
