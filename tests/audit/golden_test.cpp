// The model declaration against reference data: upstream's own test_lm checkpoint (every key and
// shape), and the golden gradients of the fork's TTT path and of In-Place TTT (a parameter the
// schema marks unused has an exactly-zero gradient in the reference, and every consumed one a
// non-zero gradient; a product the audit calls dead has zero gradients in the reference).
#include <gtest/gtest.h>

#include <set>

#include "audit/findings.h"
#include "audit/infer_config.h"
#include "audit/stats.h"
#include "io/checkpoint.h"
#include "moshi/schema.h"
#include "test_util.h"

using namespace mtt;
using namespace mtt::audit;
namespace m = mtt::moshi;

namespace {
std::filesystem::path golden(const std::string& rel) {
  auto p = mtt::test::golden_dir() / rel;
  return p;
}
#define REQUIRE_GOLDEN(p) \
  if (!std::filesystem::exists(p)) GTEST_SKIP() << "golden file missing: " << p
}  // namespace

TEST(Golden, UpstreamTestLmCheckpointKeysEqualTheInferredDeclaration) {
  const auto p = golden("moshi/test_lm_model.safetensors");
  REQUIRE_GOLDEN(p);
  const auto ck = io::Checkpoint::open(p.string());
  const auto inf = infer_config(ck);
  const auto& c = inf.config;
  // golden/moshi/README.md: dim 16, 2 layers, n_q 3, dep_q 3, card 32, text_card 48, low rank 8,
  // schedule [0, 1, 1] (2 weight sets), plain main FFN, SiLU-gated depformer, LayerNorm.
  EXPECT_EQ(c.dim, 16);
  EXPECT_EQ(c.num_layers, 2);
  EXPECT_EQ(c.n_q, 3);
  EXPECT_EQ(c.dep_q, 3);
  EXPECT_EQ(c.card, 32);
  EXPECT_EQ(c.text_card, 48);
  EXPECT_EQ(c.depformer_low_rank_embeddings, 8);
  EXPECT_EQ(c.depformer_weights_per_step, 2);
  EXPECT_FALSE(c.gating);
  EXPECT_TRUE(c.depformer_gated());
  EXPECT_TRUE(c.layer_norm);
  EXPECT_TRUE(c.fused_attention_names);
  const auto s = m::declare_parameters(c);
  std::set<std::string> declared, present(ck.keys().begin(), ck.keys().end());
  for (const auto& d : s.params) {
    declared.insert(d.name);
    if (ck.contains(d.name)) EXPECT_EQ(ck.get(d.name).shape(), d.shape) << d.name;
  }
  EXPECT_EQ(declared, present);
}

TEST(Golden, ForkHybridZeroGradientsAreExactlyTheUnusedParameters) {
  const auto p = golden("ttt/fork_hybrid_ttt_path.safetensors");
  REQUIRE_GOLDEN(p);
  auto f = io::SafetensorsFile::open(p.string());
  // A one-layer fork model of the golden's size: D from the gate, H from the lr gate.
  m::SchemaConfig c = m::SchemaConfig::tiny(m::TTTVariant::fork_hybrid);
  c.dim = f->view("forward_ssm_gating.gating_alpha").shape()[0];
  c.num_heads = f->view("ttt_layer.ttt.learnable_ttt_lr_weight").shape()[0];
  c.ttt.ttt_heads = static_cast<int>(c.num_heads);
  c.num_layers = 1;
  c.ttt.layers = {0};
  const auto s = m::declare_parameters(c);
  const std::string prefix = "transformer.layers.0.seq_modeling_block.";
  int checked = 0;
  for (const auto& t : f->tensors()) {
    if (t.name.rfind("grad.", 0) != 0 || t.name == "grad.x") continue;
    const std::string param = t.name.substr(5);
    const auto* d = s.find(prefix + param);
    ASSERT_NE(d, nullptr) << param;
    EXPECT_EQ(d->shape, f->view(param).shape()) << param;
    const auto st = tensor_stats(f->view(t.name));
    EXPECT_EQ(st.is_zero(), !d->consumed) << param;
    ++checked;
  }
  EXPECT_EQ(checked, 20);
}

TEST(Golden, InplaceDeadPathAgreesWithReferenceGradients) {
  for (const auto& [file, dead] : std::vector<std::pair<std::string, bool>>{
           {"inplace_ttt_zero_init", true}, {"inplace_ttt_official_init", false}, {"inplace_ttt_random_init", false}}) {
    const auto p = golden("ttt/" + file + ".safetensors");
    REQUIRE_GOLDEN(p);
    SCOPED_TRACE(file);
    auto f = io::SafetensorsFile::open(p.string());
    // One In-Place layer of the golden's size (D from W_target, hidden from w_down).
    m::SchemaConfig c = m::SchemaConfig::tiny(m::TTTVariant::inplace);
    c.dim = f->view("target_generator.W_target.weight").shape()[0];
    c.num_heads = 1;
    c.dim_feedforward = 4 * c.dim;  // hidden 21*D/8 (golden README)
    c.num_layers = 1;
    c.ttt.layers = {0};
    const auto s = m::declare_parameters(c);
    ASSERT_EQ(s.find("transformer.layers.0.gating.w_down")->shape, f->view("w_down").shape());
    StatsMap stats;
    const std::string prefix = "transformer.layers.0.gating.";
    for (const char* k : {"target_generator.conv1d.conv.weight", "target_generator.W_target.weight"})
      stats[prefix + k] = tensor_stats(f->view(k));
    const auto dp = find_dead_paths(s, stats, {});
    ASSERT_EQ(dp.paths.size(), 1u);
    EXPECT_EQ(dp.paths[0].status == "dead", dead);
    // Reference: dead => both factor gradients exactly zero; not dead => at least one non-zero.
    const bool g_conv_zero = tensor_stats(f->view("grad.target_generator.conv1d.conv.weight")).is_zero();
    const bool g_wt_zero = tensor_stats(f->view("grad.target_generator.W_target.weight")).is_zero();
    EXPECT_EQ(g_conv_zero && g_wt_zero, dead);
    // linear_out is unused by the TTT forward: zero gradient in the reference.
    EXPECT_FALSE(s.find(prefix + "linear_out.weight")->consumed);
    EXPECT_TRUE(tensor_stats(f->view("grad.linear_out.weight")).is_zero());
  }
}
