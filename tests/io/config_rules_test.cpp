// io::ConfigRules: declared keys with types and ranges; errors placed by the caller's locator.
#include "io/config_rules.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "core/error.h"

namespace mtt::io {
namespace {

using nlohmann::json;

const Locate kWhere = [](const std::string& k) { return "base." + k + " (line 7)"; };

std::string error_of(const ConfigRules& r, const json& cfg) {
  try {
    r.check(cfg, "s.yaml", kWhere);
  } catch (const Error& e) {
    EXPECT_EQ(e.exit_status(), kExitInput);
    return e.what();
  }
  return "";
}

ConfigRules rules() {
  return ConfigRules()
      .integer("vocab", 2, 65536)
      .integer("seed", 0, std::numeric_limits<int64_t>::max())
      .number("optim.lr", 0)
      .number("optim.pct_start", 0, 1, false, true)
      .number("force_alpha")
      .or_null()
      .boolean("tiny")
      .choice("mode", {"base", "ttt"})
      .integer_list("distances", 1, 4096, 4);
}

TEST(ConfigRules, AcceptsDeclaredKeysInRange) {
  EXPECT_EQ(error_of(rules(), json::parse(R"({"vocab": 2, "seed": 9223372036854775807, "optim": {"lr": 0.0,
      "pct_start": 0.5}, "force_alpha": null, "tiny": true, "mode": "ttt", "distances": [1, 4096]})")),
            "");
  EXPECT_EQ(error_of(rules(), json{{"vocab", 1e3}}), "") << "an integral float is an integer (YAML 1e3)";
  EXPECT_EQ(error_of(rules(), json::object()), "");
}

TEST(ConfigRules, RangesAndTypesNameTheKeyAndTheRealRange) {
  EXPECT_EQ(error_of(rules(), json{{"vocab", 0}}), "s.yaml: base.vocab (line 7): must be an integer in 2..65536, got 0");
  EXPECT_EQ(error_of(rules(), json{{"vocab", 2.5}}), "s.yaml: base.vocab (line 7): must be an integer in 2..65536, got 2.5");
  EXPECT_EQ(error_of(rules(), json{{"vocab", json::array({1, 2})}}),
            "s.yaml: base.vocab (line 7): must be an integer in 2..65536, got [1,2]");
  EXPECT_EQ(error_of(rules(), json{{"seed", -1}}), "s.yaml: base.seed (line 7): must be an integer >= 0, got -1");
  EXPECT_EQ(error_of(rules(), json{{"seed", 18446744073709551615ull}}),
            "s.yaml: base.seed (line 7): must be an integer >= 0, got 18446744073709551615");
  EXPECT_EQ(error_of(rules(), json{{"optim", {{"lr", std::nan("")}}}}),
            "s.yaml: base.optim.lr (line 7): must be a finite number >= 0, got nan");
  EXPECT_EQ(error_of(rules(), json{{"optim", {{"lr", INFINITY}}}}),
            "s.yaml: base.optim.lr (line 7): must be a finite number >= 0, got inf");
  EXPECT_EQ(error_of(rules(), json{{"optim", {{"lr", "1e-3x"}}}}),
            "s.yaml: base.optim.lr (line 7): must be a finite number >= 0, got \"1e-3x\"");
  EXPECT_EQ(error_of(rules(), json{{"optim", {{"pct_start", 1.0}}}}),
            "s.yaml: base.optim.pct_start (line 7): must be a number in [0, 1), got 1");
  EXPECT_EQ(error_of(rules(), json{{"force_alpha", -INFINITY}}),
            "s.yaml: base.force_alpha (line 7): must be a finite number, got -inf");
  EXPECT_EQ(error_of(rules(), json{{"tiny", "yes"}}), "s.yaml: base.tiny (line 7): must be true or false, got \"yes\"");
  EXPECT_EQ(error_of(rules(), json{{"mode", "tt"}}), "s.yaml: base.mode (line 7): must be one of: base, ttt, got \"tt\"");
  EXPECT_EQ(error_of(rules(), json{{"distances", json::array({1, 2, 3, 4, 5})}}),
            "s.yaml: base.distances (line 7): must be a list of at most 4 integers, each in 1..4096, got [1,2,3,4,5]");
  EXPECT_EQ(error_of(rules(), json{{"distances", json::array({0})}}),
            "s.yaml: base.distances (line 7): must be a list of at most 4 integers, each in 1..4096, got [0]");
}

TEST(ConfigRules, NullOnlyWhereTheKeyGivesItAMeaning) {
  EXPECT_EQ(error_of(rules(), json{{"vocab", nullptr}}),
            "s.yaml: base.vocab (line 7): null is not a value here (leave the key out for its default)");
  EXPECT_EQ(error_of(rules(), json{{"force_alpha", nullptr}}), "");
}

TEST(ConfigRules, UnknownKeysAndMisplacedMappings) {
  EXPECT_EQ(error_of(rules(), json{{"vocabb", 3}}), "s.yaml: base.vocabb (line 7): unknown key (did you mean 'vocab'?)");
  EXPECT_EQ(error_of(rules(), json{{"optim", {{"lrr", 3}}}}),
            "s.yaml: base.optim.lrr (line 7): unknown key (did you mean 'optim.lr'?)");
  EXPECT_EQ(error_of(rules(), json{{"zzzzzzzz", 3}}), "s.yaml: base.zzzzzzzz (line 7): unknown key");
  EXPECT_EQ(error_of(rules(), json{{"optim", 3}}), "s.yaml: base.optim (line 7): must be a mapping, got 3");
}

TEST(ConfigRules, SectionsAndRelationsRunTheirOwnChecks) {
  int seen = 0;
  ConfigRules r = ConfigRules()
                      .integer("a", 0, 10)
                      .integer("b", 0, 10)
                      .section("sec",
                               [&](const json& v, const std::string& key, const std::string& file, const Locate& w) {
                                 ++seen;
                                 if (!v.is_object()) throw Error(file, w(key), "not a section");
                               })
                      .relation([](const json& cfg, const std::string& file, const Locate& w) {
                        if (cfg.value("a", 0) + cfg.value("b", 0) > 10) throw Error(file, w("b"), "a + b > 10");
                      });
  EXPECT_EQ(error_of(r, json{{"sec", {{"anything", 1}}}, {"a", 5}, {"b", 5}}), "");
  EXPECT_EQ(seen, 1);
  EXPECT_EQ(error_of(r, json{{"sec", 1}}), "s.yaml: base.sec (line 7): not a section");
  EXPECT_EQ(error_of(r, json{{"a", 6}, {"b", 5}}), "s.yaml: base.b (line 7): a + b > 10");
  // A relation runs only after every key passed: a wrong type never reaches it.
  EXPECT_EQ(error_of(r, json{{"a", "x"}, {"b", 5}}), "s.yaml: base.a (line 7): must be an integer in 0..10, got \"x\"");
  EXPECT_TRUE(ConfigRules().include(r).declares("sec"));
  EXPECT_EQ(ConfigRules().include(r).keys(), (std::vector<std::string>{"a", "b", "sec"}));
}

TEST(ConfigRules, RangeTexts) {
  EXPECT_EQ(integer_range_text(1, 100000), "an integer in 1..100000");
  EXPECT_EQ(integer_range_text(0, std::numeric_limits<int64_t>::max()), "an integer >= 0");
  EXPECT_EQ(number_range_text(0, std::numeric_limits<double>::max(), true), "a finite number > 0");
  EXPECT_EQ(number_range_text(-std::numeric_limits<double>::max(), std::numeric_limits<double>::max()),
            "a finite number");
  EXPECT_EQ(number_range_text(0, 1), "a number in [0, 1]");
  EXPECT_EQ(json_brief(json(std::nan(""))), "nan");
}

}  // namespace
}  // namespace mtt::io
