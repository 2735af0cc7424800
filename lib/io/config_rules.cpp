#include "io/config_rules.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "core/error.h"

namespace mtt::io {

using nlohmann::json;

namespace {

std::string num_text(double v) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.10g", v);
  return buf;
}

std::size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<std::size_t> row(b.size() + 1);
  for (std::size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (std::size_t i = 1; i <= a.size(); ++i) {
    std::size_t diag = row[0];
    row[0] = i;
    for (std::size_t j = 1; j <= b.size(); ++j) {
      const std::size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diag = up;
    }
  }
  return row[b.size()];
}

std::string leaf(const std::string& key) {
  const auto dot = key.find_last_of('.');
  return dot == std::string::npos ? key : key.substr(dot + 1);
}

}  // namespace

std::string json_brief(const json& v) {
  if (v.is_number_float()) return num_text(v.get<double>());
  std::string s = v.dump();
  if (s.size() > 60) s = s.substr(0, 57) + "...";
  return s;
}

std::string integer_range_text(int64_t lo, int64_t hi) {
  if (hi == std::numeric_limits<int64_t>::max()) return "an integer >= " + std::to_string(lo);
  return "an integer in " + std::to_string(lo) + ".." + std::to_string(hi);
}

std::string number_range_text(double lo, double hi, bool open_lo, bool open_hi) {
  const bool no_lo = lo <= -std::numeric_limits<double>::max(), no_hi = hi >= std::numeric_limits<double>::max();
  if (no_lo && no_hi) return "a finite number";
  if (no_hi) return std::string("a finite number ") + (open_lo ? "> " : ">= ") + num_text(lo);
  if (no_lo) return std::string("a finite number ") + (open_hi ? "< " : "<= ") + num_text(hi);
  return std::string("a number in ") + (open_lo ? "(" : "[") + num_text(lo) + ", " + num_text(hi) +
         (open_hi ? ")" : "]");
}

ConfigRules& ConfigRules::add(Rule r) {
  rules_.erase(std::remove_if(rules_.begin(), rules_.end(), [&](const Rule& o) { return o.key == r.key; }),
               rules_.end());
  rules_.push_back(std::move(r));
  return *this;
}

ConfigRules& ConfigRules::integer(const std::string& key, int64_t lo, int64_t hi) {
  Rule r;
  r.key = key;
  r.type = Type::integer;
  r.ilo = lo;
  r.ihi = hi;
  return add(std::move(r));
}

ConfigRules& ConfigRules::number(const std::string& key, double lo, double hi, bool open_lo, bool open_hi) {
  Rule r;
  r.key = key;
  r.type = Type::number;
  r.lo = lo;
  r.hi = hi;
  r.open_lo = open_lo;
  r.open_hi = open_hi;
  return add(std::move(r));
}

ConfigRules& ConfigRules::boolean(const std::string& key) {
  Rule r;
  r.key = key;
  r.type = Type::boolean;
  return add(std::move(r));
}

ConfigRules& ConfigRules::text(const std::string& key) {
  Rule r;
  r.key = key;
  r.type = Type::text;
  return add(std::move(r));
}

ConfigRules& ConfigRules::choice(const std::string& key, std::vector<std::string> values) {
  Rule r;
  r.key = key;
  r.type = Type::choice;
  r.values = std::move(values);
  return add(std::move(r));
}

ConfigRules& ConfigRules::integer_list(const std::string& key, int64_t lo, int64_t hi, std::size_t max_len) {
  Rule r;
  r.key = key;
  r.type = Type::integer_list;
  r.ilo = lo;
  r.ihi = hi;
  r.max_len = max_len;
  return add(std::move(r));
}

ConfigRules& ConfigRules::or_null() {
  if (!rules_.empty()) rules_.back().nullable = true;
  return *this;
}

ConfigRules& ConfigRules::section(const std::string& key, Check check) {
  Rule r;
  r.key = key;
  r.type = Type::section;
  r.check = std::move(check);
  return add(std::move(r));
}

ConfigRules& ConfigRules::relation(Relation check) {
  relations_.push_back(std::move(check));
  return *this;
}

ConfigRules& ConfigRules::include(const ConfigRules& other) {
  for (const Rule& r : other.rules_) add(r);
  relations_.insert(relations_.end(), other.relations_.begin(), other.relations_.end());
  return *this;
}

const ConfigRules::Rule* ConfigRules::find(const std::string& key) const {
  for (const Rule& r : rules_)
    if (r.key == key) return &r;
  return nullptr;
}

bool ConfigRules::is_prefix(const std::string& key) const {
  const std::string p = key + ".";
  for (const Rule& r : rules_)
    if (r.key.compare(0, p.size(), p) == 0) return true;
  return false;
}

