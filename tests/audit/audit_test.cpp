// The audit end to end on generated fixtures: seed 000 (fork layout, forward gates trained,
// backward gates frozen at bf16(0.3)), seed 003 (In-Place TTT with both target-generator factors
// zero), --base comparison, NaN/Inf, --layers, config inference.
#include <gtest/gtest.h>

#include <cmath>
#include <map>

#include "audit/audit.h"
#include "audit/findings.h"
#include "audit/infer_config.h"
#include "audit/render.h"
#include "audit_fixtures.h"
#include "core/error.h"
#include "io/checkpoint.h"
#include "test_util.h"

using namespace mtt;
using namespace mtt::audit;
using mtt::audit::test::Fixture;
using mtt::audit::test::wiggle;
namespace m = mtt::moshi;

namespace {

// Tiny fork-layout model with TTT on the last three layers (29, 30, 31 of the seed at tiny size).
m::SchemaConfig fork_config() {
  auto c = m::SchemaConfig::tiny(m::TTTVariant::fork_hybrid);
  c.num_layers = 6;
  c.ttt.layers = {3, 4, 5};
  c.ttt.initial_gating_alpha = 0.3;
  return c;
}

std::string gate(int l, const char* dir) {
  return "transformer.layers." + std::to_string(l) + ".seq_modeling_block." + dir + "_ssm_gating.gating_alpha";
}

Report audit_file(const std::string& path, const std::string& base = "", const std::string& layers = "") {
  AuditOptions o;
  o.checkpoint = path;
  o.base = base;
  o.layers = layers;
  return run_audit(o);
}

}  // namespace

TEST(Audit, Seed000ForkLayoutUnusedAndFrozenExactCounts) {
  mtt::test::TempDir dir;
  const auto c = fork_config();
  Fixture f(c);
  for (int l : c.ttt.layers) f.set(gate(l, "forward"), [&](int64_t i) { return wiggle(i + l, 0.1, 0.3); });
  const auto path = (dir / "consolidated.safetensors").string();
  f.write(path);

  const Report r = audit_file(path);
  EXPECT_EQ(r.inventory.config_source, "shapes");
  EXPECT_EQ(r.inventory.config.ttt.variant, m::TTTVariant::fork_hybrid);
  EXPECT_EQ(r.inventory.config.ttt.layers, (std::vector<int>{3, 4, 5}));
  EXPECT_EQ(r.inventory.missing, 0u);
  EXPECT_TRUE(r.inventory.undeclared.empty());
  EXPECT_TRUE(r.inventory.shape_mismatches.empty());
  const uint64_t D = 64;
  // Unused: per layer backward gate [D], wo.weight [D,D], wo.bias, post_norm.weight, post_norm.bias [D].
  EXPECT_EQ(r.unused.entries.size(), 15u);
  EXPECT_EQ(r.unused.params, 3 * (D + D * D + 3 * D));
  EXPECT_EQ(r.unused.bytes, 2 * r.unused.params);  // bf16
  EXPECT_NEAR(r.unused.share_percent, 100.0 * r.unused.params / r.inventory.params, 1e-9);
  // Frozen: exactly the three backward gates, at bf16(0.3) = 0.30078125 with std 0.
  ASSERT_EQ(r.frozen.entries.size(), 3u);
  for (const auto& e : r.frozen.entries) {
    EXPECT_NE(e.name.find("backward_ssm_gating"), std::string::npos) << e.name;
    EXPECT_EQ(e.value, 0.30078125);
    EXPECT_EQ(e.init_label, "bf16(0.3) = 0.30078125");
    EXPECT_EQ(e.params, D);
    EXPECT_EQ(e.varying_siblings, 3u);
  }
  EXPECT_EQ(r.frozen.params, 3 * D);
  // Gating: forward and backward per layer; backward std 0 and multiplier 100*tanh(0.30078125).
  ASSERT_EQ(r.gating.rows.size(), 6u);
  for (const auto& g : r.gating.rows) {
    if (g.direction == "backward") {
      EXPECT_FALSE(g.consumed);
      EXPECT_EQ(g.alpha.std, 0.0);
      EXPECT_DOUBLE_EQ(g.alpha.mean, 0.30078125);
      EXPECT_NEAR(g.multiplier_pct.mean, 100.0 * std::tanh(0.30078125), 1e-12);
    } else {
      EXPECT_TRUE(g.consumed);
      EXPECT_GT(g.alpha.std, 0.05);
    }
  }
  EXPECT_EQ(r.dead_paths.dead, 0u);
  EXPECT_EQ(r.exit_status(), 1);
  const std::string table = render_table(r);
  EXPECT_NE(table.find("at init bf16(0.3) = 0.30078125"), std::string::npos);
  EXPECT_NE(table.find("2. Unused parameters: 15 tensors"), std::string::npos);
}

