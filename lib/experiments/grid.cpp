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
  // The product is checked at every factor: 16 axes of 16 values are 2^64 points, which wraps to 0
  // in 64 bits and would have run nothing with exit 0.
  constexpr std::size_t kMaxPoints = 100000;
  std::size_t total = 1;
  std::string shape;
  for (const auto& a : axes) {
    shape += (shape.empty() ? "" : " x ") + std::to_string(a.values.size());
    if (a.values.empty()) throw Error(spec.path, "grid." + a.name, "an axis needs at least one value");
    if (total > kMaxPoints / a.values.size())
      throw Error(spec.path, reduced && !spec.reduced_axes.empty() ? "reduced.grid" : "grid",
                  "more than " + std::to_string(kMaxPoints) + " points (" + std::to_string(axes.size()) +
                      " axes of " + shape + (&a == &axes.back() ? "" : " x ...") + " values)");
    total *= a.values.size();
  }
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
