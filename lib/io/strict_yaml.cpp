#include "io/strict_yaml.h"

#include <yaml-cpp/eventhandler.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <filesystem>
#include <sstream>
#include <vector>

#include "core/atomic_file.h"
#include "core/error.h"

namespace mtt::io {

namespace {

std::string line_at(const YAML::Mark& m) { return m.is_null() ? "" : "line " + std::to_string(m.line + 1); }

// Walks the parser's events without building nodes and charges every alias what it expands to.
class BudgetScan : public YAML::EventHandler {
 public:
  BudgetScan(const std::string& file, const YamlLimits& limits) : file_(file), limits_(limits) {}

  void OnDocumentStart(const YAML::Mark&) override {}
  void OnDocumentEnd() override {}
  void OnNull(const YAML::Mark& m, YAML::anchor_t a) override { leaf(m, a); }
  void OnScalar(const YAML::Mark& m, const std::string&, YAML::anchor_t a, const std::string&) override {
    leaf(m, a);
  }
  void OnAlias(const YAML::Mark& m, YAML::anchor_t a) override {
    for (const Frame& f : open_)
      if (f.anchor == a)
        throw Error(file_, line_at(m), "an alias inside its own anchor (" + name_of(a) + ", a cycle)");
    if (a >= anchors_.size() || !anchors_[a].closed)
      throw Error(file_, line_at(m), "alias " + name_of(a) + " names no finished node");
    charge(m, anchors_[a].values, level() + anchors_[a].height, "alias " + name_of(a));
  }
  void OnSequenceStart(const YAML::Mark& m, const std::string&, YAML::anchor_t a, YAML::EmitterStyle::value) override {
    open(m, a);
  }
  void OnSequenceEnd() override { close(); }
  void OnMapStart(const YAML::Mark& m, const std::string&, YAML::anchor_t a, YAML::EmitterStyle::value) override {
    open(m, a);
  }
  void OnMapEnd() override { close(); }
  void OnAnchor(const YAML::Mark&, const std::string& name) override { pending_name_ = name; }

 private:
  struct Frame {
    YAML::anchor_t anchor;
    std::size_t values_before;  // values_ when the node opened (itself not counted)
    int level;                  // the node's own level
    int deepest;                // deepest level seen inside it
  };
  struct Anchor {
    std::string name;
    std::size_t values = 0;  // expanded size of the anchored node
    int height = 0;          // levels below it
    bool closed = false;
  };

  int level() const { return static_cast<int>(open_.size()); }

  std::string name_of(YAML::anchor_t a) const {
    if (a < anchors_.size() && !anchors_[a].name.empty()) return "*" + anchors_[a].name;
    return "#" + std::to_string(a);
  }

  Anchor& anchor(YAML::anchor_t a) {
    if (a >= anchors_.size()) anchors_.resize(a + 1);
    if (!pending_name_.empty()) anchors_[a].name = std::move(pending_name_);
    pending_name_.clear();
    return anchors_[a];
  }

  // Adds `n` values reaching down to `deepest`; `what` names the cause in the error.
  void charge(const YAML::Mark& m, std::size_t n, int deepest, const std::string& what) {
    if (n > limits_.max_values - std::min(values_, limits_.max_values) )
      throw Error(file_, line_at(m),
                  "more than " + std::to_string(limits_.max_values) + " values once aliases are expanded (" + what +
                      " adds " + std::to_string(n) + ")");
    values_ += n;
    if (deepest > limits_.max_depth)
      throw Error(file_, line_at(m),
                  "nested deeper than " + std::to_string(limits_.max_depth) + " levels" +
                      (what.rfind("alias", 0) == 0 ? " once " + what + " is expanded" : ""));
    if (!open_.empty()) open_.back().deepest = std::max(open_.back().deepest, deepest);
  }

  void leaf(const YAML::Mark& m, YAML::anchor_t a) {
    charge(m, 1, level(), "a value");
    if (a) {
      Anchor& an = anchor(a);
      an.values = 1;
      an.height = 0;
      an.closed = true;
    }
  }

  void open(const YAML::Mark& m, YAML::anchor_t a) {
    charge(m, 1, level(), "a value");
    if (a) anchor(a).closed = false;
    open_.push_back({a, values_ - 1, level(), level()});
  }

  void close() {
    if (open_.empty()) return;
    const Frame f = open_.back();
    open_.pop_back();
    if (!open_.empty()) open_.back().deepest = std::max(open_.back().deepest, f.deepest);
    if (f.anchor) {
      Anchor& an = anchors_[f.anchor];
      an.values = values_ - f.values_before;
      an.height = f.deepest - f.level;
      an.closed = true;
    }
  }

  const std::string& file_;
  const YamlLimits& limits_;
  std::vector<Frame> open_;
  std::vector<Anchor> anchors_;
  std::string pending_name_;
  std::size_t values_ = 0;
};

[[noreturn]] void rethrow_yaml(const YAML::Exception& e, const std::string& file) {
  throw Error(file, line_at(e.mark), "YAML syntax error: " + e.msg);
}

}  // namespace

YAML::Node load_yaml_strict(const std::string& text, const std::string& file, const YamlLimits& limits) {
  if (text.size() > limits.max_bytes)
    throw Error(file, "", "YAML text of " + std::to_string(text.size()) + " bytes (limit " +
                              std::to_string(limits.max_bytes) + ")");
  if (const auto z = text.find('\0'); z != std::string::npos)
    throw Error(file, "line " + std::to_string(1 + std::count(text.begin(), text.begin() + z, '\n')),
                "NUL byte in YAML text");
  try {
    std::istringstream in(text);
    YAML::Parser parser(in);
    BudgetScan scan(file, limits);
    if (parser.HandleNextDocument(scan)) {
      BudgetScan rest(file, limits);
      if (parser.HandleNextDocument(rest))
        throw Error(file, "", "more than one YAML document (only one is read; remove the '---' separators)");
    }
    return YAML::Load(text);
  } catch (const YAML::Exception& e) {
    rethrow_yaml(e, file);
  }
}

YAML::Node load_yaml_file_strict(const std::string& path, const YamlLimits& limits) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) throw Error(path, "", "is a directory, expected a YAML file");
  if (!std::filesystem::exists(path, ec)) throw Error(path, "", "no such file");
  return load_yaml_strict(read_file(path), path, limits);
}

std::string yaml_line(const YAML::Node& node) { return line_at(node.Mark()); }

std::string yaml_where(const std::string& key, const YAML::Node& node) {
  const std::string l = yaml_line(node);
  if (l.empty()) return key;
  return key.empty() ? l : key + " (" + l + ")";
}

void collect_yaml_lines(const YAML::Node& node, const std::string& prefix, LineMap& out) {
  if (node.IsMap()) {
    for (auto it = node.begin(); it != node.end(); ++it) {
      if (!it->first.IsScalar()) continue;
      const std::string key = prefix.empty() ? it->first.Scalar() : prefix + "." + it->first.Scalar();
      if (!it->first.Mark().is_null()) out.emplace(key, it->first.Mark().line + 1);
      collect_yaml_lines(it->second, key, out);
    }
  } else if (node.IsSequence()) {
    std::size_t i = 0;
    for (auto it = node.begin(); it != node.end(); ++it, ++i) {
      const std::string key = prefix + "[" + std::to_string(i) + "]";
      if (!it->Mark().is_null()) out.emplace(key, it->Mark().line + 1);
      collect_yaml_lines(*it, key, out);
    }
  }
}

}  // namespace mtt::io