bool ConfigRules::declares(const std::string& key) const { return find(key) != nullptr; }

std::vector<std::string> ConfigRules::keys() const {
  std::vector<std::string> k;
  for (const Rule& r : rules_) k.push_back(r.key);
  std::sort(k.begin(), k.end());
  return k;
}

std::string ConfigRules::near_key(const std::string& key) const {
  std::string best;
  std::size_t best_d = 3;
  const std::string l = leaf(key);
  for (const Rule& r : rules_) {
    const std::size_t d = edit_distance(l, leaf(r.key));
    if (d < best_d || (l.size() > 3 && leaf(r.key).find(l) != std::string::npos && best.empty())) {
      best = r.key;
      best_d = std::min(d, best_d);
    }
  }
  return best;
}

void ConfigRules::check_value(const Rule& r, const json& v, const std::string& file, const Locate& where) const {
  auto bad = [&](const std::string& why) { throw Error(file, where(r.key), why + ", got " + json_brief(v)); };
  if (v.is_null()) {
    if (r.nullable) return;
    throw Error(file, where(r.key), "null is not a value here (leave the key out for its default)");
  }
  switch (r.type) {
    case Type::integer: {
      const std::string want = "must be " + integer_range_text(r.ilo, r.ihi);
      if (v.is_number_integer()) {
        // Unsigned JSON numbers above INT64_MAX are out of every range we declare.
        if (v.is_number_unsigned() && v.get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
          bad(want);
        const int64_t i = v.get<int64_t>();
        if (i < r.ilo || i > r.ihi) bad(want);
        return;
      }
      if (v.is_number_float()) {
        const double d = v.get<double>();
        if (!std::isfinite(d) || d != std::floor(d)) bad(want);
        if (d < static_cast<double>(r.ilo) || d > static_cast<double>(r.ihi)) bad(want);
        return;
      }
      bad(want);
      return;
    }
    case Type::number: {
      const std::string want = "must be " + number_range_text(r.lo, r.hi, r.open_lo, r.open_hi);
      if (!v.is_number()) bad(want);
      const double d = v.get<double>();
      if (!std::isfinite(d)) bad(want);
      if (r.open_lo ? !(d > r.lo) : !(d >= r.lo)) bad(want);
      if (r.open_hi ? !(d < r.hi) : !(d <= r.hi)) bad(want);
      return;
    }
    case Type::boolean:
      if (!v.is_boolean()) bad("must be true or false");
      return;
    case Type::text:
      if (!v.is_string()) bad("must be a string");
      return;
    case Type::choice: {
      std::string list;
      for (const auto& s : r.values) list += (list.empty() ? "" : ", ") + s;
      if (!v.is_string() || std::find(r.values.begin(), r.values.end(), v.get<std::string>()) == r.values.end())
        bad("must be one of: " + list);
      return;
    }
    case Type::integer_list: {
      const std::string want = "must be a list of at most " + std::to_string(r.max_len) + " integers, each " +
                               integer_range_text(r.ilo, r.ihi).substr(std::string("an integer ").size());
      if (!v.is_array() || v.empty() || v.size() > r.max_len) bad(want);
      for (const auto& e : v) {
        if (!e.is_number_integer() || (e.is_number_unsigned() && e.get<uint64_t>() > static_cast<uint64_t>(r.ihi)))
          bad(want);
        const int64_t i = e.get<int64_t>();
        if (i < r.ilo || i > r.ihi) bad(want);
      }
      return;
    }
    case Type::section:
      r.check(v, r.key, file, where);
      return;
  }
}

void ConfigRules::walk(const json& obj, const std::string& prefix, const std::string& file,
                       const Locate& where) const {
  for (auto it = obj.begin(); it != obj.end(); ++it) {
    const std::string key = prefix.empty() ? it.key() : prefix + "." + it.key();
    if (const Rule* r = find(key)) {
      check_value(*r, it.value(), file, where);
    } else if (is_prefix(key)) {
      if (!it.value().is_object()) throw Error(file, where(key), "must be a mapping, got " + json_brief(it.value()));
      walk(it.value(), key, file, where);
    } else {
      const std::string near = near_key(key);
      throw Error(file, where(key),
                  "unknown key" + (near.empty() ? std::string() : " (did you mean '" + near + "'?)"));
    }
  }
}

void ConfigRules::check(const json& cfg, const std::string& file, const Locate& where) const {
  if (!cfg.is_object()) throw Error(file, where(""), "must be a mapping, got " + json_brief(cfg));
  walk(cfg, "", file, where);
  for (const auto& rel : relations_) rel(cfg, file, where);
}

}  // namespace mtt::io
