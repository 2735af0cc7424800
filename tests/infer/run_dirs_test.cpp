// Run dirs written by the forks' own code (tests/data/fork_runs: the moshi-finetune TTT fork;
// tests/data/inplace_runs: the In-Place TTT port; generators in tests/ref/). Every case folder with a
// ref.safetensors is a test case: the run-dir resolver must find the run's real configuration and
// TTT settings, and the model it loads (base + the run's tensors) must give the fork's logits.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include <c10/core/GradMode.h>

#include "core/error.h"
#include "infer/models.h"
#include "moshi/model_weights.h"
#include "io/safetensors.h"
#include "moshi/model_source.h"
#include "nn/tensor_io.h"
#include "test_util.h"
#include "ttt/variants.h"

namespace fs = std::filesystem;
using nlohmann::json;
using namespace mtt;

namespace {

struct Case {
  fs::path dir;    // <family>/<case>
  fs::path base;   // <family>/base/model.safetensors
  std::string name() const { return dir.parent_path().filename().string() + "/" + dir.filename().string(); }
};
void PrintTo(const Case& c, std::ostream* os) { *os << c.name(); }

std::vector<Case> cases() {
  std::vector<Case> out;
  for (const char* family : {"fork_runs", "inplace_runs"}) {
    const fs::path root = mtt::test::source_dir() / "tests" / "data" / family;
    if (!fs::is_directory(root)) continue;
    for (const auto& e : fs::directory_iterator(root))
      if (fs::is_regular_file(e.path() / "ref.safetensors")) out.push_back({e.path(), root / "base" / "model.safetensors"});
  }
  std::sort(out.begin(), out.end(), [](const Case& a, const Case& b) { return a.dir < b.dir; });
  return out;
}

json read_json(const fs::path& p) {
  std::ifstream f(p);
  return json::parse(f);
}

struct Ref {
  std::shared_ptr<const io::SafetensorsFile> file;
  at::Tensor get(const std::string& k) const { return nn::to_tensor(file->view(*file->find(k))); }
  bool has(const std::string& k) const { return file->find(k) != nullptr; }
};

Ref open_ref(const Case& c) { return {io::SafetensorsFile::open((c.dir / "ref.safetensors").string())}; }

moshi::ModelSource resolve(const Case& c, moshi::ForkNumerics numerics = moshi::ForkNumerics::automatic) {
  moshi::ModelSourceOptions o;
  o.moshi_weight = c.base.string();
  o.fork_numerics = numerics;
  return moshi::resolve_model_source((c.dir / "run").string(), o);
}

// max |a - b| over the positions `mask` keeps, relative to max |ref| there.
double rel_err(const at::Tensor& ours, const at::Tensor& ref, const at::Tensor& mask) {
  at::Tensor m = mask.to(at::kBool).unsqueeze(-1).expand_as(ref);
  at::Tensor r = ref.masked_select(m).to(at::kDouble), o = ours.masked_select(m).to(at::kDouble);
  return (o - r).abs().max().item<double>() / r.abs().max().item<double>();
}

}  // namespace

TEST(RunDirs, TheForksDataIsHere) {
  // The committed reference data (a missing folder would make every test below vacuous).
  EXPECT_GE(cases().size(), 9u);
}

