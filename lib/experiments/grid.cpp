#include "experiments/grid.h"

#include <cstdio>

#include "core/error.h"

namespace mtt::experiments {

using nlohmann::json;

std::string scalar_text(const json& v) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_number_float()) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.6g", v.get<double>());
    return buf;
  }
  return v.dump();
}

namespace {
std::string safe_id_part(const std::string& s) {
  std::string out;
  for (char c : s) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '-' ||
              c == '_' || c == '+';
    out += ok ? c : '_';
  }
  return out.substr(0, 40);
}
}  // namespace

std::vector<GridPoint> expand_grid(const ExperimentSpec& spec, bool reduced) {
  const std::vector<Axis>& axes = (reduced && !spec.reduced_axes.empty()) ? spec.reduced_axes : spec.axes;
  json base = spec.base;
  if (reduced) merge_into(base, spec.reduced_base);
  std::size_t total = 1;
  for (const auto& a : axes) total *= a.values.size();
  if (total > 100000) throw Error(spec.path, "grid", "grid has " + std::to_string(total) + " points (limit 100000)");
  std::vector<GridPoint> points;
  points.reserve(total);
  for (std::size_t i = 0; i < total; ++i) {
    GridPoint p;
    p.index = i;
    p.overrides = json::object();
    p.config = base;
    char prefix[32];
    std::snprintf(prefix, sizeof prefix, "p%03zu", i);
    p.id = prefix;
    std::size_t rest = i, stride = total;
    for (const auto& a : axes) {
      stride /= a.values.size();
      const json& v = a.values[rest / stride];
      rest %= stride;
      p.overrides[a.name] = v;
      set_path(p.config, a.name, v);
      std::string leaf = a.name.substr(a.name.find_last_of('.') == std::string::npos ? 0 : a.name.find_last_of('.') + 1);
      p.id += "_" + safe_id_part(leaf) + "=" + safe_id_part(scalar_text(v));
    }
    points.push_back(std::move(p));
  }
  return points;
}

}  // namespace mtt::experiments