TEST(Audit, Seed000FigureOnTheSevenBGateSubset) {
  // Only the six gate tensors of layers 29-31 at D = 4096, stored f32 as the seed's run did:
  // 12,288 unused parameters, 49,152 bytes ("~49 KB").
  mtt::test::TempDir dir;
  auto c = m::SchemaConfig::moshiko_7b();
  c.ttt.variant = m::TTTVariant::fork_hybrid;
  c.ttt.layers = {29, 30, 31};
  c.ttt.ttt_heads = 32;
  c.ttt.initial_gating_alpha = 0.3;
  std::vector<std::vector<float>> data;
  std::vector<io::TensorToWrite> w;
  for (int l : c.ttt.layers)
    for (const char* dir_name : {"forward", "backward"}) {
      std::vector<float> v(4096);
      for (int64_t i = 0; i < 4096; ++i)
        v[i] = std::string(dir_name) == "forward" ? static_cast<float>(wiggle(i, 0.05, 0.3))
                                                  : bf16_to_float(float_to_bf16(0.3f));
      data.push_back(std::move(v));
      w.push_back({gate(l, dir_name), DType::F32, {4096}, data.back().data()});
    }
  const auto path = (dir / "gates.safetensors").string();
  io::write_safetensors(path, w);
  const Report r = audit_file(path);
  EXPECT_TRUE(r.inventory.partial);
  EXPECT_EQ(r.inventory.config.dim, 4096);
  EXPECT_EQ(r.unused.entries.size(), 3u);
  EXPECT_EQ(r.unused.params, 12'288u);
  EXPECT_EQ(r.unused.bytes, 49'152u);
  EXPECT_EQ(r.frozen.entries.size(), 3u);
  EXPECT_EQ(r.frozen.params, 12'288u);
  EXPECT_EQ(r.frozen.entries[0].init_label, "bf16(0.3) = 0.30078125");
  EXPECT_EQ(r.exit_status(), 1);
}

TEST(Audit, InplaceDeadGradientPathBothFactorsZero) {
  mtt::test::TempDir dir;
  auto c = m::SchemaConfig::tiny(m::TTTVariant::inplace);  // TTT on layers 1 and 3
  c.ttt.inplace_init = m::InplaceInit::zero;
  Fixture f(c);
  const auto path = (dir / "zero.safetensors").string();
  f.write(path);
  Report r = audit_file(path);
  EXPECT_EQ(r.inventory.config.ttt.variant, m::TTTVariant::inplace);
  EXPECT_EQ(r.dead_paths.dead, 2u);
  for (const auto& d : r.dead_paths.paths) {
    EXPECT_EQ(d.status, "dead");
    EXPECT_EQ(d.factor_zero, (std::vector<bool>{true, true}));
    EXPECT_NE(d.remedy.find("N(0, 1e-4)"), std::string::npos);
  }
  // linear_out and w_down_pretrained are never read by the TTT forward.
  EXPECT_EQ(r.unused.entries.size(), 4u);
  EXPECT_EQ(r.exit_status(), 1);

  // One factor non-zero (official init: W_target diagonal, conv zero): the conv still gets a
  // gradient, so the path is not dead.
  const std::string wt = "transformer.layers.1.gating.target_generator.W_target.weight";
  f.set(wt, [](int64_t i) { return i % 65 == 0 ? 0.02 : 0.0; });
  f.write(path);
  r = audit_file(path);
  EXPECT_EQ(r.dead_paths.dead, 1u);
  for (const auto& d : r.dead_paths.paths)
    EXPECT_EQ(d.status, d.name == "transformer.layers.1.gating.target_generator" ? "one_factor_zero" : "dead");
  // Both layers with the port's N(0, 1e-2) init: live.
  Fixture live(m::SchemaConfig::tiny(m::TTTVariant::inplace));
  live.write(path);
  r = audit_file(path);
  EXPECT_EQ(r.dead_paths.dead, 0u);
  ASSERT_EQ(r.dead_paths.paths.size(), 2u);
  EXPECT_EQ(r.dead_paths.paths[0].status, "live");
}

TEST(Audit, InplaceLoraWrappedWTargetDeadPath) {
  // Seed 003's names: W_target.frozen_W.weight with lora_A/lora_B; the effective W_target is
  // frozen_W + s * B @ A, zero when frozen_W = 0 and B = 0 (LoRA's own init).
  mtt::test::TempDir dir;
  auto c = m::SchemaConfig::tiny(m::TTTVariant::inplace);
  c.ttt.lora_rank = 4;
  c.ttt.inplace_init = m::InplaceInit::zero;
  Fixture f(c);
  const auto path = (dir / "lora.safetensors").string();
  f.write(path);
  Report r = audit_file(path);
  EXPECT_EQ(r.inventory.config.ttt.lora_rank, 4);
  EXPECT_EQ(r.inventory.missing, 0u);
  EXPECT_TRUE(r.inventory.undeclared.empty());
  uint64_t tg_dead = 0;
  for (const auto& d : r.dead_paths.paths) tg_dead += d.status == "dead" && d.name.find("target_generator") != std::string::npos;
  EXPECT_EQ(tg_dead, 2u);
  // A trained LoRA B (and A) makes W_target non-zero: not dead any more for that layer.
  f.set("transformer.layers.3.gating.target_generator.W_target.lora_B.weight", [](int64_t i) { return wiggle(i, 0, 1e-3); });
  f.write(path);
  r = audit_file(path);
  tg_dead = 0;
  for (const auto& d : r.dead_paths.paths) tg_dead += d.status == "dead" && d.name.find("target_generator") != std::string::npos;
  EXPECT_EQ(tg_dead, 1u);
}

TEST(Audit, BaseComparisonUnchangedAndRelativeChange) {
  mtt::test::TempDir dir;
  const auto c = fork_config();
  Fixture base(c, DType::F32);
  const auto base_path = (dir / "init.safetensors").string();
  base.write(base_path);
  Fixture cur = base;
  for (int l : c.ttt.layers) cur.set(gate(l, "forward"), [&](int64_t i) { return wiggle(i, 0.3, 0.1); });
  const std::string w1 = "transformer.layers.4.seq_modeling_block.ttt_layer.ttt.W1";
  // W1 scaled by 1.5: ||dW|| / ||W|| = 0.5 exactly (up to f32 rounding of the products).
  auto& t = cur.at(w1);
  std::vector<float> orig(t.bytes.size() / 4);
  std::memcpy(orig.data(), t.bytes.data(), t.bytes.size());
  cur.set(w1, [&](int64_t i) { return 1.5 * orig[i]; });
  const auto path = (dir / "trained.safetensors").string();
  cur.write(path);

  const Report r = audit_file(path, base_path);
  ASSERT_TRUE(r.frozen.with_base);
  EXPECT_EQ(r.frozen.moved, 4u);
  EXPECT_EQ(r.frozen.unchanged, cur.tensors.size() - 4);
  EXPECT_EQ(r.frozen.not_in_base, 0u);
  // Backward gates unchanged while the forward gates of the same module moved; so are the other
  // W1/W2/b1/b2 of ttt.inner (W1 of layer 4 moved).
  uint64_t gate_problems = 0, inner_problems = 0;
  for (const auto& e : r.frozen.base_entries) {
    if (e.name == w1) EXPECT_NEAR(e.rel_change, 0.5, 1e-6);
    if (e.problem && e.module == "ttt.gating") ++gate_problems;
    if (e.problem && e.module == "ttt.inner") ++inner_problems;
  }
  EXPECT_EQ(gate_problems, 0u);  // backward gates are unused: reported under 2., not as base problems
  EXPECT_EQ(inner_problems, 11u);  // 3 layers x (W1, b1, W2, b2) - the moved W1
  EXPECT_EQ(r.exit_status(), 1);
}

TEST(Audit, NonFiniteValuesAreCountedAndFlagged) {
  mtt::test::TempDir dir;
  Fixture f(m::SchemaConfig::tiny(m::TTTVariant::none), DType::F32);
  f.set("text_linear.weight", [](int64_t i) { return i == 3 ? NAN : i == 5 ? INFINITY : i == 6 ? -INFINITY : 0.25; });
  const auto path = (dir / "nan.safetensors").string();
  f.write(path);
  const Report r = audit_file(path);
  EXPECT_EQ(r.inventory.nan, 1u);
  EXPECT_EQ(r.inventory.inf, 2u);
  EXPECT_EQ(r.inventory.nonfinite_tensors, (std::vector<std::string>{"text_linear.weight"}));
  EXPECT_EQ(r.exit_status(), 1);
  ASSERT_EQ(r.problems.size(), 1u);
  EXPECT_NE(r.problems[0].find("1 NaN and 2 Inf"), std::string::npos);
  EXPECT_NE(r.problems[0].find("text_linear.weight (1 NaN, 2 Inf, first at flat index 3)"), std::string::npos)
      << r.problems[0];
  // Located: per tensor, counts and the first flat index (and its position in the shape).
  ASSERT_EQ(r.inventory.nonfinite.size(), 1u);
  const auto& nf = r.inventory.nonfinite[0];
  EXPECT_EQ(nf.name, "text_linear.weight");
  EXPECT_EQ(nf.nan, 1u);
  EXPECT_EQ(nf.inf, 2u);
  EXPECT_EQ(nf.first_index, 3);
  EXPECT_EQ(nf.first_nan, 3);
  EXPECT_EQ(nf.first_inf, 5);
  const auto shape = io::SafetensorsFile::open(path)->view("text_linear.weight").shape();
  ASSERT_EQ(shape.size(), 2u);
  EXPECT_EQ(nf.first_position, (std::vector<int64_t>{3 / shape[1], 3 % shape[1]}));
  const auto j = to_json(r);
  ASSERT_EQ(j["inventory"]["nonfinite"].size(), 1u);
  EXPECT_EQ(j["inventory"]["nonfinite"][0]["name"], "text_linear.weight");
  EXPECT_EQ(j["inventory"]["nonfinite"][0]["first_index"], 3);
  EXPECT_EQ(j["inventory"]["nonfinite"][0]["first_inf_index"], 5);
  EXPECT_EQ(j["inventory"]["nonfinite"][0]["nan"], 1);
  const std::string table = render_table(r);
  EXPECT_NE(table.find("non-finite values:"), std::string::npos) << table;
  const auto row = table.find("text_linear.weight", table.find("non-finite values:"));
  ASSERT_NE(row, std::string::npos) << table;
  const std::string line = table.substr(row, table.find('\n', row) - row);
  EXPECT_NE(line.find(" 3  [0, 3] (NaN)"), std::string::npos) << line;
}

TEST(Audit, NonFiniteLocatedInEveryTensorHoldingThem) {
  mtt::test::TempDir dir;
  Fixture f(m::SchemaConfig::tiny(m::TTTVariant::none), DType::BF16);
  // One +Inf per tensor at a different place, NaN in one of them far from the start.
  int64_t k = 0;
  std::vector<std::pair<std::string, int64_t>> placed;
  for (auto& t : f.tensors) {
    const int64_t n = static_cast<int64_t>(t.bytes.size() / 2);
    const int64_t at = (k * 37) % n;
    f.set(t.name, [&, at](int64_t i) { return i == at ? INFINITY : 0.5; });
    placed.push_back({t.name, at});
    ++k;
  }
  const auto path = (dir / "inf.safetensors").string();
  f.write(path);
  const Report r = audit_file(path);
  ASSERT_EQ(r.inventory.nonfinite.size(), placed.size());
  std::map<std::string, int64_t> want(placed.begin(), placed.end());
  for (const auto& nf : r.inventory.nonfinite) {
    SCOPED_TRACE(nf.name);
    EXPECT_EQ(nf.inf, 1u);
    EXPECT_EQ(nf.nan, 0u);
    EXPECT_EQ(nf.first_index, want.at(nf.name));
    EXPECT_EQ(nf.first_nan, -1);
  }
  EXPECT_EQ(r.inventory.inf, placed.size());
}

TEST(Audit, CleanCheckpointExitsZeroAndLayerFilter) {
  mtt::test::TempDir dir;
  auto c = fork_config();
  const auto path = (dir / "clean.safetensors").string();
  Fixture(m::SchemaConfig::tiny(m::TTTVariant::none)).write(path);
  EXPECT_EQ(audit_file(path).exit_status(), 0);

  Fixture f(c);
  f.write(path);
  const Report r = audit_file(path, "", "4");
  EXPECT_EQ(r.layer_filter, (std::vector<int>{4}));
  EXPECT_EQ(r.unused.entries.size(), 5u);
  ASSERT_EQ(r.gating.rows.size(), 2u);
  EXPECT_EQ(r.gating.rows[0].layer, 4);
  EXPECT_THROW(audit_file(path, "", "4,x"), mtt::Error);
}

TEST(Audit, TinyBuiltInCheckpointRoundTrip) {
  mtt::test::TempDir dir;
  const auto path = (dir / "tiny.safetensors").string();
  write_tiny_checkpoint(path);
  const Report r = audit_file(path);
  EXPECT_EQ(r.inventory.config_source, "metadata");
  EXPECT_EQ(r.inventory.missing, 0u);
  EXPECT_TRUE(r.inventory.undeclared.empty());
  EXPECT_EQ(r.inventory.duplicate_tensors, 12u);
  EXPECT_TRUE(r.inventory.duplicate_mismatches.empty());
  EXPECT_EQ(r.unused.entries.size(), 10u);  // 2 layers x (backward gate, wo.*, post_norm.*)
  EXPECT_TRUE(r.frozen.entries.empty());    // untrained: every constant role is constant everywhere
  EXPECT_FALSE(r.frozen.at_init_groups.empty());
  const auto j = to_json(r);
  EXPECT_EQ(j["schema_version"], 1);
  EXPECT_EQ(j["unused"]["count"], 10);
  EXPECT_EQ(j["exit_status"], 1);
}

TEST(Audit, UnreadableOrForeignInputThrowsInputError) {
  mtt::test::TempDir dir;
  const auto path = (dir / "foreign.safetensors").string();
  float x[2] = {1, 2};
  io::write_safetensors(path, {{"a.weight", DType::F32, {2}, x}});
  try {
    audit_file(path);
    FAIL() << "no error";
  } catch (const mtt::Error& e) {
    EXPECT_EQ(e.exit_status(), 2);
    EXPECT_NE(std::string(e.what()).find("foreign.safetensors"), std::string::npos);
  }
  EXPECT_THROW(audit_file((dir / "missing.safetensors").string()), mtt::Error);
}
