// The parameter declaration against the counts stated in the specs (docs/moshi.md §4.2,
// docs/checkpoint-keys.md §1.2-1.4, seed 000).
#include <gtest/gtest.h>

#include <set>

#include "core/error.h"
#include "moshi/schema.h"

using namespace mtt::moshi;

TEST(Schema, Moshiko7bKeyCountsBothAttentionForms) {
  auto c = SchemaConfig::moshiko_7b();
  auto s = declare_parameters(c);
  // docs/moshi.md §0/§4.2: 439 module keys, 7,687,729,152 parameters.
  EXPECT_EQ(s.params.size(), 439u);
  EXPECT_EQ(s.total_params(), 7'687'729'152LL);
  c.fused_attention_names = true;
  auto f = declare_parameters(c);
  EXPECT_EQ(f.params.size(), 355u);  // legacy fused form of the released file
  EXPECT_EQ(f.total_params(), 7'687'729'152LL);
  ASSERT_NE(f.find("depformer.layers.0.self_attn.in_proj_weight"), nullptr);
  EXPECT_EQ(f.find("depformer.layers.0.self_attn.in_proj_weight")->shape, (std::vector<int64_t>{24576, 1024}));
  EXPECT_EQ(f.find("transformer.layers.3.gating.linear_in.weight")->shape, (std::vector<int64_t>{22528, 4096}));
  for (const auto& p : f.params) EXPECT_TRUE(p.consumed) << p.name;
}

static SchemaConfig fork7b() {
  auto c = SchemaConfig::moshiko_7b();
  c.ttt.variant = TTTVariant::fork_hybrid;
  c.ttt.layers = {29, 30, 31};
  c.ttt.ttt_heads = 32;
  c.ttt.initial_gating_alpha = 0.3;
  return c;
}

TEST(Schema, ForkHybridLayerKeysAndSizes) {
  auto s = declare_parameters(fork7b());
  std::size_t keys = 0, distinct = 0;
  int64_t new_params = 0;
  for (const auto& p : s.params) {
    if (p.layer != 29) continue;
    ++keys;
    if (p.duplicate_of.empty()) ++distinct;
    if (p.name.find(".seq_modeling_block.") != std::string::npos && p.duplicate_of.empty()) new_params += p.numel();
  }
  // docs/checkpoint-keys.md §1.1: 32 keys for 26 distinct tensors; §1.4: 71,495,712 new parameters.
  EXPECT_EQ(keys, 32u);
  EXPECT_EQ(distinct, 26u);
  EXPECT_EQ(new_params, 71'495'712LL);
  const auto* w1 = s.find("transformer.layers.29.seq_modeling_block.ttt_layer.ttt.W1");
  ASSERT_NE(w1, nullptr);
  EXPECT_EQ(w1->shape, (std::vector<int64_t>{32, 128, 512}));
  const auto* dup = s.find("transformer.layers.29.seq_modeling_block.original_layer.norm1.alpha");
  ASSERT_NE(dup, nullptr);
  EXPECT_EQ(dup->duplicate_of, "transformer.layers.29.original_layer.norm1.alpha");
  EXPECT_EQ(s.find("transformer.layers.29.norm1.alpha"), nullptr);  // the layer is wrapped
  EXPECT_EQ(s.gates.size(), 3u);
}

TEST(Schema, ForkUnusedMatchesGoldenZeroGradients) {
  // golden fork_hybrid_ttt_path: wo.*, post_norm.* and backward gate have exactly zero gradient.
  auto s = declare_parameters(fork7b());
  std::set<std::string> unused;
  int64_t backward = 0;
  for (const auto& p : s.params)
    if (!p.consumed) {
      unused.insert(p.name.substr(p.name.find(".seq_modeling_block.") + 20));
      if (p.name.find("backward_ssm_gating") != std::string::npos) backward += p.numel();
    }
  EXPECT_EQ(unused, (std::set<std::string>{"backward_ssm_gating.gating_alpha", "ttt_layer.ttt.post_norm.bias",
                                           "ttt_layer.ttt.post_norm.weight", "ttt_layer.ttt.wo.bias",
                                           "ttt_layer.ttt.wo.weight"}));
  EXPECT_EQ(backward, 12'288);  // seed 000: 3 layers x 4096
  auto c = fork7b();
  c.ttt.output_post_norm_wo = true;
  c.ttt.bidirectional = true;
  EXPECT_TRUE(declare_parameters(c).unused_names().empty());
}

TEST(Schema, ForkLoraAndInnerVariants) {
  auto c = fork7b();
  c.ttt.lora_rank = 16;
  auto s = declare_parameters(c);
  std::size_t keys = 0;
  for (const auto& p : s.params) keys += p.layer == 29;
  EXPECT_EQ(keys, 48u);  // docs/checkpoint-keys.md §1.3
  const auto* b = s.find("transformer.layers.29.original_layer.self_attn.in_projs.0.lora_B.weight");
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(b->shape, (std::vector<int64_t>{12288, 16}));
  EXPECT_EQ(s.find("transformer.layers.29.seq_modeling_block.ttt_layer.ttt.wq.lora_A.weight"), nullptr);

  c = fork7b();
  c.ttt.ttt_mlp_layers = 1;  // TTT-Linear
  s = declare_parameters(c);
  EXPECT_EQ(s.find("transformer.layers.30.seq_modeling_block.ttt_layer.ttt.W1")->shape,
            (std::vector<int64_t>{32, 128, 128}));
  EXPECT_EQ(s.find("transformer.layers.30.seq_modeling_block.ttt_layer.ttt.W2"), nullptr);
  c.ttt.ttt_mlp_layers = 3;
  c.ttt.ttt_mlp_hidden_dims = {256, 64};
  s = declare_parameters(c);
  EXPECT_EQ(s.find("transformer.layers.30.seq_modeling_block.ttt_layer.ttt.weights.1")->shape,
            (std::vector<int64_t>{32, 256, 64}));
  EXPECT_EQ(s.find("transformer.layers.30.seq_modeling_block.ttt_layer.ttt.biases.2")->shape,
            (std::vector<int64_t>{32, 1, 128}));
  c.ttt.ttt_mlp_hidden_dims = {256};
  EXPECT_THROW(declare_parameters(c), mtt::Error);
}

TEST(Schema, InplaceKeysUnusedAndProduct) {
  auto c = SchemaConfig::moshiko_7b();
  c.ttt.variant = TTTVariant::inplace;
  c.ttt.layers = {5, 11, 17, 23, 29};
  auto s = declare_parameters(c);
  const std::string g = "transformer.layers.5.gating.";
  ASSERT_NE(s.find(g + "w_down"), nullptr);
  EXPECT_EQ(s.find(g + "w_down")->shape, (std::vector<int64_t>{4096, 11264}));
  EXPECT_EQ(s.find(g + "target_generator.conv1d.conv.weight")->shape, (std::vector<int64_t>{4096, 4096, 2}));
  EXPECT_FALSE(s.find(g + "linear_out.weight")->consumed);
  EXPECT_TRUE(s.find(g + "linear_in.weight")->consumed);
  EXPECT_TRUE(s.find("transformer.layers.6.gating.linear_out.weight")->consumed);
  EXPECT_TRUE(s.find(g + "w_down_pretrained")->buffer);
  ASSERT_EQ(s.products.size(), 5u);
  EXPECT_EQ(s.products[0].factors.size(), 2u);
  c.ttt.lora_rank = 8;
  s = declare_parameters(c);
  ASSERT_NE(s.find(g + "target_generator.W_target.frozen_W.weight"), nullptr);  // the name in seed 003's logs
  EXPECT_EQ(s.find(g + "target_generator.conv1d.conv.weight")->name, g + "target_generator.conv1d.conv.weight");
  bool found = false;
  for (const auto& p : s.products)
    if (p.name == g + "target_generator") {
      found = true;
      EXPECT_EQ(p.factors[1].size(), 2u);  // frozen_W + lora_B @ lora_A
    }
  EXPECT_TRUE(found);
}

TEST(Schema, RejectsInconsistentConfig) {
  auto c = fork7b();
  c.ttt.ttt_heads = 3;
  EXPECT_THROW(declare_parameters(c), mtt::Error);
  c = fork7b();
  c.ttt.layers = {32};
  EXPECT_THROW(declare_parameters(c), mtt::Error);
}
