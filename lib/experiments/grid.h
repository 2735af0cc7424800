#pragma once
// Cartesian expansion of a spec's axes into grid points, each with a stable id used as its run dir.
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "experiments/spec.h"

namespace mtt::experiments {

struct GridPoint {
  std::size_t index = 0;
  std::string id;               // "p007" + readable axis values, filesystem-safe
  nlohmann::json overrides;     // axis name -> value
  nlohmann::json config;        // base (+ reduced base) with overrides applied
};

// The first axis varies slowest, as in nested loops written in spec order.
std::vector<GridPoint> expand_grid(const ExperimentSpec& spec, bool reduced);

// Compact text of a JSON scalar for ids and tables: 0.1 -> "0.1", "legacy" -> "legacy".
std::string scalar_text(const nlohmann::json& v);

}  // namespace mtt::experiments
