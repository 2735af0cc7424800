// `ttt-sweep train CONFIG.yaml` on a moshi-finetune YAML as it is, end to end through the app: the
// run dir, data and eval split come from the YAML, the keys nothing acts on are listed in one line,
// the run dir is moshi-finetune's (args.yaml with its key set, metrics jsonl, tb/ that the PyPI
// tensorboard package reads, checkpoints ttt-inspect opens), an existing run dir is refused unless
// overwrite_run_dir, and a run killed at a random step and resumed logs the uninterrupted losses.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>

#include <chrono>
#include <fstream>
#include <random>
#include <regex>
#include <set>
#include <thread>

#include "core/atomic_file.h"
#include "core/version.h"
#include "experiments/finetune_args.h"
#include "experiments/speech_set.h"
#include "experiments/spec.h"
#include "test_util.h"

extern char** environ;

namespace mtt::experiments {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using test::app_path;
using test::run_command;

std::vector<json> jsonl(const fs::path& p) {
  std::vector<json> out;
  if (!fs::exists(p)) return out;
  std::istringstream in(read_file(p.string()));
  std::string l;
  while (std::getline(in, l))
    if (!l.empty()) out.push_back(json::parse(l));
  return out;
}

// A two-file espeak-ng set and a moshi-finetune YAML around it (tiny shapes: ~0.3 s per step).
struct Fixture {
  test::TempDir dir;
  std::string set_jsonl;
  bool ok = false;
  std::string skip;

  Fixture() {
    if (find_executable("espeak-ng").empty()) {
      skip = "espeak-ng is not installed (apt-get install espeak-ng)";
      return;
    }
    for (const char* app : {"ttt-sweep", "ttt-inspect"})
      if (!fs::exists(app_path(app))) {
        skip = std::string(app) + " not built";
        return;
      }
    auto r = run_command(app_path("ttt-sweep").string() + " data speech --out " + (dir / "set").string() +
                         " --n 2 --seed 3 --json");
    if (r.status != 0) {
      skip = "data speech failed: " + r.err;
      return;
    }
    set_jsonl = json::parse(r.out)["jsonl"];
    ok = true;
  }

