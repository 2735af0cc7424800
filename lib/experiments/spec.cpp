#include "experiments/spec.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <set>

#include "core/atomic_file.h"
#include "core/error.h"
#include "core/utf8.h"
#include "io/strict_yaml.h"

namespace mtt::experiments {

using nlohmann::json;

namespace {

std::string line_of(const YAML::Node& n) { return "line " + std::to_string(n.Mark().line + 1); }

json scalar_to_json(const YAML::Node& n) {
  const std::string& s = n.Scalar();
  if (n.Tag() == "!") return s;  // quoted in the source: always a string
  if (s == "null" || s == "~" || s.empty()) return nullptr;
  if (s == "true" || s == "True") return true;
  if (s == "false" || s == "False") return false;
  char* end = nullptr;
  errno = 0;
  long long i = std::strtoll(s.c_str(), &end, 10);
  if (end && *end == '\0' && errno != ERANGE) return i;  // out of int64: a float, refused by ranges
  double d = std::strtod(s.c_str(), &end);
  if (end && *end == '\0') return d;
  return s;
}

// Aliases are expanded: a few lines of anchors can stand for billions of nodes, and an alias
// inside its own anchor for an endless tree. Both end at these limits with an error.
constexpr std::size_t kMaxYamlNodes = 200'000;
constexpr int kMaxYamlDepth = 128;
struct Budget {
  std::size_t nodes = 0;
};

json node_to_json(const YAML::Node& n, const std::string& file, Budget& b, int depth = 0) {
  if (++b.nodes > kMaxYamlNodes)
    throw Error(file, line_of(n), "more than " + std::to_string(kMaxYamlNodes) + " values once aliases are expanded");
  if (depth > kMaxYamlDepth)
    throw Error(file, line_of(n), "nested deeper than " + std::to_string(kMaxYamlDepth) + " levels (an alias inside its own anchor?)");
  switch (n.Type()) {
    case YAML::NodeType::Null: return nullptr;
    case YAML::NodeType::Scalar:
      if (!valid_utf8(n.Scalar())) throw Error(file, line_of(n), "not valid UTF-8 (an escape sequence?)");
      return scalar_to_json(n);
    case YAML::NodeType::Sequence: {
      json a = json::array();
      for (const auto& e : n) a.push_back(node_to_json(e, file, b, depth + 1));
      return a;
    }
    case YAML::NodeType::Map: {
      json o = json::object();
      std::set<std::string> seen;
      for (const auto& kv : n) {
        if (kv.first.Type() != YAML::NodeType::Scalar) throw Error(file, line_of(kv.first), "map keys must be scalars");
        std::string key = kv.first.Scalar();
        if (!valid_utf8(key)) throw Error(file, line_of(kv.first), "key not valid UTF-8 (an escape sequence?)");
        if (!seen.insert(key).second) throw Error(file, line_of(kv.first), "duplicate key '" + key + "'");
        o[key] = node_to_json(kv.second, file, b, depth + 1);
      }
      return o;
    }
    case YAML::NodeType::Undefined: break;
  }
  throw Error(file, line_of(n), "undefined YAML node");
}

// A spec is a few hundred values; a grid is capped at 100000 points (grid.h).
const io::YamlLimits kSpecYamlLimits{std::size_t{4} << 20, 200'000, 64};

YAML::Node parse_yaml(const std::string& text, const std::string& file) {
  // Values end up in JSON (sweep.json, config.json), whose writer throws on invalid UTF-8.
  std::size_t bad = 0;
  if (!valid_utf8(text, &bad)) {
    const auto line = 1 + std::count(text.begin(), text.begin() + static_cast<std::ptrdiff_t>(bad), '\n');
    throw Error(file, "line " + std::to_string(line), "not valid UTF-8 (byte " + std::to_string(bad) + ")");
  }
  return io::load_yaml_strict(text, file, kSpecYamlLimits);
}

// A dotted path into the config: non-empty parts of letters, digits, '_' and '-'.
bool valid_key_path(const std::string& k) {
  if (k.empty() || k.front() == '.' || k.back() == '.' || k.find("..") != std::string::npos) return false;
  for (char c : k)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-' || c == '.')) return false;
  return true;
}

std::vector<Axis> parse_axes(const YAML::Node& grid, const std::string& file, Budget& budget) {
  std::vector<Axis> axes;
  if (!grid) return axes;
  if (!grid.IsMap()) throw Error(file, line_of(grid), "'grid' must map axis names to lists of values");
  std::set<std::string> seen;
  for (const auto& kv : grid) {
    Axis a;
    if (!kv.first.IsScalar()) throw Error(file, line_of(kv.first), "a grid axis name must be a dotted key");
    a.name = kv.first.Scalar();
    if (!valid_key_path(a.name))
      throw Error(file, line_of(kv.first), "grid axis '" + a.name + "' is not a dotted key such as ttt.base_lr");
    if (!seen.insert(a.name).second) throw Error(file, line_of(kv.first), "duplicate grid axis '" + a.name + "'");
    if (!kv.second.IsSequence() || kv.second.size() == 0)
      throw Error(file, line_of(kv.second), "grid axis '" + a.name + "' must be a non-empty list");
    for (const auto& v : kv.second) a.values.push_back(node_to_json(v, file, budget));
    axes.push_back(std::move(a));
  }
  return axes;
}

std::string required_string(const YAML::Node& root, const char* key, const std::string& file) {
  const YAML::Node n = root[key];
  if (!n) throw Error(file, line_of(root), std::string("missing required key '") + key + "'");
  if (!n.IsScalar() || n.Scalar().empty())
    throw Error(file, line_of(n), std::string("'") + key + "' must be a non-empty string");
  return n.Scalar();
}

}  // namespace

json yaml_to_json(const std::string& yaml_text, const std::string& file_name) {
  Budget budget;
  return node_to_json(parse_yaml(yaml_text, file_name), file_name, budget);
}

ExperimentSpec parse_spec(const std::string& text, const std::string& file) {
  YAML::Node root = parse_yaml(text, file);
  if (!root.IsMap()) throw Error(file, "line 1", "an experiment spec must be a YAML mapping");
  static const std::set<std::string> kKnown = {"name", "experiment", "description", "base", "grid", "reduced", "metrics"};
  std::set<std::string> seen;
  for (const auto& kv : root) {
    if (!kv.first.IsScalar()) throw Error(file, line_of(kv.first), "keys must be plain names");
    if (!kKnown.count(kv.first.Scalar()))
      throw Error(file, line_of(kv.first),
                  "unknown key '" + kv.first.Scalar() + "'" +
                      (root["experiment"] ? std::string()
                                          : " (an experiment spec has name, experiment, base, grid, reduced, metrics; "
                                            "a training config goes to ttt-sweep train --config)"));
    if (!seen.insert(kv.first.Scalar()).second)
      throw Error(file, line_of(kv.first), "duplicate key '" + kv.first.Scalar() + "'");
  }
  ExperimentSpec s;
  Budget budget;  // one for the whole spec
  s.path = file;
  s.name = required_string(root, "name", file);
  s.experiment = required_string(root, "experiment", file);
  io::collect_yaml_lines(root, "", s.lines);
  // The name becomes the default output folder (runs/<name>): no separators, no dot files.
  for (char c : s.name)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-' || c == '.') || s.name.front() == '.')
      throw Error(file, line_of(root["name"]),
                  "'name' must be letters, digits, '.', '_' or '-' (not starting with '.'), got '" + s.name + "'");
  if (const YAML::Node d = root["description"]; d && !d.IsNull()) {
    if (!d.IsScalar()) throw Error(file, line_of(d), "'description' must be a string");
    s.description = d.Scalar();
  }
  if (root["base"]) {
    if (!root["base"].IsMap()) throw Error(file, line_of(root["base"]), "'base' must be a mapping");
    s.base = node_to_json(root["base"], file, budget);
  }
  s.axes = parse_axes(root["grid"], file, budget);
  if (const YAML::Node r = root["reduced"]) {
    if (!r.IsMap()) throw Error(file, line_of(r), "'reduced' must be a mapping with 'grid' and/or 'base'");
    for (const auto& kv : r)
      if (!kv.first.IsScalar() || (kv.first.Scalar() != "grid" && kv.first.Scalar() != "base"))
        throw Error(file, line_of(kv.first), "unknown key '" + kv.first.Scalar() + "' in 'reduced'");
    s.reduced_axes = parse_axes(r["grid"], file, budget);
    if (r["base"]) {
      if (!r["base"].IsMap()) throw Error(file, line_of(r["base"]), "'reduced.base' must be a mapping");
      s.reduced_base = node_to_json(r["base"], file, budget);
    }
  }
  if (const YAML::Node m = root["metrics"]) {
    if (!m.IsSequence()) throw Error(file, line_of(m), "'metrics' must be a list of names");
    std::set<std::string> names;
    for (const auto& e : m) {
      if (!e.IsScalar() || e.Scalar().empty())
        throw Error(file, line_of(e), "'metrics' must be a list of names (each a non-empty string)");
      if (!names.insert(e.Scalar()).second) throw Error(file, line_of(e), "metric '" + e.Scalar() + "' listed twice");
      s.metrics.push_back(e.Scalar());
    }
  }
  return s;
}

ExperimentSpec load_spec(const std::string& path) { return parse_spec(read_file(path), path); }

void set_path(json& cfg, const std::string& dotted, const json& value) {
  json* cur = &cfg;
  std::size_t start = 0;
  while (true) {
    std::size_t dot = dotted.find('.', start);
    std::string part = dotted.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
    if (part.empty()) throw Error("", dotted, "empty component in a dotted config path");
    if (dot == std::string::npos) {
      (*cur)[part] = value;
      return;
    }
    if (!cur->contains(part) || !(*cur)[part].is_object()) (*cur)[part] = json::object();
    cur = &(*cur)[part];
    start = dot + 1;
  }
}

const json* find_path(const json& cfg, const std::string& dotted) {
  const json* cur = &cfg;
  std::size_t start = 0;
  while (true) {
    std::size_t dot = dotted.find('.', start);
    std::string part = dotted.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
    if (!cur->is_object() || !cur->contains(part)) return nullptr;
    cur = &(*cur)[part];
    if (dot == std::string::npos) return cur;
    start = dot + 1;
  }
}

void merge_into(json& dst, const json& patch) {
  if (!patch.is_object() || !dst.is_object()) {
    dst = patch;
    return;
  }
  for (auto it = patch.begin(); it != patch.end(); ++it) {
    if (dst.contains(it.key()) && dst[it.key()].is_object() && it.value().is_object())
      merge_into(dst[it.key()], it.value());
    else
      dst[it.key()] = it.value();
  }
}

}  // namespace mtt::experiments
