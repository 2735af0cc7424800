// The torch modules agree with the torch-free parameter declaration (lib/moshi/schema.h): same
// names and shapes, consumed parameters get a gradient, unused ones none. Hybrid (fork layout)
// layers: alpha = 0 gates reproduce the base model exactly, fork-layout checkpoints load with
// exactly the schema's unused keys as the only possible gaps, TTT state rides in the stream.
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <ATen/CPUGeneratorImpl.h>
#include <set>

#include "core/error.h"
#include "moshi/config.h"
#include "moshi/hybrid.h"
#include "moshi/lm.h"
#include "moshi/lmgen.h"
#include "moshi/schema.h"
#include "moshi_test_util.h"

namespace mtt::moshi {
namespace {

LMConfig tiny_hybrid() {
  LMConfig c = LMConfig::tiny();
  c.ttt.enable = true;
  c.ttt.layers = "middle";  // layers 1, 2 of 4 (fork rule)
  c.ttt.mini_batch_size = 4;
  c.ttt.initial_gating_alpha = 0.3;
  return c;
}

at::Tensor codes_for(const LMConfig& c, int64_t B, int64_t T, uint64_t seed) {
  return testing::random_codes(c, B, T, seed);
}

at::Tensor masked_loss(const LMOutput& o, const at::Tensor& codes, const LMConfig& c) {
  at::Tensor mk = o.mask;
  at::Tensor l = o.logits.permute({0, 2, 1, 3}).index({mk.permute({0, 2, 1})});
  at::Tensor t = codes.narrow(1, 1, c.dep_q).permute({0, 2, 1}).index({mk.permute({0, 2, 1})});
  at::Tensor loss = at::cross_entropy_loss(l, t);
  at::Tensor tm = o.text_mask.select(1, 0);
  loss = loss + at::cross_entropy_loss(o.text_logits.select(1, 0).index({tm}), codes.select(1, 0).index({tm}));
  return loss;
}

using testing::expect_params_match_schema;

TEST(MoshiSchema, RegisteredParametersEqualTheDeclaration) {
  for (const LMConfig& c : {LMConfig::tiny(), LMConfig::tiny(8), tiny_hybrid(), LMConfig::moshiko_7b()}) {
    LMModel m(c);  // meta tensors: the 7B skeleton costs no memory
    expect_params_match_schema(m);
  }
}

// What each module declares when it registers a tensor (nn/params.h: init rule, dtype class,
// buffer) agrees with the torch-free schema's module and role for the same key, so init_random,
// load and set_requires_grad treat a tensor as the audit sees it.
TEST(MoshiSchema, RegisteredDeclarationsAgreeWithTheSchemaRoles) {
  LMConfig inplace = LMConfig::tiny();
  inplace.ttt.enable = true;
  inplace.ttt.variant = TTTVariant::inplace;
  inplace.ttt.layers = "1,3";
  for (const LMConfig& c : {LMConfig::tiny(), tiny_hybrid(), inplace}) {
    LMModel m(c);
    ModelSchema s = declare_parameters(c.to_schema());
    int checked = 0;
    for (const auto& p : m.declared_parameters()) {
      const ParamDecl* d = s.find(p.name);
      ASSERT_NE(d, nullptr) << p.name;
      const bool ttt = d->module.rfind("ttt.", 0) == 0;
      const bool fast = d->role == "fast_weight";
      EXPECT_EQ(p.spec.init == nn::ParamInit::own, ttt) << p.name;
      EXPECT_EQ(p.spec.init == nn::ParamInit::derived, fast) << p.name;
      EXPECT_EQ(p.spec.dtype == nn::ParamDType::f32, ttt || fast) << p.name;
      EXPECT_EQ(p.spec.buffer, d->buffer) << p.name;
      if (ttt || fast) continue;
      EXPECT_EQ(p.spec.init == nn::ParamInit::embedding, d->role == "embedding") << p.name;
      EXPECT_EQ(p.spec.init == nn::ParamInit::norm_gain, d->role == "norm_gain") << p.name;
      EXPECT_EQ(p.spec.init == nn::ParamInit::small_normal, d->module == "inplace.target_generator") << p.name;
      if (d->role == "norm_bias") EXPECT_EQ(p.spec.init, nn::ParamInit::bias) << p.name;
      if (d->role == "linear" && d->module != "inplace.target_generator")
        EXPECT_EQ(p.spec.init, nn::ParamInit::linear) << p.name;
      ++checked;
    }
    EXPECT_GT(checked, 20);
  }
}

TEST(MoshiSchema, ConsumedParametersGetGradientsUnusedOnesNone) {
  for (const LMConfig& c : {LMConfig::tiny(), tiny_hybrid()}) {
    LMModel m(c);
    m.init_random(3);
    m.set_requires_grad(true);
    at::Tensor codes = codes_for(c, 2, 9, 4);
    LMOutput o = m.forward(codes);
    masked_loss(o, codes, c).backward();
    ModelSchema s = declare_parameters(c.to_schema());
    int consumed = 0, unused = 0;
    for (auto& [n, t] : m.named_parameters()) {
      const ParamDecl* d = s.find(n);
      ASSERT_NE(d, nullptr) << n;
      at::Tensor g = t->grad();
      const bool has = g.defined() && g.abs().sum().item<double>() > 0;
      if (d->consumed) {
        EXPECT_TRUE(has) << n << " is declared consumed but gets no gradient";
        ++consumed;
      } else {
        EXPECT_FALSE(has) << n << " is declared unused but gets a gradient";
        ++unused;
      }
    }
    EXPECT_GT(consumed, 0);
    if (c.ttt.enable) EXPECT_GT(unused, 0);  // wo, post_norm, backward gate (docs/checkpoint-keys.md §1.4)
  }
}

// A plain model with the hybrid model's Moshi weights (original_layer.* renamed back).
std::map<std::string, at::Tensor> base_weights(LMModel& hybrid) {
  std::map<std::string, at::Tensor> out;
  for (auto& [n, t] : hybrid.state_dict()) {
    if (n.find("seq_modeling_block.") != std::string::npos) continue;
    std::string k = n;
    auto p = k.find("original_layer.");
    if (p != std::string::npos) k.erase(p, std::string("original_layer.").size());
    out[k] = t;
  }
  return out;
}

TEST(MoshiHybrid, ZeroGatesReproduceTheBaseModelExactly) {
  LMConfig hc = tiny_hybrid();
  LMModel hybrid(hc);
  hybrid.init_random(21);
  LMConfig bc = LMConfig::tiny();
  LMModel base(bc);
  base.load(base_weights(hybrid));
  at::Tensor codes = codes_for(hc, 2, 10, 8);
  at::NoGradGuard ng;
  LMOutput ob = base.forward(codes);
  LMOutput oh = hybrid.forward(codes);
  // With alpha = 0.3 the TTT branch changes the output...
  at::Tensor valid = ob.mask.unsqueeze(-1).expand_as(ob.logits);
  EXPECT_GT((oh.logits.index({valid}) - ob.logits.index({valid})).abs().max().item<double>(), 1e-4);
  // ...and with every gate at alpha = 0 it is bit-identical to the base model.
  for (auto& [n, t] : hybrid.named_parameters())
    if (n.find("gating_alpha") != std::string::npos) t->zero_();
  oh = hybrid.forward(codes);
  EXPECT_TRUE(at::equal(oh.logits.index({valid}), ob.logits.index({valid})));
  EXPECT_TRUE(at::equal(oh.text_logits, ob.text_logits));
  // Streaming generation too (TTT state carried, gates closed): same tokens as the base model.
  LMGen gh(hybrid, SamplingOptions::greedy()), gb(base, SamplingOptions::greedy());
  gh.reset(2);
  gb.reset(2);
  for (int n = 0; n < 9; ++n) {
    at::Tensor user = codes.narrow(1, 1 + hc.dep_q, hc.n_q - hc.dep_q).narrow(2, n, 1);
    at::Tensor a = gh.step(user), b = gb.step(user);
    ASSERT_EQ(a.defined(), b.defined());
    if (a.defined()) EXPECT_TRUE(at::equal(a, b)) << "step " << n;
  }
}

TEST(MoshiHybrid, ForkLayoutCheckpointLoadsWithOnlyUnusedKeysMissing) {
  LMConfig hc = tiny_hybrid();
  LMModel src(hc);
  src.init_random(5);
  auto sd = src.state_dict();  // fork layout: both original_layer copies, seq_modeling_block.*
  ModelSchema s = declare_parameters(hc.to_schema());
  // Every declared name is in the state dict, nothing else.
  std::set<std::string> declared;
  for (auto& d : s.params) declared.insert(d.name);
  std::set<std::string> have;
  for (auto& [n, t] : sd) have.insert(n);
  EXPECT_EQ(declared, have);
  {
    LMModel dst(hc);
    LoadReport rep = dst.load(sd);
    EXPECT_TRUE(rep.ok()) << rep.summary();
    EXPECT_EQ(rep.duplicates.size(), 2u * 6u);  // 6 Moshi tensors per converted layer, 2 layers
  }
  // Without the tensors the audit reports unused, the only gaps are exactly those keys.
  auto unused = s.unused_names();
  ASSERT_FALSE(unused.empty());
  for (auto& n : unused) sd.erase(n);
  LMModel dst(hc);
  LoadOptions opt;
  opt.strict = false;
  LoadReport rep = dst.load(sd, opt);
  std::vector<std::string> missing = rep.missing;
  std::sort(missing.begin(), missing.end());
  std::sort(unused.begin(), unused.end());
  EXPECT_EQ(missing, unused);
  EXPECT_TRUE(rep.unexpected.empty());
  EXPECT_TRUE(rep.mis_shaped.empty());
}

TEST(MoshiHybrid, StreamingCarriesThePersistentTTTState) {
  LMConfig hc = tiny_hybrid();
  LMModel m(hc);
  m.init_random(9);
  LMGen g(m, SamplingOptions::greedy());
  g.reset(2);
  at::Tensor codes = codes_for(hc, 2, 7, 1);
  for (int n = 0; n < 7; ++n) g.step(codes.narrow(1, 1 + hc.dep_q, hc.n_q - hc.dep_q).narrow(2, n, 1));
  auto& ttt = g.state().transformer.ttt;
  ASSERT_EQ(ttt.size(), 4u);
  EXPECT_EQ(ttt[0], nullptr);
  ASSERT_NE(ttt[1], nullptr);
  ASSERT_TRUE(ttt[1]->ttt.defined());
  // The fork's streaming: each one-frame call is padded to a whole mini-batch (b = 4) whose pads
  // update the state too, so 7 calls advance the state by 7 mini-batches.
  EXPECT_EQ(ttt[1]->ttt.position, (std::vector<int64_t>{28, 28}));
  // The inner weights moved away from W0.
  auto eff = m.transformer().layers()[1].hybrid->ttt_layer().effective_weights(ttt[1]->ttt);
  at::Tensor w0 = m.transformer().layers()[1].hybrid->ttt_layer().inner_weights()[0];
  EXPECT_GT((eff[0].select(0, 0) - w0).abs().max().item<double>(), 0.0);
}

TEST(MoshiConfig, TTTSectionOfTheForkYaml) {
  const std::string yaml = R"(
lora: {enable: false}
ttt:
  enable: true
  layers: "29,30,31"           # Last 3 layers
  base_lr: 1.0
  mini_batch_size: 32
  persistent_states: true
  initial_gating_alpha: 0.05
  ttt_mlp_layers: 2
  ttt_mlp_expansion_factor: 4.0
  log_inner_loop_losses: true
  inner_loop_plot_dir: "./evaluation_plots/inner_loop"
)";
  TTTSettings t = ttt_settings_from_yaml(yaml, "run.yaml");
  EXPECT_TRUE(t.enable);
  EXPECT_EQ(t.resolve_layers(32), (std::vector<int>{29, 30, 31}));
  EXPECT_EQ(t.mini_batch_size, 32);
  EXPECT_DOUBLE_EQ(t.initial_gating_alpha, 0.05);
  t.layers = "middle";
  auto mid = t.resolve_layers(32);
  EXPECT_EQ(mid.front(), 8);
  EXPECT_EQ(mid.back(), 23);
  t.layers = "all";
  EXPECT_EQ(t.resolve_layers(4).size(), 4u);
  t.layers = "none";
  EXPECT_TRUE(t.resolve_layers(4).empty());
  t.layers = "3,x";
  try {
    t.resolve_layers(32, "run.yaml");
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.file(), "run.yaml");
    EXPECT_EQ(e.key(), "ttt.layers");
  }
  t.layers = "40";
  EXPECT_THROW(t.resolve_layers(32), Error);
  // The fork's 7B conversion of seed 004: +214,487,136 parameters for 3 layers (71,495,712 each,
  // docs/checkpoint-keys.md §1.4), counted over distinct new tensors.
  LMConfig c = LMConfig::moshiko_7b();
  c.ttt = ttt_settings_from_yaml(yaml, "run.yaml");
  ModelSchema s = declare_parameters(c.to_schema());
  int64_t ttt_params = 0;
  for (auto& d : s.params)
    if (d.name.find("seq_modeling_block.") != std::string::npos && d.duplicate_of.empty()) ttt_params += d.numel();
  EXPECT_EQ(ttt_params, 214487136);
}