  // moshi-finetune's keys (example/moshi_7B.yaml's layout) with `extra` lines appended.
  std::string yaml(const std::string& run_dir, const std::string& extra = "") const {
    return "data:\n  eval_data: '" + set_jsonl + "'\n  shuffle: true\n  train_data: '" + set_jsonl +
           "'\n"
           "moshi_paths:\n  hf_repo_id: \"kyutai/moshiko-pytorch-bf16\"\n"
           "full_finetuning: false\nlora:\n  enable: true\n  rank: 128\n  scaling: 2.\n  ft_embed: false\n"
           "first_codebook_weight_multiplier: 2.\ntext_padding_weight: .5\n"
           "duration_sec: 1.28\nbatch_size: 1\ngradient_checkpointing: true\n"
           "optim:\n  lr: 2e-3\n  weight_decay: 0.1\n  pct_start: 0.05\n"
           "seed: 0\nlog_freq: 1\ndo_ckpt: true\nsave_adapters: true\n"
           "run_dir: \"" + run_dir + "\"\n"
           "wandb:\n  project: demo\n  offline: true\n"
           "tbptt_chunk: 8\ncontext: 8\n"
           "ttt:\n  enable: true\n  layers: all\n  mini_batch_size: 4\n  weight_lr_multiplier: 10.0\n" + extra;
  }
  std::string write(const std::string& name, const std::string& text) const {
    const std::string p = (dir / name).string();
    write_file_atomic(p, text);
    return p;
  }
};

std::string python_with(const std::string& module) {
  for (const std::string& py : {std::string(MTT_REF_PYTHON), std::string(MTT_PYTHON)}) {
    if (py.empty() || !fs::exists(py)) continue;
    if (run_command(py + " -c 'import " + module + "'").status == 0) return py;
  }
  return "";
}

// Every "dotted.key" of a YAML/JSON tree.
void key_paths(const json& j, const std::string& prefix, std::set<std::string>& out) {
  for (auto it = j.begin(); it != j.end(); ++it) {
    const std::string p = prefix + it.key();
    if (it.value().is_object() && !it.value().empty()) key_paths(it.value(), p + ".", out);
    else out.insert(p);
  }
}

TEST(FinetuneRun, MoshiFinetuneYamlAsItIs) {
  Fixture f;
  if (!f.ok) GTEST_SKIP() << f.skip;
  const fs::path run = f.dir / "run";
  const std::string cfg = f.write("train.yaml", f.yaml(run.string(), "max_steps: 4\nckpt_freq: 2\ndo_eval: true\neval_freq: 2\n"));
  const std::string sweep = app_path("ttt-sweep").string();
  auto r = run_command(sweep + " train " + cfg + " --tiny-mimi --no-progress");
  ASSERT_EQ(r.status, 0) << r.err;

  // One line lists what nothing acted on, the TTT fork's tooling keys included.
  size_t n_ignored = 0;
  std::string ignored;
  std::istringstream err(r.err);
  for (std::string l; std::getline(err, l);)
    if (l.rfind("ignored: ", 0) == 0) {
      ++n_ignored;
      ignored = l;
    }
  EXPECT_EQ(n_ignored, 1u) << r.err;
  for (const char* k : {"moshi_paths.hf_repo_id: kyutai/moshiko-pytorch-bf16", "full_finetuning: false",
                        "lora.enable: true", "lora.rank: 128", "gradient_checkpointing: true", "save_adapters: true",
                        "wandb.project: demo", "wandb.offline: true", "ttt.weight_lr_multiplier: 10.0"})
    EXPECT_NE(ignored.find(k), std::string::npos) << k << " not in: " << ignored;
  for (const char* k : {"optim", "seed", "max_steps", "data.", "run_dir", "tbptt_chunk", "duration_sec", "do_eval"})
    EXPECT_EQ(ignored.find(std::string(" ") + k), std::string::npos) << k << " is acted on: " << ignored;

  // args.yaml: moshi-finetune's (TTT fork's) key set, plus ours, with what the run used.
  const json args = yaml_to_json(read_file((run / "args.yaml").string()), "args.yaml");
  std::set<std::string> ours, fork;
  key_paths(args, "", ours);
  const fs::path fork_yaml = test::source_dir() / "tests/data/fork_runs/ttt_adapters/run/args.yaml";
  if (fs::exists(fork_yaml)) {
    key_paths(yaml_to_json(read_file(fork_yaml.string()), fork_yaml.string()), "", fork);
    std::set<std::string> missing, extra;
    for (const auto& k : fork)
      if (!ours.count(k)) missing.insert(k);
    for (const auto& k : ours)
      if (!fork.count(k) && k.rfind("ttt.", 0) != 0) extra.insert(k);
    EXPECT_TRUE(missing.empty()) << "args.yaml lacks " << *missing.begin();
    EXPECT_EQ(extra, (std::set<std::string>{"checkpoint_group", "context", "moshi_ttt.commit", "moshi_ttt.version",
                                             "num_codebooks", "tbptt_chunk"}));
  }
  EXPECT_EQ(args["run_dir"], run.string());
  EXPECT_EQ(args["data"]["train_data"], f.set_jsonl);
  EXPECT_EQ(args["max_steps"], 4);
  EXPECT_EQ(args["optim"]["lr"], 0.002);
  EXPECT_EQ(args["lora"]["enable"], false);  // what was done: no LoRA
  EXPECT_EQ(args["moshi_ttt"]["version"], version());
  EXPECT_EQ(args["moshi_ttt"]["commit"], git_commit());
  // The same bytes as our writer gives (yaml.dump's layout).
  EXPECT_EQ(finetune_args_yaml(args), read_file((run / "args.yaml").string()));

  // Metrics and eval lines; result.json names the build.
  const auto tl = jsonl(run / "metrics.train.jsonl");
  ASSERT_EQ(tl.size(), 4u);
  EXPECT_TRUE(tl[1].contains("eta_in_seconds") && tl[1].contains("prob_real_tokens") && tl[1].contains("at"));
  EXPECT_GT(tl[1]["prob_real_tokens"].get<double>(), 0.5);
  EXPECT_LE(tl[1]["prob_real_tokens"].get<double>(), 1.0);
  const auto ev = jsonl(run / "metrics.eval.jsonl");
  ASSERT_EQ(ev.size(), 2u);
  EXPECT_EQ(ev[0]["step"], 2);
  EXPECT_EQ(ev[1]["step"], 4);
  EXPECT_TRUE(std::isfinite(ev[1]["eval_loss"].get<double>()));
  const json result = json::parse(read_file((run / "result.json").string()));
  EXPECT_EQ(result["moshi_ttt"]["commit"], git_commit());

  // TensorBoard reads tb/ (the PyPI package's loader checks every record's CRC32C).
  if (const std::string py = python_with("tensorboard"); !py.empty()) {
    const std::string script = f.write("tb.py",
                                       "import sys, glob\n"
                                       "from tensorboard.backend.event_processing import event_file_loader\n"
                                       "from tensorboard.backend.event_processing.event_accumulator import EventAccumulator\n"
                                       "for p in sorted(glob.glob(sys.argv[1] + '/events.out.tfevents.*')):\n"
                                       "    list(event_file_loader.LegacyEventFileLoader(p).Load())\n"
                                       "ea = EventAccumulator(sys.argv[1]); ea.Reload()\n"
                                       "for tag in ('train.loss', 'train.lr', 'eval.eval_loss'):\n"
                                       "    print(tag, ' '.join('%d:%.9g' % (e.step, e.value) for e in ea.Scalars(tag)))\n"
                                       "print('tags', len(ea.Tags()['scalars']))\n");
    auto tb = run_command(py + " " + script + " " + (run / "tb").string());
    ASSERT_EQ(tb.status, 0) << tb.err;
    auto expect_series = [&](const std::string& tag, const std::vector<json>& lines, const char* key) {
      std::string s = tag;
      for (const auto& l : lines) {
        char b[64];
        std::snprintf(b, sizeof b, " %d:%.9g", l["step"].get<int>(), static_cast<double>(l[key].get<float>()));
        s += b;
      }
      EXPECT_NE(tb.out.find(s + "\n"), std::string::npos) << s << "\n" << tb.out;
    };
    expect_series("train.loss", tl, "loss");
    expect_series("train.lr", tl, "lr");
    expect_series("eval.eval_loss", ev, "eval_loss");
    EXPECT_NE(tb.out.find("tags 18"), std::string::npos) << tb.out;  // 15 train + 3 eval metrics
  } else {
    std::cout << "[  NOTE    ] tensorboard readback skipped: no Python with the tensorboard package\n";
  }

  // The same command again: refused, nothing touched.
  const auto before = read_file((run / "metrics.train.jsonl").string());
  r = run_command(sweep + " train " + cfg + " --tiny-mimi --no-progress");
  EXPECT_EQ(r.status, 64) << r.err;
  EXPECT_NE(r.err.find("overwrite_run_dir"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("--resume"), std::string::npos) << r.err;
  EXPECT_EQ(read_file((run / "metrics.train.jsonl").string()), before);

  // ttt-inspect reads the run dir (the tiny hybrid from config.json), the same with args.yaml as without.
  auto a = run_command(app_path("ttt-inspect").string() + " " + run.string() + " --json");
  EXPECT_TRUE(a.status == 0 || a.status == 1) << a.err;
  const json audit = json::parse(a.out);
  EXPECT_EQ(audit["config"]["values"]["ttt"]["variant"], "fork_hybrid");
  EXPECT_NE(audit["description"].get<std::string>().find("step 4"), std::string::npos) << audit["description"];
  // What the audit finds in a trained tiny hybrid (the quickstart's step 4) is what the model is:
  // the backward gate of every TTT layer unused (the causal hybrid runs forward only) and frozen at
  // its init, and wo / post_norm unused (the fork's output path skips them); nothing else.
  const std::regex expected_unused(R"(transformer\.layers\.[0-3]\.seq_modeling_block\.(backward_ssm_gating\.gating_alpha|ttt_layer\.ttt\.(wo|post_norm)\.(weight|bias)))");
  int backward_unused = 0, backward_frozen = 0;
  for (const auto& e : audit["unused"]["entries"]) {
    const std::string k = e["name"];
    EXPECT_TRUE(std::regex_match(k, expected_unused)) << "unexpected unused finding " << k;
    backward_unused += k.find("backward_ssm_gating") != std::string::npos;
  }
  for (const auto& e : audit["frozen"]["entries"]) {
    const std::string k = e["name"];
    EXPECT_TRUE(std::regex_match(k, expected_unused)) << "unexpected frozen finding " << k;
    backward_frozen += k.find("backward_ssm_gating") != std::string::npos;
  }
  EXPECT_EQ(backward_unused, 4);
  EXPECT_EQ(backward_frozen, 4);
  EXPECT_EQ(audit["problems"].size(), 2u) << audit["problems"].dump();
  fs::copy(run, f.dir / "bare", fs::copy_options::recursive);
  fs::remove(f.dir / "bare" / "args.yaml");
  auto b = run_command(app_path("ttt-inspect").string() + " " + (f.dir / "bare").string() + " --json");
  json ja = audit, jb = json::parse(b.out);
  // The resolver names our run (writer moshi-ttt, TTT settings from config.json) and lists args.yaml
  // among the files it read; every finding and value is the same as without args.yaml.
  const std::string resolved = ja["config"]["resolved"].dump();
  EXPECT_NE(resolved.find("configuration: moshi-ttt " + run.string()), std::string::npos) << resolved;
  EXPECT_NE(resolved.find("TTT settings from " + run.string() + "/checkpoints/checkpoint_000004/consolidated/config.json"),
            std::string::npos)
      << resolved;
  for (json* j : {&ja, &jb}) {
    j->erase("seconds");
    (*j)["config"].erase("resolved");
    (*j)["config"].erase("source");
  }
  std::string sa = ja.dump(), sb = jb.dump();
  for (size_t p; (p = sb.find((f.dir / "bare").string())) != std::string::npos;)
    sb.replace(p, (f.dir / "bare").string().size(), run.string());
  EXPECT_TRUE(sa == sb) << "the audit differs with args.yaml present";

  // Flags override the YAML.
  r = run_command(sweep + " train " + cfg + " --tiny-mimi --no-progress --out " + (f.dir / "other").string() +
                  " --codes-cache " + (run / "codes").string());
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(yaml_to_json(read_file((f.dir / "other" / "args.yaml").string()), "")["run_dir"], (f.dir / "other").string());
}

TEST(FinetuneRun, OverwriteRunDirReplacesAnOlderRun) {
  Fixture f;
  if (!f.ok) GTEST_SKIP() << f.skip;
  const fs::path run = f.dir / "run";
  const std::string sweep = app_path("ttt-sweep").string();
  auto r = run_command(sweep + " train " + f.write("a.yaml", f.yaml(run.string(), "max_steps: 4\nckpt_freq: 2\n")) +
                       " --tiny-mimi --no-progress");
  ASSERT_EQ(r.status, 0) << r.err;
  r = run_command(sweep + " train " +
                  f.write("b.yaml", f.yaml(run.string(), "max_steps: 2\nckpt_freq: 2\noverwrite_run_dir: true\n")) +
                  " --tiny-mimi --no-progress");
  ASSERT_EQ(r.status, 0) << r.err;
  // The older run's step-4 checkpoint is gone: the run dir holds the new run only.
  EXPECT_FALSE(fs::exists(run / "checkpoints" / "checkpoint_000004"));
  EXPECT_TRUE(fs::exists(run / "checkpoints" / "checkpoint_000002"));
  EXPECT_EQ(jsonl(run / "metrics.train.jsonl").size(), 2u);
  auto a = run_command(app_path("ttt-inspect").string() + " " + run.string() + " --json");
  EXPECT_NE(json::parse(a.out)["description"].get<std::string>().find("step 2"), std::string::npos) << a.out;
}

TEST(FinetuneRun, KilledAtARandomStepAndResumedGivesTheSameLosses) {
  Fixture f;
  if (!f.ok) GTEST_SKIP() << f.skip;
  const int steps = 6;
  const std::string extra = "max_steps: 6\nckpt_freq: 2\ndo_eval: true\neval_freq: 3\n";
  const std::string sweep = app_path("ttt-sweep").string();
  const fs::path whole = f.dir / "whole", killed = f.dir / "killed";
  auto r = run_command(sweep + " train " + f.write("w.yaml", f.yaml(whole.string(), extra)) + " --tiny-mimi --no-progress");
  ASSERT_EQ(r.status, 0) << r.err;
  const std::string cfg = f.write("k.yaml", f.yaml(killed.string(), extra));

  std::mt19937 rng(std::random_device{}());
  const int kill_after = 1 + static_cast<int>(rng() % (steps - 1));  // logged lines before the kill
  SCOPED_TRACE("SIGKILL after " + std::to_string(kill_after) + " logged steps");
  std::vector<std::string> argv_s = {sweep, "train", cfg, "--tiny-mimi", "--no-progress",
                                     "--codes-cache", (whole / "codes").string()};
  std::vector<char*> argv;
  for (auto& s : argv_s) argv.push_back(s.data());
  argv.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
  posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
  pid_t pid = 0;
  ASSERT_EQ(posix_spawn(&pid, argv[0], &fa, nullptr, argv.data(), environ), 0);
  posix_spawn_file_actions_destroy(&fa);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  int status = 0;
  bool exited = false;
  while (jsonl(killed / "metrics.train.jsonl").size() < static_cast<size_t>(kill_after)) {
    if (waitpid(pid, &status, WNOHANG) == pid) {
      exited = true;
      break;
    }
    ASSERT_LT(std::chrono::steady_clock::now(), deadline) << "the run never reached step " << kill_after;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_FALSE(exited) << "the run ended before the kill";
  kill(pid, SIGKILL);
  waitpid(pid, &status, 0);

  r = run_command(sweep + " train " + cfg + " --tiny-mimi --no-progress --resume");
  ASSERT_EQ(r.status, 0) << r.err;
  const auto a = jsonl(whole / "metrics.train.jsonl"), b = jsonl(killed / "metrics.train.jsonl");
  ASSERT_EQ(b.size(), a.size());
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(b[i]["step"], a[i]["step"]);
    EXPECT_EQ(b[i]["loss"], a[i]["loss"]) << "step " << i + 1;
    EXPECT_EQ(b[i]["lr"], a[i]["lr"]);
    EXPECT_EQ(b[i]["prob_real_tokens"], a[i]["prob_real_tokens"]);
    EXPECT_EQ(b[i]["ttt_gating_alpha_raw"], a[i]["ttt_gating_alpha_raw"]);
  }
  const auto ea = jsonl(whole / "metrics.eval.jsonl"), eb = jsonl(killed / "metrics.eval.jsonl");
  ASSERT_EQ(eb.size(), ea.size());
  for (size_t i = 0; i < ea.size(); ++i) EXPECT_EQ(eb[i]["eval_loss"], ea[i]["eval_loss"]);
  // The same weights at the end.
  EXPECT_EQ(read_file((killed / "checkpoints/checkpoint_000006/consolidated/consolidated.safetensors").string()),
            read_file((whole / "checkpoints/checkpoint_000006/consolidated/consolidated.safetensors").string()));
}

TEST(FinetuneRun, DeviceFlag) {
  Fixture f;
  if (!f.ok) GTEST_SKIP() << f.skip;
  const std::string sweep = app_path("ttt-sweep").string();
  const std::string cfg = f.write("d.yaml", f.yaml((f.dir / "run").string(), "max_steps: 2\n"));
  auto r = run_command(sweep + " train " + cfg + " --tiny-mimi --no-progress --device tpu");
  EXPECT_EQ(r.status, 64) << r.err;
  EXPECT_NE(r.err.find("--device"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(f.dir / "run"));  // refused before anything is written
  // A sweep kind that trains on the CPU only says so.
  r = run_command(sweep + " run " + (test::source_dir() / "experiments/causal-leak.yaml").string() +
                  " --reduced --no-progress --device cuda --out " + (f.dir / "sw").string());
  EXPECT_EQ(r.status, 64) << r.err;
  EXPECT_NE(r.err.find("CPU only"), std::string::npos) << r.err;

  r = run_command(sweep + " train " + cfg + " --tiny-mimi --no-progress --device cuda --json --out " +
                  (f.dir / "gpu").string());
  if (r.status == 64 && r.err.find("no CUDA device") != std::string::npos)
    GTEST_SKIP() << "no GPU: " << r.err;
  // With a GPU: the same run on the CPU and on CUDA agree to float32 tolerance.
  ASSERT_EQ(r.status, 0) << r.err;
  auto c = run_command(sweep + " train " + cfg + " --tiny-mimi --no-progress --json --out " + (f.dir / "cpu").string());
  ASSERT_EQ(c.status, 0) << c.err;
  const json g = json::parse(r.out), p = json::parse(c.out);
  EXPECT_EQ(g["device"], "cuda:0");
  EXPECT_NEAR(g["final_loss"].get<double>(), p["final_loss"].get<double>(), 1e-3 * std::abs(p["final_loss"].get<double>()));
  const auto gl = jsonl(f.dir / "gpu" / "metrics.train.jsonl");
  EXPECT_GT(gl.back()["peak_allocated_mem"].get<double>(), 0.0);  // the CUDA allocator's figure
}

}  // namespace
}  // namespace mtt::experiments
