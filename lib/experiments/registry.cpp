#include "experiments/registry.h"

#include "core/error.h"
#include "experiments/builtin.h"

namespace mtt::experiments {

const std::vector<ExperimentKind>& builtin_experiments() {
  static const std::vector<ExperimentKind> kinds = make_builtin_experiments();
  return kinds;
}

const ExperimentKind& find_experiment(const std::string& name, const std::string& spec_file) {
  std::string names;
  for (const auto& k : builtin_experiments()) {
    if (k.name == name) return k;
    names += (names.empty() ? "" : ", ") + k.name;
  }
  throw Error(spec_file, "experiment", "unknown experiment kind '" + name + "' (built in: " + names + ")");
}

}  // namespace mtt::experiments
