// Finding 1: inventory (inferred configuration, parameter counts and bytes per module and total,
// declared-but-missing, undeclared and mis-shaped keys, duplicate copies, dtypes, NaN/Inf).
#include <algorithm>
#include <regex>

#include "audit/findings.h"

namespace mtt::audit {

int key_layer(const std::string& key) {
  static const std::string p = "transformer.layers.";
  if (key.rfind(p, 0) != 0) return -1;
  std::size_t i = p.size(), j = i;
  while (j < key.size() && key[j] >= '0' && key[j] <= '9') ++j;
  if (j == i) return -1;
  return std::stoi(key.substr(i, j - i));
}

bool layer_selected(const std::vector<int>& filter, int layer) {
  if (filter.empty()) return true;
  return std::find(filter.begin(), filter.end(), layer) != filter.end();
}

Inventory make_inventory(const io::Checkpoint& ck, const InferredConfig& inf, const moshi::ModelSchema& schema,
                         const StatsMap& stats) {
  Inventory v;
  v.checkpoint = ck.path();
  v.description = ck.describe();
  v.config_source = inf.source;
  v.notes = inf.notes;
  v.config = inf.config;
  v.partial = inf.partial;
  v.declared = schema.params.size();
  std::map<std::string, ModuleRow> rows;
  for (const auto& [name, st] : stats) {
    const auto* d = schema.find(name);
    const std::string module = d ? d->module : "(undeclared)";
    auto& r = rows[module];
    r.module = module;
    ++r.tensors;
    r.params += st.numel;
    r.bytes += st.nbytes;
    ++v.tensors;
    v.params += st.numel;
    v.bytes += st.nbytes;
    ++v.dtypes[dtype_name(st.dtype)];
    v.nan += st.nan;
    v.inf += st.inf;
    if (st.nan || st.inf) {
      v.nonfinite_tensors.push_back(name);
      NonFiniteTensor nf{name, st.nan, st.inf, st.first_nonfinite(), st.first_nan, st.first_inf, {}};
      // Row-major: the last dimension varies fastest.
      int64_t rest = nf.first_index;
      nf.first_position.assign(st.shape.size(), 0);
      for (std::size_t d = st.shape.size(); d-- > 0;) {
        if (st.shape[d] <= 0) break;
        nf.first_position[d] = rest % st.shape[d];
        rest /= st.shape[d];
      }
      v.nonfinite.push_back(std::move(nf));
    }
    if (!d) {
      v.undeclared.push_back(name);
      continue;
    }
    if (d->shape != st.shape) v.shape_mismatches.push_back({name, d->shape, st.shape});
    if (!d->duplicate_of.empty()) {
      ++v.duplicate_tensors;
      v.duplicate_params += st.numel;
      v.duplicate_bytes += st.nbytes;
      // A copy that differs from its canonical key: which one the model gets depends on load order.
      auto c = stats.find(d->duplicate_of);
      if (c != stats.end() && c->second.shape == st.shape &&
          (c->second.l2 != st.l2 || c->second.mean != st.mean || c->second.min != st.min || c->second.max != st.max))
        v.duplicate_mismatches.push_back(name);
    }
  }
  for (auto& [_, r] : rows) v.modules.push_back(r);
  std::sort(v.modules.begin(), v.modules.end(), [](const ModuleRow& a, const ModuleRow& b) {
    return a.params != b.params ? a.params > b.params : a.module < b.module;
  });
  for (const auto& p : schema.params)
    if (!stats.count(p.name)) {
      ++v.missing;
      if (v.missing_examples.size() < 5) v.missing_examples.push_back(p.name);
    }
  return v;
}

}  // namespace mtt::audit