TEST(MoshiConfig, MoshiJsonConfig) {
  // configs/moshi_7b_202409.json (docs/moshi.md §1).
  const std::string json = R"({"dim": 4096, "text_card": 32000, "existing_text_padding_id": 3, "n_q": 16,
    "dep_q": 8, "card": 2048, "num_heads": 32, "num_layers": 32, "hidden_scale": 4.125, "causal": true,
    "layer_scale": null, "context": 3000, "max_period": 10000, "gating": "silu", "norm": "rms_norm_f32",
    "positional_embedding": "rope", "depformer_dim": 1024, "depformer_dim_feedforward": 4224,
    "depformer_num_heads": 16, "depformer_num_layers": 6, "depformer_layer_scale": null,
    "depformer_multi_linear": true, "depformer_context": 8, "depformer_max_period": 10000,
    "depformer_gating": "silu", "depformer_pos_emb": "none", "depformer_weights_per_step": true,
    "delays": [0, 0, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1, 1, 1, 1, 1]})";
  LMConfig c = LMConfig::from_json(json, "config.json");
  LMConfig ref = LMConfig::moshiko_7b();
  EXPECT_EQ(c.to_json(), ref.to_json());
  auto dt = c.depformer_transformer();
  EXPECT_FALSE(dt.context.has_value());  // depformer_context ignored (lm.py:170)
  EXPECT_EQ(dt.kv_capacity(), 8);
  EXPECT_EQ(dt.gating_hidden(), 2816);
  EXPECT_EQ(c.main_transformer().gating_hidden(), 11264);
  EXPECT_EQ(c.main_transformer().kv_capacity(), 3000);
  // Round trip and errors name the key.
  EXPECT_EQ(LMConfig::from_json(c.to_json()).to_json(), c.to_json());
  try {
    LMConfig::from_json(R"({"n_q": 2, "delays": [0, 1]})", "bad.json");
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.file(), "bad.json");
    EXPECT_EQ(e.key(), "delays");
  }
  EXPECT_THROW(LMConfig::from_json(R"({"norm": "batch_norm"})", "bad.json"), Error);
  EXPECT_THROW(LMConfig::from_json("{", "bad.json"), Error);
}

}  // namespace
}  // namespace mtt::moshi
