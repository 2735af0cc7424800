#pragma once
// YAML for untrusted files (experiment specs, training configs, run dirs' args.yaml): yaml-cpp
// with what it does not check. yaml-cpp resolves an alias to the anchored node itself, so an alias
// inside its own anchor (`a: &x [*x]`) makes a cyclic tree that any walk overflows the stack on,
// and a few lines of nested aliases stand for billions of values once a reader copies them out
// (an "alias bomb": gigabytes of RSS). Before any node is built, the document's parser events are
// scanned with a budget: the expanded size and depth of every anchor are known when its node
// closes, so each alias costs what it expands to without being expanded.
#include <cstddef>
#include <map>
#include <string>

namespace YAML {
class Node;
}

namespace mtt::io {

struct YamlLimits {
  std::size_t max_bytes = std::size_t{16} << 20;  // the text itself
  std::size_t max_values = 1'000'000;              // scalars + containers, aliases expanded
  int max_depth = 100;                             // nesting, aliases expanded
};

// Parses `text` as one YAML document. Throws mtt::Error(file, "line N", reason) for: a syntax
// error, an alias inside its own anchor ("a cycle"), an undefined alias, more than
// limits.max_values values or nesting deeper than limits.max_depth once aliases are expanded,
// a second document, text over limits.max_bytes. An empty text is a null node.
YAML::Node load_yaml_strict(const std::string& text, const std::string& file, const YamlLimits& limits = {});
// Same for a file (Error "cannot open" / "is a directory" naming it).
YAML::Node load_yaml_file_strict(const std::string& path, const YamlLimits& limits = {});

// "line N" of a node's mark (1-based); "" for nodes built in code (no mark).
std::string yaml_line(const YAML::Node& node);
// "key (line N)", or "key" alone for a node without a mark: the key part of an mtt::Error.
std::string yaml_where(const std::string& key, const YAML::Node& node);

// The line of every dotted key of a mapping tree ("base.ttt.lr" -> 12) and of every list element
// ("grid.seed[1]" -> 9), for errors found after the tree became JSON. Keys under `prefix`.
using LineMap = std::map<std::string, int>;
void collect_yaml_lines(const YAML::Node& node, const std::string& prefix, LineMap& out);

}  // namespace mtt::io
