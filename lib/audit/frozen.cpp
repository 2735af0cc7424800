// Finding 3: frozen parameters.
//  - constant tensors (std 0, every element bit-equal) while tensors of the same role elsewhere
//    vary (seed 000: backward gates at bf16(0.3) = 0.30078125 while the forward gates trained),
//    labelled with the known initial value they still hold;
//  - roles whose tensors are all still constant are reported as information (an untrained
//    checkpoint is not a finding);
//  - with --base: tensors bit-equal to the base/init checkpoint, a problem when other tensors
//    of the same module moved, and ||dW||/||W_base|| for those that moved.
#include <cmath>
#include <set>
#include <sstream>

#include "audit/findings.h"
#include "core/dtype.h"

namespace mtt::audit {

namespace {
std::string num(double v) {
  std::ostringstream s;
  s.precision(10);
  s << v;
  return s.str();
}
}  // namespace

std::string init_value_label(double v, const moshi::ParamDecl* decl) {
  std::vector<double> cands;
  if (decl && decl->init.kind == moshi::InitKind::constant) cands.push_back(decl->init.a);
  for (double x : {0.0, 1.0, 0.1, 0.3, 0.5}) cands.push_back(x);
  for (double x : cands) {
    if (v == x) return num(x);
    if (v == static_cast<double>(static_cast<float>(x))) return "f32(" + num(x) + ") = " + num(v);
    if (v == static_cast<double>(bf16_to_float(float_to_bf16(static_cast<float>(x)))))
      return "bf16(" + num(x) + ") = " + num(v);
    if (v == static_cast<double>(f16_to_float(float_to_f16(static_cast<float>(x)))))
      return "f16(" + num(x) + ") = " + num(v);
  }
  return "";
}

Frozen find_frozen(const moshi::ModelSchema& schema, const StatsMap& stats, const CompareMap& base,
                   const std::string& base_path, uint64_t not_in_base, const std::vector<int>& filter) {
  Frozen f;
  // Role groups over the whole checkpoint (siblings are not limited by --layers).
  struct Group {
    uint64_t tensors = 0, varying = 0;
    std::set<double> constants;
  };
  std::map<std::string, Group> groups;
  for (const auto& [name, st] : stats) {
    const auto* d = schema.find(name);
    if (!d || st.numel < 2) continue;
    auto& g = groups[d->role];
    ++g.tensors;
    if (!st.constant()) ++g.varying;
    else g.constants.insert(st.first);
  }
  for (const auto& [name, st] : stats) {
    const auto* d = schema.find(name);
    if (!d || st.numel < 2 || !st.constant()) continue;
    const auto& g = groups[d->role];
    if (g.varying == 0 || !layer_selected(filter, d->layer)) continue;
    FrozenEntry e;
    e.name = name;
    e.role = d->role;
    e.layer = d->layer;
    e.value = st.first;
    e.init_label = init_value_label(st.first, d);
    e.params = st.numel;
    e.bytes = st.nbytes;
    e.varying_siblings = g.varying;
    f.params += e.params;
    f.bytes += e.bytes;
    f.entries.push_back(std::move(e));
  }
  for (const auto& [role, g] : groups)
    if (g.varying == 0 && g.tensors > 0) {
      AtInitGroup a;
      a.role = role;
      a.tensors = g.tensors;
      for (double v : g.constants) a.values += (a.values.empty() ? "" : ", ") + num(v);
      f.at_init_groups.push_back(std::move(a));
    }

  if (!base.empty() || !base_path.empty()) {
    f.with_base = true;
    f.base = base_path;
    f.not_in_base = not_in_base;
    std::map<std::string, uint64_t> moved_in_module;
    for (const auto& [name, c] : base) {
      const auto* d = schema.find(name);
      if (c.comparable && !c.bit_equal) ++moved_in_module[d ? d->module : "(undeclared)"];
    }
    for (const auto& [name, c] : base) {
      const auto* d = schema.find(name);
      BaseEntry e;
      e.name = name;
      e.module = d ? d->module : "(undeclared)";
      e.layer = d ? d->layer : key_layer(name);
      if (!c.comparable || !layer_selected(filter, e.layer)) continue;
      const auto& st = stats.at(name);
      e.params = st.numel;
      e.bytes = st.nbytes;
      e.unchanged = c.bit_equal;
      e.rel_change = c.rel_change();
      if (e.unchanged) {
        ++f.unchanged;
        f.unchanged_params += e.params;
        e.problem = moved_in_module[e.module] > 0 && (!d || d->consumed);
        f.base_problems += e.problem;
      } else {
        ++f.moved;
      }
      f.base_entries.push_back(std::move(e));
    }
  }
  return f;
}

}  // namespace mtt::audit
