// LoRA as moshi does it (lib/moshi/lora.h): every Moshi linear as a LoRALinear (frozen_W, lora_A,
// lora_B, scaling), loaded separate or merged at load (--fuse-lora); the two forms agree, a zero
// lora_B is the base model exactly, the fork's adapter layout (base under `.weight`, adapters of a
// hybrid layer under original_layer.* only) loads, the registered names are the schema's, and the
// numerics equal upstream's LoRALinear / replace_lora_with_linear (PyPI moshi reference venv).
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/core/grad_mode.h>

#include <map>
#include <set>
#include <string>

#include "core/error.h"
#include "moshi/config.h"
#include "moshi/lm.h"
#include "moshi/schema.h"
#include "moshi_test_util.h"

namespace mtt::moshi {
namespace {

constexpr int64_t kRank = 3;
constexpr double kScaling = 1.5;

LMConfig tiny_hybrid() {
  LMConfig c = LMConfig::tiny();
  c.ttt.enable = true;
  c.ttt.layers = "middle";
  c.ttt.mini_batch_size = 4;
  c.ttt.initial_gating_alpha = 0.3;
  return c;
}

LoadOptions lora_options(bool fuse) {
  LoadOptions o;
  o.lora.enable = true;
  o.lora.rank = kRank;
  o.lora.scaling = kScaling;
  o.fuse_lora = fuse;
  return o;
}

bool ends_with(const std::string& s, const std::string& suf) {
  return s.size() >= suf.size() && s.compare(s.size() - suf.size(), suf.size(), suf) == 0;
}

// A model with random weights and a trained-looking adapter on every linear (lora_B non-zero).
void init_with_lora(LMModel& m, uint64_t seed, double b_scale = 0.2) {
  m.init_random(seed);
  LoraSettings s;
  s.enable = true;
  s.rank = kRank;
  s.scaling = kScaling;
  m.enable_lora(s, seed + 1);
  at::Generator g = at::make_generator<at::CPUGeneratorImpl>(seed + 2);
  for (auto& [n, t] : m.named_parameters())
    if (ends_with(n, ".lora_B.weight")) *t = b_scale * at::randn(t->sizes().vec(), g);
}

std::map<std::string, at::Tensor> copy_state(LMModel& m) {
  std::map<std::string, at::Tensor> sd;
  for (auto& [n, t] : m.state_dict()) sd[n] = t.clone();
  return sd;
}

LMOutput run(LMModel& m, const at::Tensor& codes) {
  at::NoGradGuard ng;
  return m.forward(codes);
}

double rel(const at::Tensor& a, const at::Tensor& ref) {
  at::Tensor m = ref.isnan().logical_not();
  return testing::max_abs(a.index({m}), ref.index({m})) / ref.index({m}).abs().max().item<double>();
}

TEST(MoshiLora, EveryMoshiLinearIsWrappedAndTheNamesAreTheSchemas) {
  for (const LMConfig& c : {LMConfig::tiny(), LMConfig::tiny(8), tiny_hybrid()}) {
    LMModel m(c);
    init_with_lora(m, 1);
    SchemaConfig sc = c.to_schema();
    sc.ttt.lora_rank = static_cast<int>(kRank);
    ModelSchema s = declare_parameters(sc);
    std::map<std::string, std::vector<int64_t>> model, schema;
    for (auto& [n, t] : m.named_parameters()) model[n] = t->sizes().vec();
    for (auto& d : s.params) schema[d.name] = d.shape;
    EXPECT_EQ(model, schema);
    // No TTT projection is wrapped (the fork wraps the LM before its TTT layers exist, §1.3).
    for (auto& [n, shape] : model)
      if (n.find("seq_modeling_block.ttt_layer.") != std::string::npos) EXPECT_EQ(n.find("lora"), std::string::npos) << n;
    EXPECT_GT(m.lora_linears(), 0);
  }
}

TEST(MoshiLora, MergedEqualsSeparate) {
  for (const LMConfig& c : {LMConfig::tiny(), LMConfig::tiny(8), tiny_hybrid()}) {
    LMModel src(c);
    init_with_lora(src, 5);
    auto sd = copy_state(src);
    at::Tensor codes = testing::random_codes(c, 2, 11, 6);
    LMOutput a = run(src, codes);

    LMModel sep(c), fused(c);
    LoadReport rs = sep.load(sd, lora_options(false));
    LoadReport rf = fused.load(sd, lora_options(true));
    EXPECT_TRUE(rs.ok() && rf.ok()) << rs.summary() << " / " << rf.summary();
    EXPECT_EQ(rs.lora_linears, src.lora_linears());
    EXPECT_FALSE(rs.lora_fused);
    EXPECT_TRUE(rf.lora_fused);
    EXPECT_EQ(sep.lora_linears(), src.lora_linears());
    EXPECT_EQ(fused.lora_linears(), 0);
    LMOutput b = run(sep, codes), f = run(fused, codes);
    EXPECT_TRUE(at::equal(b.text_logits, a.text_logits));  // same tensors, same ops
    const double e_text = rel(f.text_logits, a.text_logits), e_audio = rel(f.logits, a.logits);
    EXPECT_LT(e_text, 1e-6);
    EXPECT_LT(e_audio, 1e-6);
    // The adapters do change the model.
    LMModel base(c);
    auto plain = sd;
    for (auto it = plain.begin(); it != plain.end();) it = it->first.find(".lora_") != std::string::npos ? plain.erase(it) : std::next(it);
    LoadReport rb = base.load(plain);  // LoRA off: frozen_W.* read as the plain weights
    EXPECT_TRUE(rb.ok()) << rb.summary();
    EXPECT_GT(rel(run(base, codes).text_logits, a.text_logits), 1e-3);
  }
}

TEST(MoshiLora, ZeroLoraBIsTheBaseModelExactly) {
  const LMConfig c = tiny_hybrid();
  LMModel base(c);
  base.init_random(9);
  at::Tensor codes = testing::random_codes(c, 2, 10, 3);
  LMOutput ref = run(base, codes);
  LMModel wrapped(c);
  init_with_lora(wrapped, 9, /*b_scale=*/0.0);  // same base weights (same seed), lora_B = 0
  auto sd = copy_state(wrapped);
  for (bool fuse : {false, true}) {
    LMModel m(c);
    LoadReport r = m.load(sd, lora_options(fuse));
    ASSERT_TRUE(r.ok()) << r.summary();
    LMOutput o = run(m, codes);
    EXPECT_TRUE(at::equal(o.text_logits, ref.text_logits)) << "fuse " << fuse;
    EXPECT_TRUE(at::equal(o.logits.nan_to_num(0), ref.logits.nan_to_num(0))) << "fuse " << fuse;
  }
}

TEST(MoshiLora, ForkAdapterLayoutLoadsOverTheBase) {
  // What the fork writes with save_adapters (docs/checkpoint-keys.md §1.4): lora.safetensors holds the
  // adapters, of a hybrid layer under original_layer.* only; the base is the plain model's
  // `.weight` names (moshi's load hook moves them to frozen_W.weight).
  const LMConfig c = tiny_hybrid();
  LMModel src(c);
  init_with_lora(src, 21);
  std::map<std::string, at::Tensor> files;
  for (auto& [n, t] : src.state_dict()) {
    if (n.find("seq_modeling_block.original_layer.") != std::string::npos) continue;  // saved once
    std::string key = n;
    const std::string fw = "frozen_W.";
    const size_t at_fw = key.find(fw);
    if (at_fw != std::string::npos) key = key.substr(0, at_fw) + key.substr(at_fw + fw.size());
    files[key] = t.clone();
  }
  ASSERT_TRUE(files.count("transformer.layers.1.original_layer.self_attn.in_projs.0.lora_A.weight"));
  ASSERT_TRUE(files.count("transformer.layers.1.original_layer.self_attn.in_projs.0.weight"));
  LMModel m(c);
  LoadOptions o = lora_options(false);
  o.lora.rank = 0;  // from the tensors
  LoadReport r = m.load(files, o);
  ASSERT_TRUE(r.ok()) << r.summary();
  EXPECT_EQ(r.lora_absent, 0);
  at::Tensor codes = testing::random_codes(c, 1, 9, 2);
  EXPECT_TRUE(at::equal(run(m, codes).text_logits, run(src, codes).text_logits));
  // The in-memory names have both copies, as the fork's state_dict().
  std::set<std::string> names;
  for (auto& [n, t] : m.named_parameters()) names.insert(n);
  EXPECT_TRUE(names.count("transformer.layers.1.seq_modeling_block.original_layer.gating.linear_in.lora_B.weight"));
}

TEST(MoshiLora, AdaptersWithoutLoraOnAreAOneLineErrorWithAHint) {
  const LMConfig c = LMConfig::tiny();
  LMModel src(c);
  init_with_lora(src, 2);
  LMModel m(c);
  try {
    m.load(copy_state(src), {}, "run/lora.safetensors");
    FAIL() << "LoRA adapters loaded into a model without LoRA";
  } catch (const Error& e) {
    const std::string w = e.what();
    EXPECT_NE(w.find("run/lora.safetensors"), std::string::npos) << w;
    EXPECT_NE(w.find("lora.enable"), std::string::npos) << w;
  }
}

TEST(MoshiLora, LinearsWithoutAdaptersStayPlain) {
  // moshi loads adapters with strict=False: a linear the file gives none keeps lora_B = 0.
  const LMConfig c = LMConfig::tiny();
  LMModel src(c);
  init_with_lora(src, 4);
  auto sd = copy_state(src);
  for (const char* k : {"text_linear.lora_A.weight", "text_linear.lora_B.weight"}) sd.erase(k);
  LMModel m(c);
  LoadReport r = m.load(sd, lora_options(false));
  ASSERT_TRUE(r.ok()) << r.summary();
  EXPECT_EQ(r.lora_absent, 1);
  std::set<std::string> names;
  for (auto& [n, t] : m.named_parameters()) names.insert(n);
  EXPECT_TRUE(names.count("text_linear.weight"));
  EXPECT_FALSE(names.count("text_linear.frozen_W.weight"));
}

TEST(MoshiLora, InPlaceTargetProjectionAdapterIsMerged) {
  // The port's LoRA wraps target_generator.W_target too (docs/checkpoint-keys.md §2.3); the In-Place TTT
  // reads it as a matrix, so its adapter is merged at load in both forms.
  LMConfig c = LMConfig::tiny();
  c.ttt = ttt_settings_from_yaml("ttt:\n  enable: true\n  variant: inplace\n  start_layer: 1\n  layer_frequency: 2\n");
  c.ttt.inplace_chunk_size = 4;
  c.ttt.inplace_lr = 0.5;
  c.ttt.inplace_delta_clip = 0.0;
  LMModel src(c);
  init_with_lora(src, 31);
  auto sd = copy_state(src);
  at::Generator g = at::make_generator<at::CPUGeneratorImpl>(32);
  int wrapped = 0;
  for (int l : {1, 3}) {
    const std::string wt = "transformer.layers." + std::to_string(l) + ".gating.target_generator.W_target.";
    ASSERT_TRUE(sd.count(wt + "weight"));
    const at::Tensor W = sd[wt + "weight"];
    at::Tensor A = at::randn({kRank, W.size(1)}, g), B = 0.1 * at::randn({W.size(0), kRank}, g);
    sd[wt + "frozen_W.weight"] = W - kScaling * at::matmul(B, A);
    sd[wt + "lora_A.weight"] = A;
    sd[wt + "lora_B.weight"] = B;
    sd.erase(wt + "weight");
    ++wrapped;
  }
  at::Tensor codes = testing::random_codes(c, 2, 10, 7);
  LMOutput ref = run(src, codes);
  for (bool fuse : {false, true}) {
    LMModel m(c);
    LoadReport r = m.load(sd, lora_options(fuse));
    ASSERT_TRUE(r.ok()) << r.summary();
    EXPECT_LT(rel(run(m, codes).text_logits, ref.text_logits), 1e-6) << "fuse " << fuse;
  }
  EXPECT_EQ(wrapped, 2);
}

TEST(MoshiLora, MatchesUpstreamLoRALinear) {
  MTT_REQUIRE_MOSHI_REF();
  const LMConfig c = LMConfig::tiny(8);  // low-rank depformer embeddings: their projection is wrapped too
  LMModel m(c);
  init_with_lora(m, 13);
  testing::RefRun run_dir;
  testing::write_model(m, run_dir);
  at::Tensor codes = testing::random_codes(c, 2, 12, 5);
  const std::string lora = "--lora " + std::to_string(kRank) + ":" + std::to_string(kScaling);
  auto ref = testing::run_ref(run_dir, "forward", {{"codes", codes}}, lora + " --fuse-lora");
  ASSERT_FALSE(ref.empty());
  LMOutput ours = run(m, codes);
  const double es = rel(ours.logits, ref["logits"]), et = rel(ours.text_logits, ref["text_logits"]);
  std::cout << "[lora] separate vs upstream LoRALinear: audio " << es << ", text " << et << " (max|d|/max|ref|)\n";
  EXPECT_LT(es, 1e-5);
  EXPECT_LT(et, 1e-5);
  LMModel mf(c);
  ASSERT_TRUE(mf.load(copy_state(m), lora_options(true)).ok());
  LMOutput of = run(mf, codes);
  const double fs = rel(of.logits, ref["fused_logits"]), ft = rel(of.text_logits, ref["fused_text_logits"]);
  std::cout << "[lora] merged vs upstream replace_lora_with_linear: audio " << fs << ", text " << ft << "\n";
  EXPECT_LT(fs, 1e-5);
  EXPECT_LT(ft, 1e-5);
}

}  // namespace
}  // namespace mtt::moshi
