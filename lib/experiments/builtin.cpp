#include "experiments/builtin.h"

namespace mtt::experiments {

std::vector<ExperimentKind> make_builtin_experiments() {
  std::vector<ExperimentKind> kinds;
  return kinds;
}

}  // namespace mtt::experiments
