// moshi-finetune's training YAML read as it is and args.yaml written as it writes it. The reference
// is the TTT fork's own args.yaml files (tests/data/fork_runs/*/run/args.yaml, written by its
// TrainArgs.save), and the upstream example config.
#include <gtest/gtest.h>

#include <fstream>
#include <set>

#include "core/atomic_file.h"
#include "core/error.h"
#include "experiments/finetune_args.h"
#include "experiments/spec.h"
#include "experiments/train_config.h"
#include "test_util.h"

namespace mtt::experiments {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

const char* kCases[] = {"ttt_adapters", "ttt_merged", "lora_ttt", "ttt_other", "ttt_mlp3"};

fs::path fork_args(const char* c) { return test::source_dir() / "tests/data/fork_runs" / c / "run" / "args.yaml"; }

void key_paths(const json& j, const std::string& prefix, std::set<std::string>& out) {
  for (auto it = j.begin(); it != j.end(); ++it) {
    const std::string p = prefix + it.key();
    if (it.value().is_object() && !it.value().empty()) key_paths(it.value(), p + ".", out);
    else out.insert(p);
  }
}

TEST(FinetuneArgs, DefaultsHaveTheForksKeySetAndValues) {
  // ttt_adapters trained with defaults but for the keys listed here: the defaults with those set
  // must be the file the fork wrote, byte for byte (key set, values, yaml.dump layout).
  const fs::path f = fork_args("ttt_adapters");
  if (!fs::exists(f)) GTEST_SKIP() << "tests/data/fork_runs not present";
  json a = finetune_default_args();
  a["duration_sec"] = 2.0;
  a["max_steps"] = 3;
  a["optim"]["lr"] = 0.002;
  a["run_dir"] = "/tmp/mtt-fork-runs/ttt_adapters/run";
  a["moshi_paths"]["hf_repo_id"] = nullptr;
  a["moshi_paths"]["moshi_path"] = "/tmp/mtt-fork-runs/base/model.safetensors";
  a["moshi_paths"]["config_path"] = "/tmp/mtt-fork-runs/base/config.json";
  a["ttt"]["enable"] = true;
  EXPECT_EQ(finetune_args_yaml(a), read_file(f.string()));
}

TEST(FinetuneArgs, TheForksArgsYamlReadBackIsWrittenAgainUnchanged) {
  int n = 0;
  for (const char* c : kCases) {
    const fs::path f = fork_args(c);
    if (!fs::exists(f)) continue;
    const std::string text = read_file(f.string());
    FinetuneArgs a = read_finetune_args(text, f.string());
    EXPECT_EQ(finetune_args_yaml(a.args), text) << c;
    // Same key set as the fork's file (nothing added by reading, nothing lost).
    std::set<std::string> ours, theirs;
    key_paths(a.args, "", ours);
    key_paths(yaml_to_json(text, f.string()), "", theirs);
    EXPECT_EQ(ours, theirs) << c;
    ++n;
  }
  if (n == 0) GTEST_SKIP() << "tests/data/fork_runs not present";
}

TEST(FinetuneArgs, TrainerDefaultsAreMoshiFinetunes) {
  const json d = finetune_default_args();
  const TrainConfig c;  // the trainer's own defaults
  const TrainConfig r = train_config_from_json(d, "defaults");
  EXPECT_EQ(c.max_steps, d["max_steps"].get<int>());
  EXPECT_EQ(c.batch_size, d["batch_size"].get<int>());
  EXPECT_EQ(c.num_microbatches, d["num_microbatches"].get<int>());
  EXPECT_EQ(c.seed, d["seed"].get<uint64_t>());
  EXPECT_EQ(c.max_norm, d["max_norm"].get<double>());
  EXPECT_EQ(c.log_freq, d["log_freq"].get<int>());
  EXPECT_EQ(c.ckpt_freq, d["ckpt_freq"].get<int>());
  EXPECT_EQ(c.do_ckpt, d["do_ckpt"].get<bool>());
  EXPECT_EQ(c.num_ckpt_keep.value_or(-1), d["num_ckpt_keep"].get<int>());
  EXPECT_EQ(c.eval_freq, d["eval_freq"].get<int>());
  EXPECT_EQ(c.do_eval, d["do_eval"].get<bool>());
  EXPECT_EQ(c.lr, d["optim"]["lr"].get<double>());
  EXPECT_EQ(c.weight_decay, d["optim"]["weight_decay"].get<double>());
  EXPECT_EQ(c.pct_start, d["optim"]["pct_start"].get<double>());
  // Reading the defaults tree changes nothing.
  EXPECT_EQ(r.lr, c.lr);
  EXPECT_EQ(r.batch_size, c.batch_size);
  EXPECT_EQ(r.num_ckpt_keep, c.num_ckpt_keep);
}

TEST(FinetuneArgs, UpstreamExampleConfigIsAcceptedAndItsUnusedKeysListed) {
  // example/moshi_7B.yaml of kyutai-labs/moshi-finetune, as shipped (comments included).
  const std::string text = R"(# data
data:
  eval_data: '' # Optional Fill
  shuffle: true
  train_data: '' # Fill

# model
moshi_paths: 
  hf_repo_id: "kyutai/moshiko-pytorch-bf16"

full_finetuning: false # Activate lora.enable if partial finetuning
lora:
  enable: true # Set to False if full_finetuning is True
  rank: 128
  scaling: 2.
  ft_embed: false # Optional, set to True if you want to finetune the embedding layer

first_codebook_weight_multiplier: 100.
text_padding_weight: .5

# optim
duration_sec: 100
batch_size: 16
max_steps: 2000
gradient_checkpointing: true
optim:
  lr: 2e-6
  weight_decay: 0.1
  pct_start: 0.05

# other
seed: 0
log_freq: 1
eval_freq: 100
do_eval: false
do_ckpt: true
ckpt_freq: 100


save_adapters: true # Must be False if full_finetuning is True

run_dir: ""  # Fill

# This part is optional and can be kept commented out
# wandb:
#   project: "" # your wandb project name
#   run_name: "" # your wandb run name
#   key: "" # your wandb api key
#   offline: False
)";
  FinetuneArgs a = read_finetune_args(text, "moshi_7B.yaml");
  EXPECT_EQ(a.args["optim"]["lr"].get<double>(), 2e-6);
  EXPECT_TRUE(a.args["optim"]["lr"].is_number_float());
  EXPECT_EQ(a.args["duration_sec"].get<double>(), 100.0);
  EXPECT_TRUE(a.args["duration_sec"].is_number_float());  // a float field: 100 is written 100.0
  EXPECT_EQ(a.args["first_codebook_weight_multiplier"].get<double>(), 100.0);
  EXPECT_EQ(a.args["num_ckpt_keep"], 3);  // absent: the default
  const TrainConfig tc = train_config_from_json(a.args, a.file);
  EXPECT_EQ(tc.batch_size, 16);
  EXPECT_EQ(tc.max_steps, 2000);
  std::set<std::string> acted = {"data.train_data", "data.eval_data", "data.shuffle", "run_dir", "seed", "max_steps",
                                 "batch_size", "log_freq", "eval_freq", "do_eval", "do_ckpt", "ckpt_freq", "optim",
                                 "duration_sec", "first_codebook_weight_multiplier", "text_padding_weight"};
  const auto ignored = keys_not_acted_on(a, acted);
  const std::vector<std::string> expect = {"moshi_paths.hf_repo_id: kyutai/moshiko-pytorch-bf16",
                                           "full_finetuning: false",
                                           "lora.enable: true",
                                           "lora.rank: 128",
                                           "lora.scaling: 2.0",
                                           "lora.ft_embed: false",
                                           "gradient_checkpointing: true",
                                           "save_adapters: true"};
  EXPECT_EQ(ignored, expect);
}

