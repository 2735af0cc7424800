#include "audit/render.h"

#include <cstdio>
#include <sstream>

#include "moshi/schema.h"

namespace mtt::audit {

namespace {

std::string fmt(const char* f, double v) {
  char b[64];
  std::snprintf(b, sizeof b, f, v);
  return b;
}

std::string grouped(uint64_t v) {  // 12288 -> "12,288"
  std::string s = std::to_string(v), o;
  int n = 0;
  for (auto it = s.rbegin(); it != s.rend(); ++it) {
    if (n && n % 3 == 0) o.push_back(',');
    o.push_back(*it);
    ++n;
  }
  return {o.rbegin(), o.rend()};
}

std::string pad(const std::string& s, std::size_t w, bool right = false) {
  if (s.size() >= w) return s;
  return right ? std::string(w - s.size(), ' ') + s : s + std::string(w - s.size(), ' ');
}

std::string shape_str(const std::vector<int64_t>& s) {
  std::string o = "[";
  for (std::size_t i = 0; i < s.size(); ++i) o += (i ? ", " : "") + std::to_string(s[i]);
  return o + "]";
}

std::string layers_str(const std::vector<int>& l) {
  std::string o;
  for (int x : l) o += (o.empty() ? "" : ",") + std::to_string(x);
  return o.empty() ? "none" : o;
}

std::size_t width_of(const std::vector<std::string>& v, std::size_t min) {
  std::size_t w = min;
  for (const auto& s : v) w = std::max(w, s.size());
  return w;
}

std::string config_line(const moshi::SchemaConfig& c) {
  std::ostringstream s;
  s << "dim " << c.dim << ", " << c.num_layers << " layers, " << c.num_heads << " heads, FFN hidden "
    << (c.gating ? c.ffn_hidden() : c.dim_feedforward) << (c.gating ? " (gated SiLU)" : " (plain)") << ", "
    << (c.layer_norm ? "LayerNorm" : "RMSNorm");
  if (c.dep_q > 0)
    s << "; depformer dim " << c.depformer_dim << " x " << c.depformer_num_layers << " layers, "
      << c.depformer_weights_per_step << " weight sets, dep_q " << c.dep_q;
  s << "; attention names " << (c.fused_attention_names ? "fused (in_proj_weight)" : "per-step (in_projs.k)");
  return s.str();
}

std::string ttt_line(const moshi::SchemaConfig& c) {
  const auto& t = c.ttt;
  std::ostringstream s;
  if (t.variant == moshi::TTTVariant::none) {
    s << "no TTT layers";
  } else if (t.variant == moshi::TTTVariant::fork_hybrid) {
    s << "fork hybrid (seq_modeling_block) "
      << (t.ttt_mlp_layers == 1 ? "TTT-Linear" : t.ttt_mlp_layers == 2 ? "TTT-MLP" : "TTT-MLP multi-layer")
      << " on layers " << layers_str(t.layers) << ", " << t.ttt_heads << " heads (d " << c.dim / std::max(1, t.ttt_heads)
      << "), output path " << (t.output_post_norm_wo ? "post_norm+wo" : "skip (fork)")
      << (t.causal_eta ? ", causal eta" : ", VDIT eta");
  } else {
    s << "In-Place TTT (gating.target_generator) on layers " << layers_str(t.layers) << ", conv kernel "
      << t.conv_kernel_size;
  }
  s << "; LoRA " << (t.lora_rank ? "rank " + std::to_string(t.lora_rank) + " (frozen_W/lora_A/lora_B names)" : "off");
  return s.str();
}

nlohmann::json summary_json(const Summary& s) {
  return {{"mean", s.mean}, {"min", s.min}, {"max", s.max}, {"std", s.std}};
}

}  // namespace

std::string human_bytes(uint64_t b) {
  const char* u[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(b);
  int i = 0;
  while (v >= 1024 && i < 4) {
    v /= 1024;
    ++i;
  }
  return i == 0 ? std::to_string(b) + " B" : fmt("%.1f ", v) + u[i];
}

std::string render_table(const Report& r) {
  std::ostringstream o;
  const auto& inv = r.inventory;
  o << "ttt-inspect: " << inv.description << "\n";
  o << "Configuration (from " << inv.config_source << "): " << config_line(inv.config) << "\n";
  o << "TTT: " << ttt_line(inv.config) << "\n";
  for (const auto& line : inv.resolved) o << "  " << line << "\n";
  if (!r.layer_filter.empty()) o << "Layers reported: " << layers_str(r.layer_filter) << "\n";

  // 1. Inventory
  o << "\n1. Inventory" << (inv.partial ? " (partial checkpoint: adapter or subset file)" : "") << "\n";
  std::vector<std::string> names;
  for (const auto& m : inv.modules) names.push_back(m.module);
  const std::size_t mw = width_of(names, 26);
  o << "  " << pad("module", mw) << pad("tensors", 9, true) << pad("params", 17, true) << pad("bytes", 12, true) << "\n";
  for (const auto& m : inv.modules)
    o << "  " << pad(m.module, mw) << pad(grouped(m.tensors), 9, true) << pad(grouped(m.params), 17, true)
      << pad(human_bytes(m.bytes), 12, true) << "\n";
  o << "  " << pad("total", mw) << pad(grouped(inv.tensors), 9, true) << pad(grouped(inv.params), 17, true)
    << pad(human_bytes(inv.bytes), 12, true) << "\n";
  o << "  declared by the model " << inv.declared << ", missing " << inv.missing << ", undeclared "
    << inv.undeclared.size() << ", shape mismatches " << inv.shape_mismatches.size() << "; duplicate original_layer copies "
    << inv.duplicate_tensors << " (" << grouped(inv.duplicate_params) << " params, " << human_bytes(inv.duplicate_bytes)
    << ")\n  dtypes:";
  for (const auto& [d, n] : inv.dtypes) o << " " << d << " " << n;
  o << "; NaN " << inv.nan << ", Inf " << inv.inf << "\n";
  if (!inv.nonfinite.empty()) {
    names.clear();
    for (const auto& n : inv.nonfinite) names.push_back(n.name);
    const std::size_t w = width_of(names, 10);
    o << "  non-finite values:\n";
    o << "    " << pad("key", w) << pad("NaN", 12, true) << pad("Inf", 12, true) << pad("first at", 14, true)
      << "  index\n";
    for (const auto& n : inv.nonfinite)
      o << "    " << pad(n.name, w) << pad(grouped(n.nan), 12, true) << pad(grouped(n.inf), 12, true)
        << pad(std::to_string(n.first_index), 14, true) << "  " << shape_str(n.first_position) << " ("
        << (n.first_index == n.first_nan ? "NaN" : "Inf") << ")\n";
  }
  for (const auto& m : inv.shape_mismatches)
    o << "  shape mismatch: " << m.name << " " << shape_str(m.found) << ", model declares " << shape_str(m.expected) << "\n";

  // 2. Unused
  o << "\n2. Unused parameters: " << r.unused.entries.size() << " tensors, " << grouped(r.unused.params) << " params ("
    << fmt("%.4g", r.unused.share_percent) << "% of the total), " << human_bytes(r.unused.bytes) << " ("
    << grouped(r.unused.bytes) << " bytes)\n";
  if (!r.unused.entries.empty()) {
    names.clear();
    for (const auto& e : r.unused.entries) names.push_back(e.name);
    const std::size_t w = width_of(names, 10);
    o << "  " << pad("key", w) << pad("params", 12, true) << pad("bytes", 12, true) << "  reason\n";
    for (const auto& e : r.unused.entries)
      o << "  " << pad(e.name, w) << pad(grouped(e.params), 12, true) << pad(human_bytes(e.bytes), 12, true) << "  "
        << e.reason << "\n";
  }

  // 3. Frozen
  o << "\n3. Frozen parameters: " << r.frozen.entries.size() << " constant tensors among varying siblings ("
    << grouped(r.frozen.params) << " params)\n";
  if (!r.frozen.entries.empty()) {
    names.clear();
    for (const auto& e : r.frozen.entries) names.push_back(e.name);
    const std::size_t w = width_of(names, 10);
    o << "  " << pad("key", w) << "  " << pad("role", 14) << pad("params", 10, true) << "  value\n";
    for (const auto& e : r.frozen.entries)
      o << "  " << pad(e.name, w) << "  " << pad(e.role, 14) << pad(grouped(e.params), 10, true) << "  "
        << (e.init_label.empty() ? fmt("%.10g", e.value) : "at init " + e.init_label) << " (std 0; "
        << e.varying_siblings << " " << e.role << " tensors vary)\n";
  }
  for (const auto& g : r.frozen.at_init_groups)
    o << "  note: all " << g.tensors << " " << g.role << " tensors are constant (" << g.values
      << "): untrained, or never updated\n";
  if (r.frozen.with_base) {
    o << "  against base " << r.frozen.base << ": " << r.frozen.unchanged << " tensors unchanged ("
      << grouped(r.frozen.unchanged_params) << " params), " << r.frozen.moved << " moved, " << r.frozen.not_in_base
      << " not in the base; " << r.frozen.base_problems << " unchanged while their module moved\n";
    names.clear();
    for (const auto& e : r.frozen.base_entries)
      if (e.problem || !e.unchanged) names.push_back(e.name);
    const std::size_t w = width_of(names, 10);
    for (const auto& e : r.frozen.base_entries) {
      if (e.problem)
        o << "    " << pad(e.name, w) << "  unchanged (module " << e.module << " moved)\n";
      else if (!e.unchanged)
        o << "    " << pad(e.name, w) << "  ||dW||/||W|| = " << fmt("%.4g", e.rel_change) << "\n";
    }
  }

  // 4. Gating
  o << "\n4. Gating per TTT layer (alpha; branch multiplier 100*tanh(clamp(alpha, -3, 3)) %)\n";
  if (r.gating.rows.empty()) {
    o << "  no SSM gates in this checkpoint\n";
  } else {
    o << "  " << pad("layer", 6) << pad("gate", 9) << pad("used", 5) << pad("mean", 11, true) << pad("min", 11, true)
      << pad("max", 11, true) << pad("std", 11, true) << pad("mult mean%", 12, true) << pad("min%", 9, true)
      << pad("max%", 9, true) << "\n";
    for (const auto& g : r.gating.rows)
      o << "  " << pad(std::to_string(g.layer), 6) << pad(g.direction, 9) << pad(g.consumed ? "yes" : "no", 5)
        << pad(fmt("%.6g", g.alpha.mean), 11, true) << pad(fmt("%.6g", g.alpha.min), 11, true)
        << pad(fmt("%.6g", g.alpha.max), 11, true) << pad(fmt("%.4g", g.alpha.std), 11, true)
        << pad(fmt("%.3f", g.multiplier_pct.mean), 12, true) << pad(fmt("%.2f", g.multiplier_pct.min), 9, true)
        << pad(fmt("%.2f", g.multiplier_pct.max), 9, true) << "\n";
  }

  // 5. Dead paths
  uint64_t live = 0, one = 0;
  for (const auto& d : r.dead_paths.paths) live += d.status == "live", one += d.status == "one_factor_zero";
  o << "\n5. Dead gradient paths: " << r.dead_paths.dead << " (" << one << " with one zero factor, " << live
    << " live)\n";
  for (const auto& d : r.dead_paths.paths) {
    if (d.status != "dead") continue;
    o << "  " << d.name << ": ";
    for (std::size_t i = 0; i < d.factors.size(); ++i) o << (i ? " x " : "") << d.factors[i] << " = 0";
    o << "\n    remedy: " << d.remedy << "\n";
  }

  o << "\nResult: ";
  if (r.problems.empty()) {
    o << "no problems found (exit 0)\n";
  } else {
    o << r.problems.size() << " problem kinds found (exit 1)\n";
    for (const auto& p : r.problems) o << "  - " << p << "\n";
  }
  o << "Scanned " << human_bytes(r.bytes_scanned) << " in " << fmt("%.2f", r.seconds) << " s\n";
  return o.str();
}

nlohmann::json to_json(const Report& r) {
  using nlohmann::json;
  const auto& inv = r.inventory;
  json modules = json::array();
  for (const auto& m : inv.modules)
    modules.push_back({{"module", m.module}, {"tensors", m.tensors}, {"params", m.params}, {"bytes", m.bytes}});
  json mism = json::array();
  for (const auto& m : inv.shape_mismatches) mism.push_back({{"name", m.name}, {"expected", m.expected}, {"found", m.found}});
  json nonfinite = json::array();
  auto index_or_null = [](int64_t i) { return i < 0 ? json(nullptr) : json(i); };
  for (const auto& n : inv.nonfinite)
    nonfinite.push_back({{"name", n.name}, {"nan", n.nan}, {"inf", n.inf}, {"first_index", n.first_index},
                         {"first_position", n.first_position}, {"first_nan_index", index_or_null(n.first_nan)},
                         {"first_inf_index", index_or_null(n.first_inf)}});
  json config = json::parse(moshi::schema_config_to_json(inv.config));
  json j;
  j["schema_version"] = kReportSchemaVersion;
  j["checkpoint"] = inv.checkpoint;
  j["description"] = inv.description;
  j["layers_filter"] = r.layer_filter;
  j["config"] = {{"source", inv.config_source}, {"notes", inv.notes}, {"resolved", inv.resolved}, {"values", config}};
  j["inventory"] = {{"tensors", inv.tensors},
                    {"params", inv.params},
                    {"bytes", inv.bytes},
                    {"partial", inv.partial},
                    {"declared", inv.declared},
                    {"missing", inv.missing},
                    {"missing_examples", inv.missing_examples},
                    {"undeclared", inv.undeclared},
                    {"shape_mismatches", mism},
                    {"duplicates",
                     {{"tensors", inv.duplicate_tensors},
                      {"params", inv.duplicate_params},
                      {"bytes", inv.duplicate_bytes},
                      {"mismatched", inv.duplicate_mismatches}}},
                    {"dtypes", inv.dtypes},
                    {"nan", inv.nan},
                    {"inf", inv.inf},
                    {"nonfinite_tensors", inv.nonfinite_tensors},
                    {"nonfinite", nonfinite},
                    {"modules", modules}};
  json ue = json::array();
  for (const auto& e : r.unused.entries)
    ue.push_back({{"name", e.name}, {"module", e.module}, {"layer", e.layer}, {"declared", e.declared},
                  {"params", e.params}, {"bytes", e.bytes}, {"reason", e.reason}});
  j["unused"] = {{"count", r.unused.entries.size()}, {"params", r.unused.params}, {"bytes", r.unused.bytes},
                 {"share_percent", r.unused.share_percent}, {"entries", ue}};
  json fe = json::array();
  for (const auto& e : r.frozen.entries)
    fe.push_back({{"name", e.name}, {"role", e.role}, {"layer", e.layer}, {"value", e.value},
                  {"init_label", e.init_label}, {"params", e.params}, {"bytes", e.bytes},
                  {"varying_siblings", e.varying_siblings}});
  json groups = json::array();
  for (const auto& g : r.frozen.at_init_groups) groups.push_back({{"role", g.role}, {"tensors", g.tensors}, {"values", g.values}});
  json base = nullptr;
  if (r.frozen.with_base) {
    json be = json::array();
    for (const auto& e : r.frozen.base_entries)
      be.push_back({{"name", e.name}, {"module", e.module}, {"layer", e.layer}, {"unchanged", e.unchanged},
                    {"rel_change", e.rel_change}, {"params", e.params}, {"bytes", e.bytes}, {"problem", e.problem}});
    base = {{"path", r.frozen.base}, {"unchanged", r.frozen.unchanged}, {"unchanged_params", r.frozen.unchanged_params},
            {"moved", r.frozen.moved}, {"not_in_base", r.frozen.not_in_base}, {"problems", r.frozen.base_problems},
            {"entries", be}};
  }
  j["frozen"] = {{"count", r.frozen.entries.size()}, {"params", r.frozen.params}, {"bytes", r.frozen.bytes},
                 {"entries", fe}, {"at_init_groups", groups}, {"base", base}};
  json gr = json::array();
  for (const auto& g : r.gating.rows)
    gr.push_back({{"layer", g.layer}, {"direction", g.direction}, {"key", g.key}, {"consumed", g.consumed},
                  {"numel", g.numel}, {"alpha", summary_json(g.alpha)},
                  {"multiplier_percent", summary_json(g.multiplier_pct)}, {"nonfinite", g.nonfinite}});
  j["gating"] = gr;
  json dp = json::array();
  for (const auto& d : r.dead_paths.paths) {
    json fs = json::array();
    for (std::size_t i = 0; i < d.factors.size(); ++i) fs.push_back({{"name", d.factors[i]}, {"zero", bool(d.factor_zero[i])}});
    dp.push_back({{"name", d.name}, {"layer", d.layer}, {"factors", fs}, {"status", d.status}, {"remedy", d.remedy}});
  }
  j["dead_paths"] = {{"count", r.dead_paths.dead}, {"paths", dp}};
  j["problems"] = r.problems;
  j["exit_status"] = r.exit_status();
  j["seconds"] = r.seconds;
  j["bytes_scanned"] = r.bytes_scanned;
  return j;
}

nlohmann::json error_json(const std::string& message, int exit_status) {
  return {{"schema_version", kReportSchemaVersion}, {"error", message}, {"exit_status", exit_status}};
}

}  // namespace mtt::audit