TEST(RunDirs, ResolverReadsTheRunsRealConfiguration) {
  for (const auto& c : cases()) {
    SCOPED_TRACE(c.name());
    const moshi::ModelSource s = resolve(c);
    const json base_cfg = read_json(c.base.parent_path() / "config.json");
    EXPECT_TRUE(s.has_config);
    EXPECT_EQ(s.config.dim, base_cfg.at("dim").get<int64_t>());
    EXPECT_EQ(s.config.num_layers, base_cfg.at("num_layers").get<int64_t>());
    EXPECT_EQ(s.config.card, base_cfg.at("card").get<int64_t>());
    EXPECT_EQ(s.config.text_card, base_cfg.at("text_card").get<int64_t>());
    EXPECT_EQ(s.config.context, std::optional<int64_t>(base_cfg.at("context").get<int64_t>()));
    EXPECT_TRUE(s.config.ttt.enable);
    const json meta = read_json(c.dir / "meta.json");
    if (c.dir.parent_path().filename() == "fork_runs") {
      EXPECT_EQ(s.writer, moshi::RunWriter::ttt_fork);
      const json t = meta.at("settings").at("train_config_yaml").at("ttt");
      if (t.contains("mini_batch_size")) { EXPECT_EQ(s.config.ttt.mini_batch_size, t["mini_batch_size"].get<int64_t>()); }
      else { EXPECT_EQ(s.config.ttt.mini_batch_size, 16); }  // TTTArgs default
      if (t.contains("base_lr")) { EXPECT_DOUBLE_EQ(s.config.ttt.base_lr, t["base_lr"].get<double>()); }
      if (t.contains("initial_gating_alpha")) {
        EXPECT_DOUBLE_EQ(s.config.ttt.initial_gating_alpha, t["initial_gating_alpha"].get<double>());
      }
      if (t.contains("layers")) { EXPECT_EQ(s.config.ttt.layers, t["layers"].get<std::string>()); }
      if (t.contains("ttt_mlp_layers")) { EXPECT_EQ(s.config.ttt.ttt_mlp_layers, t["ttt_mlp_layers"].get<int64_t>()); }
      const json lora = meta.at("settings").at("train_config_yaml").value("lora", json::object());
      EXPECT_EQ(s.lora.enable, lora.value("enable", false));
      if (lora.value("enable", false)) { EXPECT_EQ(s.lora.rank, lora.at("rank").get<int64_t>()); }
    } else {
      EXPECT_EQ(s.writer, moshi::RunWriter::inplace_port);
      EXPECT_EQ(s.config.ttt.variant, moshi::TTTVariant::inplace);
      const json tc = meta.at("ttt_config.config.json");
      EXPECT_EQ(s.config.ttt.inplace_chunk_size, tc.at("chunk_size").get<int64_t>());
      EXPECT_DOUBLE_EQ(s.config.ttt.inplace_lr, tc.at("learning_rate").get<double>());
      EXPECT_EQ(s.config.ttt.inplace_activation, "gelu");  // the port's F.gelu (exact erf)
      EXPECT_EQ(s.config.ttt.resolve_layers(s.config.num_layers), (std::vector<int>{1, 3}));
    }
  }
}

TEST(RunDirs, AdapterOnlyRunWithoutBaseIsAOneLineUsageError) {
  for (const auto& c : cases()) {
    // No --moshi-weight: args.yaml's moshi_paths.moshi_path is used when it exists on this machine
    // (the generator's /tmp folder may still be there), else adapter-only runs are refused.
    moshi::ModelSourceOptions o;
    const moshi::ModelSource with_base = resolve(c);
    const bool named_base_exists = fs::is_regular_file(with_base.moshi_paths_moshi);
    try {
      const moshi::ModelSource s = moshi::resolve_model_source((c.dir / "run").string(), o);
      EXPECT_TRUE(!s.adapters_only || named_base_exists) << c.name();
      if (s.adapters_only) { EXPECT_EQ(s.base_path, with_base.moshi_paths_moshi); }
    } catch (const Error& e) {
      EXPECT_TRUE(with_base.adapters_only && !named_base_exists) << c.name() << ": " << e.what();
      EXPECT_EQ(e.kind(), ErrorKind::Usage) << e.what();
      EXPECT_NE(std::string(e.what()).find("--moshi-weight"), std::string::npos) << e.what();
      EXPECT_EQ(std::string(e.what()).find('\n'), std::string::npos);
    }
  }
}

class RunDir : public ::testing::TestWithParam<Case> {};

