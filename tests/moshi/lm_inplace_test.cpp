// In-Place TTT wired into the Moshi LM (docs/ttt.md §8, docs/checkpoint-keys.md §2): layers from the
// config's start/frequency, registered names == the schema, the full-sequence forward equals
// streaming for several chunk sizes and call sizes, a zero target generator is the base model with
// exactly zero gradients into it, and checkpoints in the port's layout load without gaps.
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <set>

#include "core/error.h"
#include "moshi/config.h"
#include "moshi/init.h"
#include "moshi/lm.h"
#include "moshi/schema.h"
#include "moshi_test_util.h"
#include "nn/tensor_io.h"
#include "test_util.h"

namespace mtt::moshi {
namespace {

using testing::max_abs;
using testing::random_codes;

// Tiny moshiko-shaped LM with In-Place TTT on layers 1 and 3 (start 1, every 2nd).
LMConfig tiny_inplace(int64_t chunk = 256, double lr = 1e-3, double clip = 1e-5) {
  LMConfig c = LMConfig::tiny();
  c.ttt = ttt_settings_from_yaml("ttt:\n  enable: true\n  variant: inplace\n  start_layer: 1\n  layer_frequency: 2\n");
  c.ttt.inplace_chunk_size = chunk;
  c.ttt.inplace_lr = lr;
  c.ttt.inplace_delta_clip = clip;
  return c;
}

bool has(LMModel& m, const std::string& name) {
  for (auto& [n, t] : m.named_parameters())
    if (n == name) return true;
  return false;
}

at::Tensor& param(LMModel& m, const std::string& name) {
  for (auto& [n, t] : m.named_parameters())
    if (n == name) return *t;
  throw Error("", name, "no such parameter");
}

at::Tensor lm_loss(const LMOutput& o, const at::Tensor& codes, const LMConfig& c) {
  at::Tensor mk = o.mask.permute({0, 2, 1});
  at::Tensor l = o.logits.permute({0, 2, 1, 3}).index({mk});
  at::Tensor t = codes.narrow(1, 1, c.dep_q).permute({0, 2, 1}).index({mk});
  at::Tensor tm = o.text_mask.select(1, 0);
  return at::cross_entropy_loss(l, t) +
         at::cross_entropy_loss(o.text_logits.select(1, 0).index({tm}), codes.select(1, 0).index({tm}));
}

TEST(MoshiInPlace, LayersFollowStartAndFrequencyAndSchemaNames) {
  LMConfig c = tiny_inplace();
  EXPECT_EQ(c.ttt.layers, "inplace");  // the variant's default when the YAML names no layers
  EXPECT_EQ(c.ttt.resolve_layers(c.num_layers), (std::vector<int>{1, 3}));
  LMModel m(c);
  for (int l = 0; l < 4; ++l) {
    const std::string g = "transformer.layers." + std::to_string(l) + ".gating.";
    EXPECT_EQ(has(m, g + "w_down"), l == 1 || l == 3) << l;
    EXPECT_EQ(has(m, g + "target_generator.conv1d.conv.weight"), l == 1 || l == 3) << l;
    EXPECT_TRUE(has(m, g + "linear_in.weight")) << l;
  }
  testing::expect_params_match_schema(m);
  // An explicit layer list wins over start/frequency; the 7B skeleton gets layers 5, 11, ..., 29.
  LMConfig c2 = LMConfig::tiny();
  c2.ttt = ttt_settings_from_yaml("ttt:\n  enable: true\n  variant: inplace\n  layers: \"2\"\n");
  LMModel m2(c2);
  EXPECT_TRUE(has(m2, "transformer.layers.2.gating.w_down"));
  EXPECT_FALSE(has(m2, "transformer.layers.1.gating.w_down"));
  testing::expect_params_match_schema(m2);
  LMConfig big = LMConfig::moshiko_7b();
  big.ttt = ttt_settings_from_yaml("ttt:\n  enable: true\n  variant: inplace\n");
  EXPECT_EQ(big.ttt.resolve_layers(big.num_layers), (std::vector<int>{5, 11, 17, 23, 29}));
  {
    LMModel skeleton(big);  // meta tensors: the In-Place 7B skeleton costs no memory either
    testing::expect_params_match_schema(skeleton);
    EXPECT_TRUE(param(skeleton, "transformer.layers.29.gating.w_down").is_meta());
  }
  // A plain FFN has no down projection to make fast: refused with the key named.
  LMConfig plain = LMConfig::golden_test();
  plain.ttt = ttt_settings_from_yaml("ttt:\n  enable: true\n  variant: inplace\n  start_layer: 0\n");
  EXPECT_THROW({ LMModel bad(plain); }, Error);
}

TEST(MoshiInPlace, ConsumedParametersGetGradientsUnusedOnesNone) {
  LMConfig c = tiny_inplace(3);
  LMModel m(c);
  m.init_random(5);
  m.set_requires_grad(true);
  at::Tensor codes = random_codes(c, 2, 10, 6);
  lm_loss(m.forward(codes), codes, c).backward();
  ModelSchema s = declare_parameters(c.to_schema());
  int checked_unused = 0;
  for (auto& [n, t] : m.named_parameters()) {
    const ParamDecl* d = s.find(n);
    ASSERT_NE(d, nullptr) << n;
    const bool has_grad = t->grad().defined() && t->grad().abs().max().item<double>() > 0;
    if (d->consumed) {
      EXPECT_TRUE(has_grad) << n << " is consumed but gets no gradient";
    } else {
      EXPECT_FALSE(has_grad) << n << " is declared unused but gets a gradient";
      ++checked_unused;
    }
  }
  EXPECT_EQ(checked_unused, 4);  // linear_out.weight and w_down_pretrained of layers 1 and 3
}

TEST(MoshiInPlace, StreamingEqualsFullSequenceForSeveralChunkSizes) {
  at::NoGradGuard ng;
  const int64_t S = 13;  // > context 4 (ring wraps) and not a multiple of any chunk size below
  for (int64_t chunk : {1, 2, 3, 5, 16}) {
    SCOPED_TRACE("chunk " + std::to_string(chunk));
    // Clip off and a large lr so that the fast-weight updates move the logits visibly.
    LMConfig c = tiny_inplace(chunk, 0.5, 0.0);
    LMModel m(c);
    m.init_random(21);
    at::Tensor seq = random_codes(c, 2, S, 22);
    auto [hf, tf] = m.forward_text(seq, nullptr);
    // The updates matter: with a zero target generator the logits differ (else this test could not fail).
    if (chunk < S) {
      LMModel z(c);
      z.init_random(21);
      for (int l : {1, 3}) {
        param(z, "transformer.layers." + std::to_string(l) + ".gating.target_generator.W_target.weight").zero_();
      }
      auto [hz, tz] = z.forward_text(seq, nullptr);
      EXPECT_GT(max_abs(tz, tf), 1e-3) << "fast-weight updates do not change the output";
    }
    // Calls of one step through the wrapping ring (context 4), and calls of 2, 1, 3 steps with a
    // context that holds the whole sequence (a ring of capacity == context drops keys that the
    // first queries of a multi-step call still need, upstream as here).
    LMConfig wide = c;
    wide.context = 32;
    LMModel mw(wide);
    mw.init_random(21);
    auto [hw, tw] = mw.forward_text(seq, nullptr);
    for (std::vector<int64_t> calls : {std::vector<int64_t>{1}, std::vector<int64_t>{2, 1, 3}}) {
      LMModel& mm = calls.size() == 1 ? m : mw;
      const at::Tensor& full = calls.size() == 1 ? tf : tw;
      LMState st = mm.new_state(2);
      std::vector<at::Tensor> tl;
      int64_t s = 0;
      for (size_t i = 0; s < S; ++i) {
        const int64_t T = std::min(calls[i % calls.size()], S - s);
        tl.push_back(mm.forward_text(seq.narrow(2, s, T), &st).second);
        s += T;
      }
      EXPECT_LE(max_abs(at::cat(tl, 2), full), 2e-5) << "calls of " << calls.size() << " sizes";
    }
  }
}

TEST(MoshiInPlace, ZeroTargetGeneratorIsTheBaseModelAndGetsZeroGradient) {
  LMConfig c = tiny_inplace(4, 1.0, 0.0);
  LMModel m(c);
  m.init_random(31);
  for (int l : {1, 3}) {
    const std::string g = "transformer.layers." + std::to_string(l) + ".gating.target_generator.";
    param(m, g + "conv1d.conv.weight").zero_();
    param(m, g + "W_target.weight").zero_();
  }
  LMModel base(LMConfig::tiny());
  std::map<std::string, at::Tensor> sd;
  for (auto& [n, t] : m.state_dict())
    if (n.find(".w_down") == std::string::npos && n.find(".target_generator.") == std::string::npos) sd[n] = t;
  base.load(sd);  // strict: the base model's keys are exactly the rest
  at::Tensor codes = random_codes(c, 2, 11, 32);
  {
    at::NoGradGuard ng;
    LMOutput a = m.forward(codes), b = base.forward(codes);
    at::Tensor mk = a.mask.unsqueeze(-1).expand_as(a.logits);
    EXPECT_LE(max_abs(a.logits.index({mk}), b.logits.index({mk})), 1e-5);
    EXPECT_LE(max_abs(a.text_logits, b.text_logits), 1e-5);
  }
  m.set_requires_grad(true);
  lm_loss(m.forward(codes), codes, c).backward();
  for (int l : {1, 3}) {
    const std::string g = "transformer.layers." + std::to_string(l) + ".gating.";
    for (const char* k : {"target_generator.conv1d.conv.weight", "target_generator.W_target.weight"}) {
      at::Tensor gr = param(m, g + k).grad();
      EXPECT_TRUE(!gr.defined() || at::equal(gr, at::zeros_like(gr))) << g << k << " gets a gradient";
    }
    at::Tensor gw = param(m, g + "w_down").grad();
    ASSERT_TRUE(gw.defined());
    EXPECT_GT(gw.abs().max().item<double>(), 0.0) << "w_down (W0) still learns";
  }
}

TEST(MoshiInPlace, CheckpointInThePortLayoutLoads) {
  LMConfig c = tiny_inplace();
  ModelSchema schema = declare_parameters(c.to_schema());
  test::TempDir dir;
  const std::string path = (dir / "inplace.safetensors").string();
  InitOptions io;
  io.seed = 3;
  io.dtype = DType::BF16;  // consolidated checkpoints are bf16 (docs/checkpoint-keys.md §2.4)
  write_initial_checkpoint(path, schema, io);
  for (at::ScalarType dt : {at::kFloat, at::kBFloat16}) {
    LMModel m(c);
    LoadOptions lo;
    lo.dtype = dt;
    LoadReport rep = m.load_file(path, lo);
    EXPECT_TRUE(rep.ok()) << rep.summary();
    EXPECT_TRUE(rep.missing.empty() && rep.unexpected.empty());
    // The fast weight stays f32 in memory whatever the compute dtype (the port).
    EXPECT_EQ(param(m, "transformer.layers.1.gating.w_down").scalar_type(), at::kFloat);
    EXPECT_EQ(param(m, "transformer.layers.1.gating.linear_in.weight").scalar_type(), dt);
    at::NoGradGuard ng;
    LMOutput o = m.forward(random_codes(c, 1, 6, 4));
    EXPECT_TRUE(at::isfinite(o.text_logits).all().item<bool>());
  }
  // A file without w_down / w_down_pretrained (a base checkpoint plus TTT-only adapters): filled
  // from linear_out as the port's loaders do, not reported missing.
  auto tensors = nn::load_tensors(path);
  for (int l : {1, 3}) {
    tensors.erase("transformer.layers." + std::to_string(l) + ".gating.w_down");
    tensors.erase("transformer.layers." + std::to_string(l) + ".gating.w_down_pretrained");
  }
  LMModel m(c);
  LoadReport rep = m.load(tensors);
  EXPECT_TRUE(rep.ok()) << rep.summary();
  EXPECT_TRUE(at::equal(param(m, "transformer.layers.3.gating.w_down"),
                        tensors.at("transformer.layers.3.gating.linear_out.weight").to(at::kFloat)));
}

}  // namespace
}  // namespace mtt::moshi
