// Every golden file of a known family, in every golden test folder (test_util.h golden_test_dirs():
// shared/golden/{ttt,moshi}, the committed variants on other seeds and odd shapes, MTT_GOLDEN_DIRS),
// through the runner ttt-golden uses: a float32 and a float64 port, against the float64 and the
// float32 reference run, every output and gradient within the README tolerance of its class.
#include <gtest/gtest.h>

#include <cctype>
#include <filesystem>
#include <set>
#include <string>
#include <vector>

#include "core/error.h"
#include "golden/golden_runner.h"
#include "test_util.h"

namespace fs = std::filesystem;
using namespace mtt::golden;

namespace {

struct Case {
  std::string path, label;
  bool f64 = false, against_f32 = false;
};

std::string sanitize(const std::string& s) {
  std::string o;
  for (char c : s) o += std::isalnum(static_cast<unsigned char>(c)) ? c : '_';
  return o;
}

std::vector<Case> all_cases() {
  std::vector<Case> v;
  std::set<std::string> labels;
  int extra = 0;
  for (const fs::path& dir : mtt::test::golden_test_dirs()) {
    if (!fs::is_directory(dir)) continue;
    const std::string tag = dir.filename() == "golden_variants" ? "variants"
                            : dir.parent_path() == mtt::test::golden_dir() ? dir.filename().string()
                                                                            : "extra" + std::to_string(extra++);
    for (const std::string& c : golden_cases(dir.string())) {
      const bool lm = moshi_lm_files(c).has_value();
      for (bool f64 : {false, true}) {
        for (bool f32ref : {false, true}) {
          if (lm && f32ref) continue;  // upstream stores one (float32) reference
          Case k{c, "", f64, f32ref};
          std::string base = sanitize(tag + "_" + fs::path(c).stem().string()) + (f64 ? "_f64" : "_f32") +
                             (lm ? "" : (f32ref ? "_vs_f32run" : "_vs_f64run"));
          k.label = base;
          for (int i = 2; !labels.insert(k.label).second; ++i) k.label = base + "_" + std::to_string(i);
          v.push_back(k);
        }
      }
    }
  }
  return v;
}

class GoldenCase : public ::testing::TestWithParam<Case> {};

TEST_P(GoldenCase, WithinReadmeTolerance) {
  const Case& c = GetParam();
  RunOptions o;
  o.dtype = c.f64 ? at::kDouble : at::kFloat;
  o.against_f32 = c.against_f32;
  Report r = run_golden(c.path, o);
  ASSERT_TRUE(r.error.empty()) << r.error;
  ASSERT_FALSE(r.tensors.empty());
  int outs = 0, grads = 0;
  for (const auto& t : r.tensors) {
    EXPECT_TRUE(t.pass) << r.family << " " << t.name << ": rel " << t.rel << " (abs " << t.max_abs << ", ref max "
                        << t.ref_max_abs << ") > tol " << t.tol << (t.exact_zero ? " (reference exactly zero)" : "");
    (t.is_grad ? grads : outs)++;
  }
  EXPECT_GT(outs, 0);
  if (r.family != "moshi_lm") {
    EXPECT_GT(grads, 0) << "no gradients compared";
  }
}

INSTANTIATE_TEST_SUITE_P(All, GoldenCase, ::testing::ValuesIn(all_cases()),
                         [](const ::testing::TestParamInfo<Case>& i) { return i.param.label; });
GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST(GoldenCase);

// Each family has cases, in the shared set and (for the TTT families) in the committed variants
// whose shapes differ from the shared files: a family the runner stopped recognising would
// otherwise just drop out of the list above.
TEST(GoldenCoverage, EveryFamilyHasCases) {
  const std::vector<std::string> shared = {(mtt::test::golden_dir() / "ttt").string(),
                                           (mtt::test::golden_dir() / "moshi").string()};
  const std::vector<std::string> variants = {(mtt::test::fixtures_dir() / "golden_variants").string()};
  ASSERT_TRUE(fs::is_directory(variants[0])) << variants[0];
  const bool have_shared = fs::is_directory(shared[0]);
  for (Family f : {Family::vdit_op, Family::vdit_layer, Family::lmpt_dual, Family::lmpt_layer,
                   Family::ln_reconstruction_target, Family::ssm_gating, Family::fork_hybrid_ttt_path,
                   Family::inplace_ttt, Family::moshi_lm}) {
    if (have_shared) {
      EXPECT_FALSE(golden_cases_of(shared, f).empty()) << family_name(f) << " in shared/golden";
    }
    EXPECT_FALSE(golden_cases_of(variants, f).empty()) << family_name(f) << " in the variants";
  }
  if (have_shared) {
    // 20 TTT files + one Moshi LM triple; every shared file is a case.
    EXPECT_EQ(golden_cases(shared[0]).size(), 20u);
    EXPECT_EQ(golden_cases(shared[1]).size(), 1u);
  }
}

// The variants are not the shared files renamed: their tensor shapes differ.
TEST(GoldenCoverage, VariantsHaveOtherShapes) {
  const fs::path shared = mtt::test::golden_dir() / "ttt";
  if (!fs::is_directory(shared)) GTEST_SKIP() << "shared golden folder missing: " << shared;
  std::set<std::string> shared_shapes;
  for (const auto& c : golden_cases(shared.string())) {
    if (moshi_lm_files(c)) continue;
    GoldenFile g = GoldenFile::open(c);
    std::string sig = family_name(*detect_family(g));
    for (const auto& [k, t] : g.tensors())
      if (k.rfind("in.", 0) == 0) sig += " " + k + c10::str(t.sizes());
    shared_shapes.insert(sig);
  }
  int n = 0;
  for (const auto& c : golden_cases((mtt::test::fixtures_dir() / "golden_variants").string())) {
    if (moshi_lm_files(c)) continue;  // the LM triples: other configs by construction (README)
    GoldenFile g = GoldenFile::open(c);
    std::string sig = family_name(*detect_family(g));
    for (const auto& [k, t] : g.tensors())
      if (k.rfind("in.", 0) == 0) sig += " " + k + c10::str(t.sizes());
    EXPECT_EQ(shared_shapes.count(sig), 0u) << c << " has the shapes of a shared file";
    ++n;
  }
  EXPECT_GE(n, 8);
}

}  // namespace
