// ttt-inspect end to end: the built app on fixtures, its --json parsed with nlohmann, exit
// statuses 0 / 1 / 2 / 64 (docs/conventions.md). Fixtures are written here byte by byte in the
// safetensors format (independently of lib/io's writer) or made by `ttt-inspect --tiny --save`.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>

#include "test_util.h"

using nlohmann::json;
using mtt::test::app_path;
using mtt::test::run_command;
using mtt::test::TempDir;

namespace {

std::string inspect() { return app_path("ttt-inspect").string(); }

// Minimal F32 safetensors writer: header JSON (names sorted, offsets contiguous), 8-aligned.
void write_f32(const std::string& path, const std::map<std::string, std::vector<float>>& tensors) {
  json h = json::object();
  uint64_t off = 0;
  for (const auto& [name, v] : tensors) {
    h[name] = {{"dtype", "F32"}, {"shape", {v.size()}}, {"data_offsets", {off, off + 4 * v.size()}}};
    off += 4 * v.size();
  }
  std::string hs = h.dump();
  while (hs.size() % 8) hs.push_back(' ');
  std::ofstream f(path, std::ios::binary);
  const uint64_t n = hs.size();
  f.write(reinterpret_cast<const char*>(&n), 8);
  f.write(hs.data(), static_cast<std::streamsize>(hs.size()));
  for (const auto& [_, v] : tensors) f.write(reinterpret_cast<const char*>(v.data()), static_cast<std::streamsize>(4 * v.size()));
}

float bf16_round(float x) {  // round to nearest even to bf16, back to f32
  uint32_t b;
  std::memcpy(&b, &x, 4);
  b = (b + 0x7FFF + ((b >> 16) & 1)) & 0xFFFF0000u;
  std::memcpy(&x, &b, 4);
  return x;
}

json run_json(const std::string& args, int expect_status) {
  const auto r = run_command(inspect() + " " + args + " --json");
  EXPECT_EQ(r.status, expect_status) << args << "\n" << r.err;
  return json::parse(r.out);
}

}  // namespace

TEST(InspectCli, TinyBuiltInCheckpointIsCreatedAndAudited) {
  if (!std::filesystem::exists(inspect())) GTEST_SKIP() << "ttt-inspect not built";
  TempDir dir;
  const auto saved = (dir / "tiny.safetensors").string();
  const json j = run_json("--tiny --save " + saved, 1);
  EXPECT_EQ(j["schema_version"], 1);
  EXPECT_EQ(j["config"]["source"], "metadata");
  EXPECT_EQ(j["config"]["values"]["ttt"]["variant"], "fork_hybrid");
  EXPECT_EQ(j["unused"]["count"], 10);
  EXPECT_EQ(j["inventory"]["missing"], 0);
  EXPECT_EQ(j["frozen"]["count"], 0);
  EXPECT_EQ(j["exit_status"], 1);
  ASSERT_TRUE(std::filesystem::exists(saved));
  // Auditing the saved file gives the same report, and the table names the findings.
  EXPECT_EQ(run_json(saved, 1)["unused"], j["unused"]);
  const auto t = run_command(inspect() + " " + saved);
  EXPECT_EQ(t.status, 1);
  EXPECT_NE(t.out.find("2. Unused parameters: 10 tensors"), std::string::npos) << t.out;
  EXPECT_NE(t.out.find("backward_ssm_gating.gating_alpha"), std::string::npos);
  // Identical base: everything unchanged, nothing moved.
  const json b = run_json(saved + " --base " + saved, 1);
  EXPECT_EQ(b["frozen"]["base"]["moved"], 0);
  EXPECT_EQ(b["frozen"]["base"]["unchanged"], b["inventory"]["tensors"]);
  // No TTT: a clean model, exit 0.
  EXPECT_EQ(run_json("--tiny --variant none", 0)["problems"].size(), 0u);
}

TEST(InspectCli, InplaceZeroInitIsADeadGradientPath) {
  if (!std::filesystem::exists(inspect())) GTEST_SKIP() << "ttt-inspect not built";
  const json j = run_json("--tiny --variant inplace-zero", 1);
  EXPECT_EQ(j["dead_paths"]["count"], 2);
  for (const auto& p : j["dead_paths"]["paths"]) {
    EXPECT_EQ(p["status"], "dead");
    EXPECT_EQ(p["factors"][0]["zero"], true);
    EXPECT_EQ(p["factors"][1]["zero"], true);
  }
  EXPECT_EQ(run_json("--tiny --variant inplace", 1)["dead_paths"]["count"], 0);
}

TEST(InspectCli, Seed000GateFiguresFromA7bGateFile) {
  if (!std::filesystem::exists(inspect())) GTEST_SKIP() << "ttt-inspect not built";
  TempDir dir;
  std::map<std::string, std::vector<float>> t;
  for (int l : {29, 30, 31}) {
    const std::string p = "transformer.layers." + std::to_string(l) + ".seq_modeling_block.";
    std::vector<float> fwd(4096), bwd(4096, bf16_round(0.3f));
    for (int i = 0; i < 4096; ++i) fwd[i] = 0.05f + 0.1f * std::sin(0.1f * i + l);
    t[p + "forward_ssm_gating.gating_alpha"] = fwd;
    t[p + "backward_ssm_gating.gating_alpha"] = bwd;
  }
  const auto path = (dir / "gates.safetensors").string();
  write_f32(path, t);
  const json j = run_json(path, 1);
  EXPECT_EQ(j["unused"]["count"], 3);
  EXPECT_EQ(j["unused"]["params"], 12288);
  EXPECT_EQ(j["unused"]["bytes"], 49152);
  EXPECT_EQ(j["frozen"]["count"], 3);
  for (const auto& e : j["frozen"]["entries"]) {
    EXPECT_EQ(e["init_label"], "bf16(0.3) = 0.30078125");
    EXPECT_EQ(e["value"], 0.30078125);
  }
  ASSERT_EQ(j["gating"].size(), 6u);
  for (const auto& g : j["gating"])
    if (g["direction"] == "backward") {
      EXPECT_EQ(g["alpha"]["std"], 0.0);
      EXPECT_NEAR(g["multiplier_percent"]["mean"].get<double>(), 100 * std::tanh(0.30078125), 1e-9);
    }
  // --layers restricts the per-layer findings.
  const json one = run_json(path + " --layers 30", 1);
  EXPECT_EQ(one["unused"]["count"], 1);
  EXPECT_EQ(one["gating"].size(), 2u);
}

TEST(InspectCli, UsageAndInputErrors) {
  if (!std::filesystem::exists(inspect())) GTEST_SKIP() << "ttt-inspect not built";
  EXPECT_EQ(run_command(inspect()).status, 64);
  EXPECT_EQ(run_command(inspect() + " --tiny --layers 1,x").status, 64);
  EXPECT_EQ(run_command(inspect() + " --bogus").status, 64);
  TempDir dir;
  const auto missing = (dir / "nope.safetensors").string();
  const auto r = run_command(inspect() + " " + missing);
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.err.find("nope.safetensors"), std::string::npos);
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  const auto rj = run_command(inspect() + " " + missing + " --json");
  EXPECT_EQ(rj.status, 2);
  EXPECT_EQ(json::parse(rj.out)["exit_status"], 2);
}
