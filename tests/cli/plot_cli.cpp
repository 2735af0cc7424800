// ttt-plot end to end: each subcommand on the fixtures, output formats by extension, exit
// statuses, one-line errors naming the file and line/key, and no file (partial or temporary)
// left behind by a failure.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "plot/svg_probe.h"
#include "test_util.h"

namespace {

using mtt::test::app_path;
using mtt::test::fixtures_dir;
using mtt::test::run_command;
using mtt::test::TempDir;
namespace fs = std::filesystem;

std::string fx(const std::string& rel) { return (fixtures_dir() / "plot" / rel).string(); }
std::string plot(const std::string& args) { return app_path("ttt-plot").string() + " " + args; }
std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}
std::size_t entries(const fs::path& d) {
  std::size_t n = 0;
  for (auto& e : fs::directory_iterator(d)) n += e.exists();
  return n;
}

class PlotCli : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!fs::exists(app_path("ttt-plot"))) GTEST_SKIP() << "ttt-plot not built";
  }
};

TEST_F(PlotCli, EverySubcommandWritesItsFigure) {
  TempDir d;
  struct Case {
    std::string args, file, magic, summary;
  } cases[] = {
      {"inner-loop " + fx("run"), "il.svg", "<?xml", "(svg, 2 panels, 6 series)"},
      {"inner-loop " + fx("run/inner_loop.json") + " --per-head --heads 1 --smooth 4", "ilh.png", "\x89PNG", "(png, 2 panels, 6 series)"},
      {"gating " + fx("run"), "g.pdf", "%PDF-", "(pdf, 4 panels, 12 series)"},
      {"gating " + fx("run/checkpoints/checkpoint_000100") + " " + fx("run/checkpoints/checkpoint_000400/consolidated/lora.safetensors") +
           " --value tanh --layers 29,31",
       "g2.svg", "<?xml", "(svg, 2 panels, 4 series)"},
      {"sweep " + fx("sweep") + " --x mini_batch_size --y final_loss --hue recon_target --logx", "s.png", "\x89PNG",
       "(png, 1 panel, 2 series)"},
      {"sweep " + fx("sweep/summary.csv") + " --x recon_target --y tokens_per_s --logy", "sb.svg", "<?xml", "(svg, 1 panel, 1 series)"},
      {"metrics " + fx("run") + " --y loss,wps --logy", "m.svg", "<?xml", "(svg, 2 panels, 3 series)"},
  };
  for (const auto& c : cases) {
    const auto out = d / c.file;
    const auto r = run_command(plot(c.args + " -o " + out.string()));
    ASSERT_EQ(r.status, 0) << c.args << "\n" << r.err;
    EXPECT_NE(r.out.find("wrote " + out.string() + " " + c.summary), std::string::npos) << r.out;
    EXPECT_EQ(slurp(out).rfind(c.magic, 0), 0u) << c.file;
  }
  // The gating SVG names the frozen gates; the per-head PNG exists at full size.
  const mtt::plot::test::SvgProbe g2(slurp(d / "g2.svg"));
  EXPECT_EQ(g2.count_text("layer 31 (frozen)"), 1);  // backward panel: the gate never moved
  EXPECT_EQ(g2.count_text("layer 31"), 1);           // forward panel: it did
  EXPECT_EQ(entries(d.path()), std::size(cases));
}

TEST_F(PlotCli, DefaultOutputNameInTheWorkingDir) {
  TempDir d;
  const auto r = run_command("cd " + d.path().string() + " && " + plot("metrics " + fx("run")));
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_TRUE(fs::exists(d / "metrics.png"));
}

TEST_F(PlotCli, MalformedInputsFailCleanly) {
  TempDir d;
  const auto bad = d / "in";
  fs::create_directories(bad);
  std::ofstream(bad / "inner_loop.json") << "{\"format\":\"moshi-ttt/inner-loop/1\",\n\"layers\":[{\"layer\":1,\n";
  std::ofstream(bad / "empty.jsonl") << "";
  std::ofstream(bad / "ragged.csv") << "id,a,m\np0,1,2\np1,3\n";
  std::ofstream(bad / "plain.safetensors") << "garbage";
  const auto outdir = d / "out";
  fs::create_directories(outdir);
  struct Case {
    std::string args;
    int status;
    std::vector<std::string> needles;
  } cases[] = {
      {"inner-loop " + bad.string(), 2, {(bad / "inner_loop.json").string(), "line 3", "invalid JSON"}},
      {"metrics " + (bad / "empty.jsonl").string(), 2, {"empty.jsonl", "no records"}},
      {"sweep " + (bad / "ragged.csv").string() + " --x a --y m", 2, {"ragged.csv", "line 3", "2 fields"}},
      {"sweep " + fx("sweep") + " --x nope --y final_loss", 64, {"summary.json", "--x nope", "no such column"}},
      {"gating " + (bad / "plain.safetensors").string(), 2, {"plain.safetensors"}},
      {"gating " + fx("run/metrics.train.jsonl"), 2, {"metrics.train.jsonl"}},
      {"inner-loop " + fx("run") + " --layers 3", 64, {"layer 3", "not in the log"}},
  };
  for (const auto& c : cases) {
    const auto r = run_command(plot(c.args + " -o " + (outdir / "x.png").string()));
    EXPECT_EQ(r.status, c.status) << c.args << "\n" << r.err;
    EXPECT_EQ(r.err.rfind("ttt-plot: ", 0), 0u) << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;  // one line
    for (const auto& n : c.needles) EXPECT_NE(r.err.find(n), std::string::npos) << n << " not in " << r.err;
    EXPECT_EQ(entries(outdir), 0u) << c.args;  // neither the figure nor a temporary
  }
}

TEST_F(PlotCli, UsageErrors) {
  TempDir d;
  EXPECT_EQ(run_command(plot("")).status, 64);
  EXPECT_EQ(run_command(plot("sweep " + fx("sweep") + " --y final_loss")).status, 64);  // --x missing
  const auto r = run_command(plot("metrics " + fx("run") + " -o " + (d / "m.jpg").string()));
  EXPECT_EQ(r.status, 64);
  EXPECT_NE(r.err.find("unknown output format '.jpg'"), std::string::npos) << r.err;
  EXPECT_EQ(entries(d.path()), 0u);
  EXPECT_EQ(run_command(plot("--help")).status, 0);
}

TEST_F(PlotCli, StylePrintsAndAppliesOverrides) {
  TempDir d;
  const auto r = run_command(plot("style"));
  ASSERT_EQ(r.status, 0);
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["palette"][0], "#0072B2");
  std::ofstream(d / "s.json") << R"({"palette":["#123456"]})";
  const auto out = d / "m.svg";
  ASSERT_EQ(run_command(plot("metrics " + fx("run") + " --y lr --style " + (d / "s.json").string() + " -o " + out.string())).status, 0);
  EXPECT_NE(slurp(out).find("stroke=\"#123456\""), std::string::npos);
  std::ofstream(d / "bad.json") << R"({"palette":"blue"})";
  const auto b = run_command(plot("metrics " + fx("run") + " --style " + (d / "bad.json").string() + " -o " + (d / "n.png").string()));
  EXPECT_EQ(b.status, 2);
  EXPECT_NE(b.err.find("bad.json: palette"), std::string::npos) << b.err;
  EXPECT_FALSE(fs::exists(d / "n.png"));
}

}  // namespace