TEST_P(RunDir, ForwardEqualsTheForksLogits) {
  c10::NoGradGuard ng;
  const Case& c = GetParam();
  const moshi::ModelSource s = resolve(c);
  const Ref ref = open_ref(c);
  moshi::LMModel lm(s.config);
  lm.load(moshi::weight_tensors(s), moshi::load_options(s), s.path);
  const auto out = lm.forward(ref.get("codes"));
  EXPECT_TRUE(at::equal(out.mask, ref.get("mask").to(at::kBool)));
  EXPECT_LE(rel_err(out.logits, ref.get("logits"), ref.get("mask")), 1e-5);
  EXPECT_LE(rel_err(out.text_logits, ref.get("text_logits"), ref.get("text_mask")), 1e-5);
}

TEST_P(RunDir, OurDualFormEqualsTheForkPatchedToIt) {
  // ttt_mlp3 carries dual.*: the fork with its multi-layer query pass patched to the dual form.
  c10::NoGradGuard ng;
  const Case& c = GetParam();
  const Ref ref = open_ref(c);
  if (!ref.has("dual.logits")) GTEST_SKIP() << "no dual-form reference in this case";
  const moshi::ModelSource s = resolve(c, moshi::ForkNumerics::ours);
  EXPECT_EQ(s.config.ttt.multilayer_query, ttt::MultiLayerQuery::dual);
  moshi::LMModel lm(s.config);
  lm.load(moshi::weight_tensors(s), moshi::load_options(s), s.path);
  const auto out = lm.forward(ref.get("codes"));
  EXPECT_LE(rel_err(out.logits, ref.get("dual.logits"), ref.get("mask")), 1e-5);
  EXPECT_LE(rel_err(out.text_logits, ref.get("dual.text_logits"), ref.get("text_mask")), 1e-5);
}

TEST_P(RunDir, GatesAtZeroEqualTheForkWithItsGatesAtZero) {
  c10::NoGradGuard ng;
  const Case& c = GetParam();
  const Ref ref = open_ref(c);
  if (!ref.has("gate0.logits")) GTEST_SKIP() << "no gate-0 reference (In-Place runs have no gates)";
  const moshi::ModelSource s = resolve(c);
  moshi::LMModel lm(s.config);
  lm.load(moshi::weight_tensors(s), moshi::load_options(s), s.path);
  int gates = 0;
  for (auto& [name, t] : lm.named_parameters())
    if (name.find("ssm_gating.gating_alpha") != std::string::npos) {
      t->zero_();
      ++gates;
    }
  EXPECT_GT(gates, 0);
  const auto out = lm.forward(ref.get("codes"));
  EXPECT_LE(rel_err(out.logits, ref.get("gate0.logits"), ref.get("gate0.mask")), 1e-5);
  EXPECT_LE(rel_err(out.text_logits, ref.get("gate0.text_logits"), ref.get("gate0.text_mask")), 1e-5);
}

// Teacher-forced streaming as tests/data/fork_runs/README.md: one frame per forward_text call, the
// depformer per frame in its own state on the true tokens, undelayed as LMModel.forward.
moshi::LMOutput teacher_forced_stream(moshi::LMModel& m, const at::Tensor& codes) {
  const moshi::LMConfig& c = m.config();
  const int64_t B = codes.size(0), T = codes.size(2);
  const at::Tensor delayed = moshi::delayed_with_initial(c, codes);
  moshi::LMState st = m.new_state(B);
  std::vector<at::Tensor> tl, al;
  for (int64_t t = 0; t < T; ++t) {
    auto [h, text_logits] = m.forward_text(delayed.narrow(2, t, 1), &st);
    tl.push_back(text_logits);
    moshi::TransformerState dep = m.new_depformer_state(B);
    std::vector<at::Tensor> ks;
    for (int64_t k = 0; k < c.dep_q; ++k) ks.push_back(m.depformer_step(k, delayed.select(1, k).select(1, t + 1), h, dep));
    al.push_back(at::stack(ks, 1).unsqueeze(2));
  }
  moshi::LMOutput o;
  std::vector<int64_t> ad(c.delays.begin() + 1, c.delays.begin() + 1 + c.dep_q);
  o.logits = moshi::undelay_sequence(ad, at::cat(al, 2), std::nan("")).first;
  o.text_logits = moshi::undelay_sequence({c.delays[0]}, at::cat(tl, 2), std::nan("")).first;
  return o;
}

