// Finding 2: unused parameters = checkpoint keys minus the keys the model's forward consumes for
// this configuration (moshi/schema.h `consumed`); keys the model does not declare at all are
// never read either and are listed with that reason.
#include "audit/findings.h"

namespace mtt::audit {

Unused find_unused(const moshi::ModelSchema& schema, const StatsMap& stats, uint64_t total_params,
                   const std::vector<int>& filter) {
  Unused u;
  for (const auto& [name, st] : stats) {
    const auto* d = schema.find(name);
    if (d && d->consumed) continue;
    UnusedEntry e;
    e.name = name;
    e.layer = d ? d->layer : key_layer(name);
    if (!layer_selected(filter, e.layer)) continue;
    e.declared = d != nullptr;
    e.module = d ? d->module : "(undeclared)";
    e.reason = d ? d->unused_reason : "not declared by the model for the inferred configuration";
    e.params = st.numel;
    e.bytes = st.nbytes;
    u.params += e.params;
    u.bytes += e.bytes;
    u.entries.push_back(std::move(e));
  }
  u.share_percent = total_params ? 100.0 * static_cast<double>(u.params) / static_cast<double>(total_params) : 0.0;
  return u;
}

}  // namespace mtt::audit