TEST(FinetuneArgs, UnknownKeysAreErrorsWithFileAndLine) {
  auto err = [](const std::string& text) {
    try {
      read_finetune_args(text, "cfg.yaml");
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(err("seed: 0\nmax_step: 10\n").find("cfg.yaml: max_step (line 2): unknown key"), std::string::npos)
      << err("seed: 0\nmax_step: 10\n");
  EXPECT_NE(err("seed: 0\nmax_step: 10\n").find("did you mean 'max_steps'"), std::string::npos);
  EXPECT_NE(err("optim:\n  lr: 1.0e-3\n  wd: 0.1\n").find("optim.wd (line 3): unknown key"), std::string::npos)
      << err("optim:\n  lr: 1.0e-3\n  wd: 0.1\n");
  EXPECT_NE(err("optim: 3\n").find("optim (line 1): expected a mapping"), std::string::npos) << err("optim: 3\n");
  EXPECT_NE(err("do_eval: 1\n").find("do_eval"), std::string::npos);
  EXPECT_NE(err("seed: [1\n").find("cfg.yaml: line"), std::string::npos) << err("seed: [1\n");
  // Ours are accepted beside TrainArgs.
  EXPECT_EQ(err("tbptt_chunk: 16\ncontext: 8\ncheckpoint_group: 2\nnum_codebooks: 4\n"), "no error");
}

}  // namespace
}  // namespace mtt::experiments