TEST_P(RunDir, StreamInForkModeEqualsTheForksStream) {
  // The numerics the resolver picks for a TTT-fork run (fork_restart for the 2-layer TTT-MLP,
  // fork_batch0 for TTTMLPMultiLayer) reproduce the fork's model.streaming() frame by frame.
  c10::NoGradGuard ng;
  const Case& c = GetParam();
  const Ref ref = open_ref(c);
  if (!ref.has("stream.logits")) GTEST_SKIP() << "no stream reference in this case";
  const moshi::ModelSource s = resolve(c);
  if (s.writer != moshi::RunWriter::ttt_fork)
    GTEST_SKIP() << "the In-Place port's legacy stream (per-frame conv target, w_down written per chunk; "
                    "tests/data/inplace_runs/README.md) is not a variant of ours";
  moshi::LMModel lm(s.config);
  lm.load(moshi::weight_tensors(s), moshi::load_options(s), s.path);
  const auto out = teacher_forced_stream(lm, ref.get("codes"));
  const std::string m = ref.has("stream.mask") ? "stream.mask" : "mask";
  const std::string tm = ref.has("stream.text_mask") ? "stream.text_mask" : "text_mask";
  EXPECT_LE(rel_err(out.logits, ref.get("stream.logits"), ref.get(m)), 1e-5);
  EXPECT_LE(rel_err(out.text_logits, ref.get("stream.text_logits"), ref.get(tm)), 1e-5);
}

TEST_P(RunDir, LoraMergedAtLoadEqualsTheForksLogits) {
  c10::NoGradGuard ng;
  const Case& c = GetParam();
  const moshi::ModelSource s = resolve(c);
  if (!s.lora.enable) GTEST_SKIP() << "no LoRA adapters in this run";
  const Ref ref = open_ref(c);
  moshi::LMModel lm(s.config);
  const auto rep = lm.load(moshi::weight_tensors(s), moshi::load_options(s, at::kFloat, /*fuse_lora=*/true), s.path);
  EXPECT_TRUE(rep.lora_fused);
  EXPECT_EQ(lm.lora_linears(), 0);
  const auto out = lm.forward(ref.get("codes"));
  EXPECT_LE(rel_err(out.logits, ref.get("logits"), ref.get("mask")), 1e-5);
  EXPECT_LE(rel_err(out.text_logits, ref.get("text_logits"), ref.get("text_mask")), 1e-5);
}

INSTANTIATE_TEST_SUITE_P(Data, RunDir, ::testing::ValuesIn(cases()), [](const ::testing::TestParamInfo<Case>& i) {
  std::string n = i.param.name();
  for (auto& ch : n)
    if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
  return n;
});

TEST(RunDirs, ARunThatDoesNotFitTheCodecIsOneLineNamingTheConfig) {
  // The runs' card 32 / text_card 48 do not fit the released Mimi (2048 bins): one line naming the
  // run's config.json and the key, instead of "index out of range in self" from an embedding.
  for (const auto& c : cases()) {
    const moshi::ModelSource s = resolve(c);
    try {
      infer::check_codec_fits(s.config, mimi::MimiConfig::v0_1(), s.config_files.front(), "mimi.safetensors");
      ADD_FAILURE() << c.name() << ": accepted";
    } catch (const Error& e) {
      EXPECT_EQ(e.key(), "card") << e.what();
      EXPECT_NE(e.file().find("config.json"), std::string::npos) << e.what();
    }
  }
}
