// golden/moshi: upstream's own LM regression (moshi/tests/test_lm.py), checked as upstream does:
// masks equal, per-codebook masked cross-entropy within a relative 1e-6 of the reference's.
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include "core/error.h"
#include "moshi/config.h"
#include "moshi/lm.h"
#include "nn/tensor_io.h"
#include "test_util.h"

namespace mtt::moshi {
namespace {

double masked_ce(const at::Tensor& logits, const at::Tensor& targets, const at::Tensor& mask) {
  // logits [B, T, C], targets [B, T], mask [B, T]
  at::Tensor l = logits.index({mask}).to(at::kDouble);
  at::Tensor t = targets.index({mask});
  return at::cross_entropy_loss(l, t).item<double>();
}

TEST(MoshiGolden, ForwardMatchesUpstreamTestLm) {
  const auto dir = test::golden_dir() / "moshi";
  LMModel model(LMConfig::golden_test());
  LoadReport rep = model.load_file((dir / "test_lm_model.safetensors").string());
  EXPECT_TRUE(rep.ok()) << rep.summary();
  EXPECT_GT(rep.zero_copy, 0);  // F32 file, F32 model: views of the mapping
  auto codes = nn::load_tensors((dir / "test_lm_codes.safetensors").string()).at("codes");
  auto ref = nn::load_tensors((dir / "test_lm_out.safetensors").string());

  at::NoGradGuard ng;
  LMOutput out = model.forward(codes);
  ASSERT_EQ(out.logits.sizes(), ref.at("logits").sizes());
  ASSERT_EQ(out.text_logits.sizes(), ref.at("text_logits").sizes());
  EXPECT_TRUE(at::equal(out.mask, ref.at("mask")));
  EXPECT_TRUE(at::equal(out.text_mask, ref.at("text_mask")));

  const int64_t dep_q = out.logits.size(1);
  for (int64_t cb = 0; cb < dep_q; ++cb) {
    at::Tensor m = out.mask.select(1, cb);
    double ce = masked_ce(out.logits.select(1, cb), codes.select(1, cb + 1), m);
    double ce_ref = masked_ce(ref.at("logits").select(1, cb), codes.select(1, cb + 1), m);
    EXPECT_LE(std::abs(ce - ce_ref) / std::abs(ce_ref), 1e-6) << "codebook " << cb << ": " << ce << " vs " << ce_ref;
  }
  at::Tensor tm = out.text_mask.select(1, 0);
  double ce = masked_ce(out.text_logits.select(1, 0), codes.select(1, 0), tm);
  double ce_ref = masked_ce(ref.at("text_logits").select(1, 0), codes.select(1, 0), tm);
  EXPECT_LE(std::abs(ce - ce_ref) / std::abs(ce_ref), 1e-6) << "text: " << ce << " vs " << ce_ref;
  // Stronger than upstream's check: the valid logits themselves agree.
  at::Tensor mask4 = out.mask.unsqueeze(-1).expand_as(out.logits);
  EXPECT_TRUE(at::allclose(out.logits.index({mask4}), ref.at("logits").index({mask4}), 1e-5, 1e-5));
  // Invalid positions are NaN, as upstream fills them.
  EXPECT_TRUE(at::isnan(out.logits.index({~mask4})).all().item<bool>());
}

TEST(MoshiGolden, FileNamesUseTheLegacyFusedForm) {
  // The released asset stores the depformer attention stacked over steps (docs/moshi.md §4.1/§4.2);
  // loading must split it into the schedule's weight sets (2 sets for schedule [0, 1, 1]).
  const auto dir = test::golden_dir() / "moshi";
  auto t = nn::load_tensors((dir / "test_lm_model.safetensors").string());
  ASSERT_TRUE(t.count("depformer.layers.0.self_attn.in_proj_weight"));
  EXPECT_EQ(t.at("depformer.layers.0.self_attn.in_proj_weight").size(0), 2 * 3 * 16);
  LMModel model(LMConfig::golden_test());
  model.load(t);
  auto sd = model.state_dict();
  EXPECT_TRUE(at::equal(sd.at("depformer.layers.0.self_attn.in_projs.1.weight"),
                        t.at("depformer.layers.0.self_attn.in_proj_weight").narrow(0, 48, 48)));
}

TEST(MoshiGolden, LoaderReportsMissingUnexpectedAndMisShapedKeys) {
  const auto dir = test::golden_dir() / "moshi";
  auto t = nn::load_tensors((dir / "test_lm_model.safetensors").string());
  t.erase("out_norm.weight");
  t["bogus.weight"] = at::zeros({2});
  t["text_linear.weight"] = at::zeros({3, 16});
  LMModel model(LMConfig::golden_test());
  LoadOptions opt;
  opt.strict = false;
  LoadReport rep = model.load(t, opt, "x.safetensors");
  EXPECT_EQ(rep.missing, std::vector<std::string>{"out_norm.weight"});
  EXPECT_EQ(rep.unexpected, std::vector<std::string>{"bogus.weight"});
  ASSERT_EQ(rep.mis_shaped.size(), 1u);
  EXPECT_NE(rep.mis_shaped[0].find("text_linear.weight"), std::string::npos);
  LMModel strict(LMConfig::golden_test());
  try {
    strict.load(t, {}, "x.safetensors");
    FAIL() << "strict load accepted a bad checkpoint";
  } catch (const Error& e) {
    EXPECT_EQ(e.file(), "x.safetensors");
    EXPECT_EQ(e.key(), "out_norm.weight");
  }
}

}  // namespace
}  // namespace mtt::moshi
