// The LM against run dirs written by the moshi-finetune TTT fork's own code (tests/data/fork_runs,
// tests/ref/fork): the base Moshi overlaid with the run's tensors (the TTT layers' base weights
// under original_layer.*, LoRA adapters kept separate or merged) and the TTT settings of each
// case's args.yaml mapped by hand (the run-dir resolver is tested on its own). For each case:
// LMModel.forward logits, the teacher-forced stream in fork mode (fork_restart for 2 inner layers,
// fork_batch0 and the fork's query pass for 3) and the gates at 0, within 1e-5 of max|ref|; and
// for ttt_mlp3 the dual-form reference with our default variant.
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <filesystem>
#include <iostream>
#include <map>
#include <string>
#include <vector>

#include "moshi/config.h"
#include "moshi/hybrid.h"
#include "moshi/lm.h"
#include "moshi/schema.h"
#include "nn/tensor_io.h"
#include "test_util.h"

namespace mtt::moshi {
namespace {

namespace fs = std::filesystem;

fs::path runs_dir() { return test::source_dir() / "tests" / "data" / "fork_runs"; }

struct Case {
  std::string name;
  std::string layers = "middle";
  int64_t mini_batch_size = 16;
  double base_lr = 1.0;
  double gate = 0.1;
  int64_t mlp_layers = 2;
  int64_t lora_rank = 0;  // lora: {enable: true, rank, scaling: 2.0}
  std::string weights = "lora.safetensors";
};

const std::vector<Case>& cases() {
  static const std::vector<Case> c = {
      {"ttt_adapters"},
      {"ttt_merged", "middle", 16, 1.0, 0.1, 2, 0, "consolidated.safetensors"},
      {"lora_ttt", "middle", 16, 1.0, 0.1, 2, 4},
      {"ttt_other", "1,3", 8, 0.5, 0.05, 2},
      {"ttt_mlp3", "middle", 16, 1.0, 0.1, 3},
  };
  return c;
}

LMConfig config_of(const Case& k, bool fork_mode) {
  LMConfig c = LMConfig::from_json_file((runs_dir() / "base" / "config.json").string());
  c.ttt.enable = true;
  c.ttt.layers = k.layers;
  c.ttt.mini_batch_size = k.mini_batch_size;
  c.ttt.base_lr = k.base_lr;
  c.ttt.initial_gating_alpha = k.gate;
  c.ttt.ttt_mlp_layers = k.mlp_layers;
  if (fork_mode) {
    c.ttt.multilayer_query = ttt::fork_multilayer_query(k.mlp_layers);
    c.ttt.streaming_state = ttt::fork_streaming_state(k.mlp_layers);
  }
  return c;
}

// Base weights with the TTT layers' Moshi tensors under original_layer.* (the fork wraps the layer),
// overlaid with the run's file.
std::unique_ptr<LMModel> load_run(const Case& k, bool fork_mode, bool fuse_lora = false) {
  const LMConfig cfg = config_of(k, fork_mode);
  auto model = std::make_unique<LMModel>(cfg);
  std::map<std::string, at::Tensor> t;
  const auto ttt_layers = cfg.ttt.resolve_layers(cfg.num_layers);
  for (auto& [n, v] : nn::load_tensors((runs_dir() / "base" / "model.safetensors").string())) {
    std::string key = n;
    for (int l : ttt_layers) {
      const std::string p = "transformer.layers." + std::to_string(l) + ".";
      if (key.rfind(p, 0) == 0) key = p + "original_layer." + key.substr(p.size());
    }
    t[key] = v;
  }
  const fs::path run = runs_dir() / k.name / "run" / "checkpoints" / "checkpoint_000003" / "consolidated" / k.weights;
  for (auto& [n, v] : nn::load_tensors(run.string())) t[n] = v;
  LoadOptions opt;
  opt.dtype = at::kFloat;
  if (k.lora_rank > 0) {
    opt.lora.enable = true;
    opt.lora.rank = k.lora_rank;
    opt.lora.scaling = 2.0;
    opt.fuse_lora = fuse_lora;
  }
  LoadReport r = model->load(t, opt, run.string());
  EXPECT_TRUE(r.ok()) << r.summary();
  return model;
}

// max|a - ref| / max|ref| over the positions the reference marks valid.
double rel(const at::Tensor& a, const at::Tensor& ref, const at::Tensor& mask) {
  at::Tensor m = mask.unsqueeze(-1).expand_as(ref);
  at::Tensor d = (a.to(at::kDouble) - ref.to(at::kDouble)).abs().masked_fill(m.logical_not(), 0);
  return d.max().item<double>() / ref.to(at::kDouble).masked_fill(m.logical_not(), 0).abs().max().item<double>();
}

// Teacher-forced streaming as tests/data/fork_runs/README.md: forward_text one frame at a time, the
// depformer per frame in its own state on the true tokens; logits undelayed as LMModel.forward.
LMOutput teacher_forced_stream(LMModel& m, const at::Tensor& codes) {
  const LMConfig& c = m.config();
  const int64_t B = codes.size(0), T = codes.size(2);
  at::Tensor delayed = delayed_with_initial(c, codes);
  LMState st = m.new_state(B);
  std::vector<at::Tensor> tl, al;
  for (int64_t s = 0; s < T; ++s) {
    auto [h, text_logits] = m.forward_text(delayed.narrow(2, s, 1), &st);
    tl.push_back(text_logits);
    TransformerState dep = m.new_depformer_state(B);
    std::vector<at::Tensor> ks;
    for (int64_t k = 0; k < c.dep_q; ++k) ks.push_back(m.depformer_step(k, delayed.select(1, k).select(1, s + 1), h, dep));
    al.push_back(at::stack(ks, 1).unsqueeze(2));  // [B, dep_q, 1, card]
  }
  LMOutput o;
  std::vector<int64_t> ad(c.delays.begin() + 1, c.delays.begin() + 1 + c.dep_q);
  std::tie(o.logits, o.mask) = undelay_sequence(ad, at::cat(al, 2), std::nan(""));
  o.mask = o.mask & (codes.narrow(1, 1, c.dep_q) != -1);
  std::tie(o.text_logits, o.text_mask) = undelay_sequence({c.delays[0]}, at::cat(tl, 2), std::nan(""));
  o.text_mask = o.text_mask & (codes.narrow(1, 0, 1) != -1);
  return o;
}

void expect_close(const std::string& what, const LMOutput& o, const std::map<std::string, at::Tensor>& ref,
                  const std::string& prefix) {
  const double ea = rel(o.logits, ref.at(prefix + "logits"), ref.at("mask"));
  const double et = rel(o.text_logits, ref.at(prefix + "text_logits"), ref.at("text_mask"));
  std::cout << "[fork runs] " << what << ": audio " << ea << ", text " << et << " (max|d|/max|ref|)\n";
  EXPECT_LT(ea, 1e-5) << what;
  EXPECT_LT(et, 1e-5) << what;
}

class ForkRuns : public ::testing::TestWithParam<Case> {};

TEST_P(ForkRuns, ForwardStreamAndGatesAtZeroInForkMode) {
  const Case& k = GetParam();
  if (!fs::exists(runs_dir() / k.name)) GTEST_SKIP() << "tests/data/fork_runs/" << k.name << " missing";
  const auto ref = nn::load_tensors((runs_dir() / k.name / "ref.safetensors").string());
  const at::Tensor codes = ref.at("codes");
  at::NoGradGuard ng;
  {
    auto m = load_run(k, /*fork_mode=*/true);
    expect_close(k.name + " forward", m->forward(codes), ref, "");
    auto m2 = load_run(k, true);
    expect_close(k.name + " stream (fork mode)", teacher_forced_stream(*m2, codes), ref, "stream.");
    for (auto& layer : m2->transformer().layers())
      if (layer.hybrid) {
        layer.hybrid->forward_gate().gating_alpha.zero_();
        layer.hybrid->backward_gate().gating_alpha.zero_();
      }
    expect_close(k.name + " gates at 0", m2->forward(codes), ref, "gate0.");
  }
  if (k.lora_rank > 0) {
    auto mf = load_run(k, true, /*fuse_lora=*/true);
    expect_close(k.name + " forward, LoRA merged", mf->forward(codes), ref, "");
  }
  if (ref.count("dual.logits")) {
    auto md = load_run(k, /*fork_mode=*/false);
    expect_close(k.name + " forward, dual query (our default)", md->forward(codes), ref, "dual.");
    auto mf = load_run(k, true);
    LMOutput o = mf->forward(codes);
    EXPECT_GT(rel(o.logits, ref.at("dual.logits"), ref.at("mask")), 1e-3);  // the two variants differ
  } else {
    // Our persistent streaming is not the fork's: the references catch the difference.
    auto mp = load_run(k, /*fork_mode=*/false);
    LMOutput o = teacher_forced_stream(*mp, codes);
    EXPECT_GT(rel(o.text_logits, ref.at("stream.text_logits"), ref.at("text_mask")), 1e-3) << k.name;
  }
}

TEST_P(ForkRuns, EveryTensorTheForkWritesIsDeclaredWithItsShape) {
  // The audit's view (lib/moshi/schema.h): no key of the run's file is unknown or mis-shaped, the
  // LoRA adapters included (docs/checkpoint-keys.md §1.3-1.4), and only the fork's dead tensors are unused.
  const Case& k = GetParam();
  const fs::path run = runs_dir() / k.name / "run" / "checkpoints" / "checkpoint_000003" / "consolidated" / k.weights;
  if (!fs::exists(run)) GTEST_SKIP() << run << " missing";
  SchemaConfig sc = config_of(k, true).to_schema();
  sc.ttt.lora_rank = static_cast<int>(k.lora_rank);
  const ModelSchema s = declare_parameters(sc);
  int unused = 0;
  for (auto& [n, v] : nn::load_tensors(run.string())) {
    const ParamDecl* d = s.find(n);
    ASSERT_NE(d, nullptr) << n << " is not declared";
    EXPECT_EQ(d->shape, v.sizes().vec()) << n;
    if (!d->consumed) {
      ++unused;
      EXPECT_TRUE(n.find(".ttt.wo.") != std::string::npos || n.find(".ttt.post_norm.") != std::string::npos ||
                  n.find("backward_ssm_gating") != std::string::npos)
          << n;
    }
  }
  EXPECT_EQ(unused, 5 * static_cast<int>(config_of(k, true).ttt.resolve_layers(4).size()));
}

INSTANTIATE_TEST_SUITE_P(Cases, ForkRuns, ::testing::ValuesIn(cases()),
                         [](const ::testing::TestParamInfo<Case>& i) { return i.param.name; });

}  // namespace
}  // namespace mtt::moshi
