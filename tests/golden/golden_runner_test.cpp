// The runner takes the family and every setting from the file: renamed cases still run, a file
// with no family is an input error, and a reference that disagrees with our code fails (the
// checks can fail), including a gradient the reference says is exactly zero.
#include <gtest/gtest.h>

#include <filesystem>
#include <map>
#include <string>

#include "core/error.h"
#include "golden/golden_runner.h"
#include "nn/tensor_io.h"
#include "test_util.h"

namespace fs = std::filesystem;
using namespace mtt::golden;

namespace {

fs::path shared_file(const std::string& name) { return mtt::test::golden_dir() / "ttt" / (name + ".safetensors"); }

#define REQUIRE_SHARED(p) \
  if (!fs::exists(p)) GTEST_SKIP() << "golden file missing: " << (p)

// A copy of `src` with metadata edits (empty value: key removed) and tensor edits.
std::string rewrite(const mtt::test::TempDir& dir, const fs::path& src, const std::string& name,
                    const std::map<std::string, std::string>& meta_edits,
                    const std::map<std::string, at::Tensor>& tensor_edits = {}) {
  GoldenFile g = GoldenFile::open(src.string());
  std::map<std::string, std::string> meta = g.metadata();
  for (const auto& [k, v] : meta_edits) {
    if (v.empty()) {
      meta.erase(k);
    } else {
      meta[k] = v;
    }
  }
  std::map<std::string, at::Tensor> t = g.tensors();
  for (const auto& [k, v] : tensor_edits) t[k] = v;
  const std::string out = (dir / (name + ".safetensors")).string();
  mtt::nn::save_tensors(out, t, meta);
  return out;
}

int failing(const Report& r) {
  int n = 0;
  for (const auto& t : r.tensors) n += !t.pass;
  return n;
}

TEST(GoldenRunner, RenamedCasesRunByTheirReference) {
  const fs::path src = shared_file("vdit_ttt_mlp_op");
  REQUIRE_SHARED(src);
  mtt::test::TempDir dir;
  // The example name, and a name that says nothing: the reference metadata decides.
  for (const std::string c : {"vdit_ttt_mlp_op_odd", "my_case_7"}) {
    Report r = run_golden(rewrite(dir, src, c, {{"case", c}}));
    EXPECT_EQ(r.family, "vdit_op");
    EXPECT_EQ(r.case_name, c);
    EXPECT_TRUE(r.pass()) << r.to_json(2);
  }
}

TEST(GoldenRunner, WithoutReferenceTheCasePrefixDecides) {
  mtt::test::TempDir dir;
  const std::map<std::string, std::string> expect = {{"lmpt_ttt_mlp_dual", "lmpt_dual"},
                                                     {"lmpt_ttt_linear_layer_remainder", "lmpt_layer"},
                                                     {"vdit_ttt_linear_layer_rope1d", "vdit_layer"},
                                                     {"inplace_ttt_random_init_noclip", "inplace_ttt"},
                                                     {"fork_hybrid_ttt_path", "fork_hybrid_ttt_path"}};
  for (const auto& [name, family] : expect) {
    const fs::path src = shared_file(name);
    REQUIRE_SHARED(src);
    const std::string c = name + "_seed_42";
    Report r = run_golden(rewrite(dir, src, c, {{"case", c}, {"reference", ""}}));
    EXPECT_EQ(r.family, family) << name;
    EXPECT_TRUE(r.pass()) << r.to_json(2);
  }
}

TEST(GoldenRunner, NoFamilyIsAnInputErrorNamingTheFile) {
  const fs::path src = shared_file("ssm_gating");
  REQUIRE_SHARED(src);
  mtt::test::TempDir dir;
  GoldenFile g = GoldenFile::open(src.string());
  std::map<std::string, std::string> edits = {{"case", "something_else"}};
  for (const auto& [k, v] : g.metadata())
    if (k.rfind("reference", 0) == 0) edits[k] = "";
  const std::string p = rewrite(dir, src, "something_else", edits);
  try {
    run_golden(p);
    FAIL() << "no error";
  } catch (const mtt::Error& e) {
    EXPECT_EQ(e.kind(), mtt::ErrorKind::Input);
    EXPECT_EQ(e.file(), p);
    EXPECT_EQ(e.key(), "reference");
  }
  // In a folder run the file gets a report with the error; the others still run.
  fs::copy_file(shared_file("ssm_gating"), dir / "ssm_gating.safetensors");
  auto reps = run_golden_dir(dir.path().string());
  ASSERT_EQ(reps.size(), 2u);
  int errors = 0, passes = 0;
  for (const auto& r : reps) errors += !r.error.empty(), passes += r.pass();
  EXPECT_EQ(errors, 1);
  EXPECT_EQ(passes, 1);
}

TEST(GoldenRunner, APerturbedReferenceFails) {
  mtt::test::TempDir dir;
  // One output off by 1e-3 relative (100x the float32 tolerance, far below what a real bug does).
  const fs::path src = shared_file("lmpt_ttt_linear_layer_remainder");
  REQUIRE_SHARED(src);
  GoldenFile g = GoldenFile::open(src.string());
  at::Tensor y = g.tensor("out.y").clone();
  y.view(-1)[7] += 1e-3 * y.abs().max().item<double>();
  Report r = run_golden(rewrite(dir, src, "perturbed", {}, {{"out.y", y}}));
  EXPECT_FALSE(r.pass());
  ASSERT_EQ(failing(r), 1);
  for (const auto& t : r.tensors)
    if (!t.pass) {
      EXPECT_EQ(t.name, "out.y");
    }
  // A float64 port against the same file fails too (its tolerance is tighter).
  RunOptions o;
  o.dtype = at::kDouble;
  EXPECT_FALSE(run_golden(rewrite(dir, src, "perturbed64", {}, {{"out.y", y}}), o).pass());
}

TEST(GoldenRunner, AHyperParameterTakenFromTheFileMatters) {
  // Same tensors, the recorded mini-batch size changed: our layer is configured from the file, so
  // the outputs no longer match (or the file no longer fits): never silently the old value.
  const fs::path src = shared_file("vdit_ttt_mlp_layer_rope1d");
  REQUIRE_SHARED(src);
  mtt::test::TempDir dir;
  GoldenFile g = GoldenFile::open(src.string());
  std::string cfg = g.meta("config");
  const size_t p = cfg.find("mini_batch_size=8");
  ASSERT_NE(p, std::string::npos);
  cfg.replace(p, 17, "mini_batch_size=4");
  std::string shapes = g.meta("shapes");
  shapes.replace(shapes.find("b=8"), 3, "b=4");
  const std::string f = rewrite(dir, src, "b4", {{"config", cfg}, {"shapes", shapes}});
  bool failed = false;
  try {
    failed = !run_golden(f).pass();
  } catch (const mtt::Error& e) {
    failed = e.kind() == mtt::ErrorKind::Input;
  }
  EXPECT_TRUE(failed);
}

TEST(GoldenRunner, AGradientThatShouldBeExactlyZeroMustBe) {
  // inplace_ttt_zero_init: both target-generator factors are zero, so are their gradients and V̂.
  // Give W_target a tiny value: V̂ stays zero (conv = 0) but W_target's own gradient stays zero
  // too; make the conv tiny instead and the conv gradient is still zero (W_target = 0) while V̂
  // becomes non-zero: the exact-zero check catches a V̂ of 1e-12 that a relative check would pass.
  const fs::path src = shared_file("inplace_ttt_zero_init");
  REQUIRE_SHARED(src);
  mtt::test::TempDir dir;
  GoldenFile g = GoldenFile::open(src.string());
  at::Tensor conv = at::full_like(g.tensor("target_generator.conv1d.conv.weight"), 1e-9);
  at::Tensor wt = at::eye(g.tensor("target_generator.W_target.weight").size(0));
  Report r = run_golden(rewrite(dir, src, "leak", {},
                                {{"target_generator.conv1d.conv.weight", conv}, {"target_generator.W_target.weight", wt}}));
  EXPECT_FALSE(r.pass());
  bool vhat_failed = false, conv_grad_failed = false;
  for (const auto& t : r.tensors) {
    if (t.name == "out.V_hat") vhat_failed = !t.pass && t.exact_zero && t.max_abs < 1e-6;
    if (t.name == "grad.target_generator.conv1d.conv.weight") conv_grad_failed = !t.pass && t.exact_zero;
  }
  EXPECT_TRUE(vhat_failed) << r.to_json(2);
  EXPECT_TRUE(conv_grad_failed) << r.to_json(2);
}

TEST(GoldenRunner, MoshiTripleIsOneCase) {
  const fs::path dir = mtt::test::golden_dir() / "moshi";
  REQUIRE_SHARED(dir / "test_lm_out.safetensors");
  auto cases = golden_cases(dir.string());
  ASSERT_EQ(cases.size(), 1u);
  // Any file of the triple names the case.
  for (const char* f : {"test_lm_model", "test_lm_codes", "test_lm_out"}) {
    Report r = run_golden((dir / (std::string(f) + ".safetensors")).string());
    EXPECT_EQ(r.family, "moshi_lm");
    EXPECT_EQ(r.case_name, "test_lm");
    EXPECT_TRUE(r.pass()) << r.to_json(2);
    std::set<std::string> names;
    for (const auto& t : r.tensors) names.insert(t.name);
    for (const char* n : {"mask", "text_mask", "logits", "text_logits", "ce.audio0", "ce.text"}) EXPECT_TRUE(names.count(n)) << n;
  }
}

TEST(GoldenRunner, MoshiLogitsOffFail) {
  const fs::path dir = mtt::test::golden_dir() / "moshi";
  REQUIRE_SHARED(dir / "test_lm_out.safetensors");
  mtt::test::TempDir tmp;
  for (const char* f : {"test_lm_model", "test_lm_codes"}) fs::copy_file(dir / (std::string(f) + ".safetensors"), tmp / (std::string(f) + ".safetensors"));
  auto ref = mtt::nn::load_tensors((dir / "test_lm_out.safetensors").string());
  ref["text_logits"] = ref["text_logits"] * 1.001;
  mtt::nn::save_tensors((tmp / "test_lm_out.safetensors").string(), ref);
  Report r = run_golden((tmp / "test_lm_model.safetensors").string());
  EXPECT_FALSE(r.pass());
  for (const auto& t : r.tensors) {
    if (t.name == "text_logits" || t.name == "ce.text") {
      EXPECT_FALSE(t.pass) << t.name;
    }
    if (t.name == "logits" || t.name == "mask") {
      EXPECT_TRUE(t.pass) << t.name;
    }
  }
}

}  // namespace
