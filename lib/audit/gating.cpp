// Finding 4: gating statistics per TTT layer, forward and backward gate (seed 001): alpha and
// the effective TTT branch multiplier tanh(clamp(alpha, -3, 3)) in percent (the fork clamps alpha
// before tanh, docs/ttt.md §4), accumulated in fp64.
#include <algorithm>
#include <cmath>
#include <limits>

#include "audit/findings.h"

namespace mtt::audit {

namespace {
struct Moments {
  double sum = 0, sumsq = 0, mn = std::numeric_limits<double>::infinity(), mx = -std::numeric_limits<double>::infinity();
  uint64_t n = 0;
  void add(double x) {
    sum += x;
    sumsq += x * x;
    mn = std::min(mn, x);
    mx = std::max(mx, x);
    ++n;
  }
  Summary summary() const {
    Summary s;
    if (!n) return s;
    s.mean = sum / static_cast<double>(n);
    s.std = std::sqrt(std::max(0.0, sumsq / static_cast<double>(n) - s.mean * s.mean));
    s.min = mn;
    s.max = mx;
    return s;
  }
};
}  // namespace

Gating gating_stats(const io::Checkpoint& ck, const moshi::ModelSchema& schema, const std::vector<int>& filter) {
  Gating g;
  for (const auto& gate : schema.gates) {
    if (!layer_selected(filter, gate.layer)) continue;
    for (const auto& [dir, key] : {std::pair<std::string, std::string>{"forward", gate.forward_key},
                                   std::pair<std::string, std::string>{"backward", gate.backward_key}}) {
      auto v = ck.find(key);
      if (!v) continue;
      GateRow row;
      row.layer = gate.layer;
      row.direction = dir;
      row.key = key;
      const auto* d = schema.find(key);
      row.consumed = d ? d->consumed : false;
      row.numel = v->numel();
      Moments a, m;
      for (uint64_t i = 0; i < row.numel; ++i) {
        const double x = element(*v, i);
        if (!std::isfinite(x)) {
          ++row.nonfinite;
          continue;
        }
        a.add(x);
        m.add(100.0 * std::tanh(std::clamp(x, -3.0, 3.0)));
      }
      row.alpha = a.summary();
      row.multiplier_pct = m.summary();
      g.rows.push_back(std::move(row));
    }
  }
  return g;
}

}  // namespace mtt::audit
