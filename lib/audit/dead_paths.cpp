// Finding 5: dead gradient paths (seed 003). The model declares its parameter products
// (moshi::ProductDecl, e.g. V_hat = W_target(conv1d(emb))); when every factor is exactly zero the
// product and all its gradients are zero, so none of the factors can ever start to move.
#include "audit/findings.h"

namespace mtt::audit {

DeadPaths find_dead_paths(const moshi::ModelSchema& schema, const StatsMap& stats, const std::vector<int>& filter) {
  DeadPaths out;
  for (const auto& p : schema.products) {
    DeadPath d;
    d.name = p.name;
    d.layer = key_layer(p.name);
    if (!layer_selected(filter, d.layer)) continue;
    d.factors = p.factor_names;
    d.remedy = p.remedy;
    bool absent = false;
    std::size_t zero = 0;
    for (const auto& factor : p.factors) {
      // A factor (sum of terms) is zero when every term has an all-zero key.
      bool factor_zero = true;
      for (const auto& term : factor) {
        bool term_zero = false;
        for (const auto& key : term) {
          auto it = stats.find(key);
          if (it == stats.end()) {
            absent = true;
            continue;
          }
          term_zero = term_zero || it->second.is_zero();
        }
        factor_zero = factor_zero && term_zero;
      }
      d.factor_zero.push_back(factor_zero);
      zero += factor_zero;
    }
    if (absent) d.status = "absent";
    else if (zero == p.factors.size()) d.status = "dead";
    else if (zero > 0) d.status = "one_factor_zero";
    else d.status = "live";
    if (d.status == "absent") continue;  // e.g. an adapter file without the factor tensors
    out.dead += d.status == "dead";
    out.paths.push_back(std::move(d));
  }
  return out;
}

}  // namespace mtt::audit
