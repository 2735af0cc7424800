// io::load_yaml_strict: aliases are charged what they expand to before any node is built, so a
// cycle or a bomb is one error naming the line, in microseconds and without memory growth.
#include "io/strict_yaml.h"

#include <gtest/gtest.h>
#include <yaml-cpp/yaml.h>

#include <chrono>
#include <string>

#include "core/error.h"

namespace mtt::io {
namespace {

std::string error_of(const std::string& text, const YamlLimits& l = {}) {
  try {
    load_yaml_strict(text, "t.yaml", l);
  } catch (const Error& e) {
    EXPECT_EQ(e.exit_status(), kExitInput);
    return e.what();
  }
  return "";
}

// "a0: &a0 [x]*fan" then each level a list of `fan` aliases of the previous: fan^(levels+1) values.
std::string bomb(int levels, int fan) {
  std::string t = "a0: &a0 [";
  for (int i = 0; i < fan; ++i) t += i ? ",1" : "1";
  t += "]\n";
  for (int l = 1; l <= levels; ++l) {
    t += "a" + std::to_string(l) + ": &a" + std::to_string(l) + " [";
    for (int i = 0; i < fan; ++i) t += (i ? ",*a" : "*a") + std::to_string(l - 1);
    t += "]\n";
  }
  return t;
}

TEST(StrictYaml, AliasInsideItsOwnAnchorIsACycleNamingTheLine) {
  EXPECT_EQ(error_of("name: x\nbase: &x {seed: 0, more: *x}\n"),
            "t.yaml: line 2: an alias inside its own anchor (*x, a cycle)");
  EXPECT_EQ(error_of("a: &x [*x]\n"), "t.yaml: line 1: an alias inside its own anchor (*x, a cycle)");
  // Deeper inside its own anchor.
  EXPECT_NE(error_of("a: &x\n  b:\n    - [1, *x]\n").find("line 3: an alias inside its own anchor (*x"),
            std::string::npos);
}

TEST(StrictYaml, AliasBombIsRefusedBeforeAnyNodeIsBuilt) {
  // 10^10 values once expanded (the 3 GB of RSS); refused by the budget in well under a second.
  const auto t0 = std::chrono::steady_clock::now();
  const std::string e = error_of(bomb(9, 10));
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_NE(e.find("values once aliases are expanded (alias *a"), std::string::npos) << e;
  EXPECT_NE(e.find("line "), std::string::npos) << e;
  EXPECT_LT(s, 5.0);  // a sanity bound (the scan is linear in the text), not a timing test
}

TEST(StrictYaml, AliasesWithinTheBudgetLoadAndExpand) {
  // 10 + 100 + 1000 values: under a budget of 2000 values (with the maps), over one of 1000.
  YamlLimits l;
  l.max_values = 2000;
  const YAML::Node n = load_yaml_strict(bomb(2, 10), "t.yaml", l);
  ASSERT_TRUE(n["a2"].IsSequence());
  EXPECT_EQ(n["a2"].size(), 10u);
  EXPECT_EQ(n["a2"][9][9][9].as<int>(), 1);
  l.max_values = 1000;
  EXPECT_NE(error_of(bomb(2, 10), l).find("more than 1000 values"), std::string::npos);
}

TEST(StrictYaml, DepthCountsExpandedAliases) {
  YamlLimits l;
  l.max_depth = 4;
  EXPECT_NO_THROW(load_yaml_strict("a: &a [[1]]\nb: [*a]\n", "t.yaml", l));  // b[0][0][0]: level 3
  EXPECT_NE(error_of("a: &a [[[1]]]\nb: [[*a]]\n", l).find("nested deeper than 4 levels once alias *a is expanded"),
            std::string::npos);
  EXPECT_NE(error_of(std::string(50, '[') + std::string(50, ']'), l).find("nested deeper than 4 levels"),
            std::string::npos);
}

TEST(StrictYaml, OtherMalformedTexts) {
  EXPECT_NE(error_of("a: *nowhere\n").find("t.yaml: line 1: YAML syntax error"), std::string::npos);
  EXPECT_NE(error_of("a: [1, 2\n").find("YAML syntax error"), std::string::npos);
  EXPECT_NE(error_of("a: 1\n---\nb: 2\n").find("more than one YAML document"), std::string::npos);
  EXPECT_NE(error_of(std::string("a: 1\nb: \0\n", 10)).find("line 2: NUL byte"), std::string::npos);
  YamlLimits l;
  l.max_bytes = 8;
  EXPECT_NE(error_of("a: 123456789\n", l).find("YAML text of 13 bytes (limit 8)"), std::string::npos);
  EXPECT_TRUE(load_yaml_strict("", "t.yaml").IsNull());
}

TEST(StrictYaml, LinesOfEveryKeyAndElement) {
  const YAML::Node n = load_yaml_strict("base:\n  ttt: {lr: 1}\ngrid:\n  seed:\n    - 0\n    - 1\n", "t.yaml");
  LineMap lines;
  collect_yaml_lines(n, "", lines);
  EXPECT_EQ(lines.at("base"), 1);
  EXPECT_EQ(lines.at("base.ttt.lr"), 2);
  EXPECT_EQ(lines.at("grid.seed"), 4);
  EXPECT_EQ(lines.at("grid.seed[1]"), 6);
  EXPECT_EQ(yaml_where("ttt.lr", n["base"]["ttt"]["lr"]), "ttt.lr (line 2)");
  EXPECT_EQ(yaml_where("ttt.lr", YAML::Node(1.0)), "ttt.lr");  // built in code: no line
}

}  // namespace
}  // namespace mtt::io
