#pragma once
// Declared keys of a configuration tree (an experiment's `base:` and grid points, a training
// config) with their types and ranges, checked before anything runs. Every key a reader takes is
// declared once, beside the reader; a key nobody declared is an error (with a near spelling when
// one exists), so a typo never silently falls back to a default. Numbers must be finite, sizes
// positive and bounded (a vocabulary of 0 or a sequence of 2^40 would otherwise reach LibTorch),
// and null is refused unless the key gives it a meaning.
//
// Errors: mtt::Error(file, where(key), reason) where `where` says where the key was written
// ("base.vocab (line 7)", "grid.optim.lr[1] (line 12)"): one line naming the file and the line.
#include <cstdint>
#include <functional>
#include <limits>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace mtt::io {

// Dotted key ("optim.lr") -> the key part of an error ("base.optim.lr (line 9)").
using Locate = std::function<std::string(const std::string& dotted_key)>;

class ConfigRules {
 public:
  // What a section check gets: the value, the dotted key of the section, the file, where keys are.
  using Check = std::function<void(const nlohmann::json& value, const std::string& key, const std::string& file,
                                   const Locate& where)>;
  using Relation = std::function<void(const nlohmann::json& cfg, const std::string& file, const Locate& where)>;

  // An integer (a JSON integer, or a float with an integral value such as 1e3) in [lo, hi].
  ConfigRules& integer(const std::string& key, int64_t lo, int64_t hi);
  // A finite number in [lo, hi]; open_lo / open_hi leave the bound itself out.
  ConfigRules& number(const std::string& key, double lo = -std::numeric_limits<double>::max(),
                      double hi = std::numeric_limits<double>::max(), bool open_lo = false, bool open_hi = false);
  ConfigRules& boolean(const std::string& key);
  ConfigRules& text(const std::string& key);                                        // any string
  ConfigRules& choice(const std::string& key, std::vector<std::string> values);     // one of these strings
  ConfigRules& integer_list(const std::string& key, int64_t lo, int64_t hi, std::size_t max_len);
  // The rule declared last also takes null (the key's "none" / default meaning).
  ConfigRules& or_null();
  // A mapping left to its own reader (e.g. the `ttt:` section to the TTT settings reader).
  ConfigRules& section(const std::string& key, Check check);
  // A constraint across keys, run after every key passed (e.g. a memory cap on batch x length).
  ConfigRules& relation(Relation check);
  // Every rule and relation of `other` (shared groups such as the training keys).
  ConfigRules& include(const ConfigRules& other);

  // Throws mtt::Error(file, where(key), reason) for the first unknown key, wrong type or value out
  // of range, in the tree's order.
  void check(const nlohmann::json& cfg, const std::string& file, const Locate& where) const;

  std::vector<std::string> keys() const;  // declared keys, sorted
  bool declares(const std::string& key) const;

 private:
  enum class Type { integer, number, boolean, text, choice, integer_list, section };
  struct Rule {
    std::string key;
    Type type = Type::number;
    double lo = 0, hi = 0;
    int64_t ilo = 0, ihi = 0;
    bool open_lo = false, open_hi = false, nullable = false;
    std::size_t max_len = 0;
    std::vector<std::string> values;
    Check check;
  };
  ConfigRules& add(Rule r);
  const Rule* find(const std::string& key) const;
  bool is_prefix(const std::string& key) const;  // some rule lies under key.
  void check_value(const Rule& r, const nlohmann::json& v, const std::string& file, const Locate& where) const;
  void walk(const nlohmann::json& obj, const std::string& prefix, const std::string& file, const Locate& where) const;
  std::string near_key(const std::string& key) const;

  std::vector<Rule> rules_;
  std::vector<Relation> relations_;
};

// "must be an integer in 1..4096" / "must be a finite number in (0, 1]": the text of a range, also
// for flags, so every message states the real bounds.
std::string integer_range_text(int64_t lo, int64_t hi);
std::string number_range_text(double lo, double hi, bool open_lo = false, bool open_hi = false);

// A JSON value as a short text for messages ("nan", "[1,2]", "\"abc\"").
std::string json_brief(const nlohmann::json& v);

}  // namespace mtt::io
