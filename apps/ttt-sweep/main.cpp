// ttt-sweep: experiment grids (run, or with --slurm a Slurm job array | list | summarize), the Moshi
// training entry (train) and its demo data (data speech). Flags in, library call, print.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <iostream>
#include <limits>
#include <optional>

#include "app_main.h"
#include "flags.h"
#include "core/error.h"
#include "experiments/moshi_training.h"
#include "experiments/registry.h"
#include "experiments/slurm.h"
#include "experiments/speech_set.h"
#include "experiments/sweep.h"

namespace ex = mtt::experiments;

namespace {

struct RunOptions {
  std::string spec;
  std::string out;
  int jobs = 1;
  int threads = 0;
  bool resume = false, force = false, reduced = false, json = false, no_progress = false;
  std::optional<int64_t> index;
  std::string device = "cpu";
  bool slurm = false, submit = false;
  ex::SlurmOptions slurm_opts;
};

void declare_run(CLI::App& app, RunOptions& o) {
  app.add_option("spec", o.spec, "experiment spec (YAML), e.g. experiments/gating.yaml")->required()->check(CLI::ExistingFile);
  app.add_option("--out", o.out, "output directory (default: runs/<spec name>)");
  app.add_option("--jobs", o.jobs, "grid points run in parallel")->check(mtt::app::int_range(1, 256));
  app.add_option("--threads", o.threads,
                 "LibTorch threads of each job (0: cores / jobs, so that jobs x threads <= cores; OMP_NUM_THREADS "
                 "caps it)")
      ->check(mtt::app::int_range(0, 256));
  auto* resume = app.add_flag("--resume", o.resume, "continue a sweep in --out: finished points are kept, unfinished ones rerun");
  app.add_flag("--force", o.force, "discard the results already in --out")->excludes(resume);
  app.add_flag("--reduced", o.reduced, "the spec's CI-sized grid");
  auto* index = app.add_option("--index", o.index, "run one grid point only (what a Slurm array task does)")
                    ->check(mtt::app::int_range(0, std::numeric_limits<int64_t>::max()));
  app.add_flag("--json", o.json, "print the summary and verdict as JSON");
  app.add_flag("--no-progress", o.no_progress, "no progress output on stderr");
  app.add_option("--device", o.device, "cpu, cuda or cuda:N (experiments that train on a device)")->capture_default_str();
  auto* slurm = app.add_flag("--slurm", o.slurm, "write a Slurm job-array script for the grid instead of running it")
                    ->excludes(index);
  // The Slurm settings only go into the scripts: without --slurm they would be silently ignored.
  app.add_flag("--submit", o.submit, "with --slurm: submit it with sbatch")->needs(slurm);
  app.add_option("--partition", o.slurm_opts.partition, "Slurm partition")->needs(slurm);
  app.add_option("--time", o.slurm_opts.time, "Slurm time limit per task")->needs(slurm);
  app.add_option("--cpus-per-task", o.slurm_opts.cpus_per_task, "Slurm CPUs per task")
      ->check(mtt::app::int_range(1, 4096))
      ->needs(slurm);
  app.add_option("--mem", o.slurm_opts.mem, "Slurm memory per task")->needs(slurm);
  app.add_option("--gres", o.slurm_opts.gres, "Slurm generic resources, e.g. gpu:1")->needs(slurm);
  app.add_option("--max-parallel", o.slurm_opts.max_parallel, "throttle: array tasks running at once (0: none)")
      ->check(mtt::app::int_range(0, 1'000'000))
      ->needs(slurm);
}

void print_result(const ex::SweepResult& r, bool json) {
  if (json) {
    nlohmann::json j = {{"summary_csv", r.summary_csv}, {"summary_json", r.summary_json},
                        {"points", r.points.size()}, {"reused", r.reused},
                        {"verdict", {{"status", r.verdict.status}, {"text", r.verdict.text},
                                     {"evidence", r.verdict.evidence}}}};
    std::cout << j.dump(2) << "\n";
  } else {
    std::cout << ex::format_sweep_table(r);
    std::cout << "summary: " << r.summary_csv << "\n";
  }
}

int run(RunOptions& o, const std::string& self) {
  ex::ExperimentSpec spec = ex::load_spec(o.spec);
  if (o.out.empty()) o.out = "runs/" + spec.name;
  if (o.slurm) {
    o.slurm_opts.exe = self;
    o.slurm_opts.reduced = o.reduced;
    o.slurm_opts.device = o.device;
    auto scripts = ex::make_slurm_scripts(spec, o.spec, o.out, o.slurm_opts);
    auto [array_path, summary_path] = ex::write_slurm_scripts(scripts, o.out);
    std::cout << "wrote " << array_path << " (" << scripts.tasks << " array tasks) and " << summary_path << "\n";
    if (o.submit) {
      auto [a, s] = ex::submit_slurm(array_path, summary_path);
      std::cout << "submitted array job " << a << ", summary job " << s << "\n";
    }
    return 0;
  }
  ex::SweepOptions so;
  so.out_dir = o.out;
  so.jobs = o.jobs;
  so.resume = o.resume;
  so.force = o.force;
  so.reduced = o.reduced;
  so.progress = !o.no_progress;
  so.device = o.device;
  const ex::ThreadPlan plan = ex::plan_threads(o.jobs, o.threads, ex::available_cores());
  if (!plan.warning.empty()) std::cerr << "ttt-sweep: warning: " << plan.warning << "\n";
  so.threads = plan.threads;
  if (o.index) so.only_index = static_cast<std::size_t>(*o.index);
  ex::SweepResult r = ex::run_sweep(spec, so);
  if (so.only_index) {
    std::cout << "grid point " << *o.index << " done in " << o.out << "\n";
    return 0;
  }
  print_result(r, o.json);
  return 0;
}

struct SpeechCmd {
  ex::SpeechSetOptions o;
  bool json = false;
};

void declare_speech(CLI::App& app, SpeechCmd& c) {
  app.add_option("--out", c.o.out_dir, "output directory (WAVs and data.jsonl)")->required();
  app.add_option("--n", c.o.n, "number of exchanges")->check(mtt::app::int_range(1, 100000));
  app.add_option("--seed", c.o.seed, "seed (sentences, voices, speed)")->check(mtt::app::uint64_value());
  app.add_option("--espeak", c.o.espeak, "espeak-ng executable");
  app.add_flag("--json", c.json, "print JSON");
}

int run_speech(const SpeechCmd& c) {
  ex::SpeechSetResult r = ex::make_speech_set(c.o);
  if (c.json) {
    std::cout << nlohmann::json{{"jsonl", r.jsonl}, {"files", r.wavs.size()}, {"seconds", r.total_seconds}}.dump(2)
              << "\n";
  } else {
    std::printf("wrote %zu stereo WAVs (%.1f s; channel 0 = Moshi, channel 1 = user) and %s\n", r.wavs.size(),
                r.total_seconds, r.jsonl.c_str());
  }
  return 0;
}

struct TrainCmd {
  ex::MoshiTrainOptions o;
  bool json = false, no_progress = false;
};

void declare_train(CLI::App& app, TrainCmd& c) {
  app.add_option("config", c.o.config, "moshi-finetune training YAML (its keys as they are, + ttt:, tbptt_chunk, context)")
      ->check(CLI::ExistingFile);
  app.add_option("--config", c.o.config, "the same, as a flag")->check(CLI::ExistingFile);
  app.add_option("--data", c.o.data, "moshi-finetune jsonl of stereo WAVs (default: the config's data.train_data)")
      ->check(CLI::ExistingFile);
  app.add_option("--eval-data", c.o.eval_data, "eval jsonl for do_eval (default: the config's data.eval_data)")
      ->check(CLI::ExistingFile);
  app.add_option("--out", c.o.out, "run directory (default: the config's run_dir)");
  app.add_option("--mimi-weight", c.o.mimi_weight,
                 "Mimi checkpoint (tokenizer-e351c8d8-checkpoint125.safetensors; default: moshi_paths.mimi_path)");
  app.add_flag("--tiny-mimi", c.o.tiny_mimi, "no Mimi weights: the tiny Mimi with random weights (pipeline check)");
  app.add_option("--codes-cache", c.o.codes_cache, "cache of encoded codes (default: <out>/codes)");
  app.add_option("--device", c.o.device, "cpu, cuda or cuda:N")->capture_default_str();
  app.add_flag("--resume", c.o.resume, "continue the run in the run dir from its newest checkpoint");
  app.add_flag("--json", c.json, "print the run summary as JSON");
  app.add_flag("--no-progress", c.no_progress, "no progress output on stderr");
}

int run_train(TrainCmd& c) {
  c.o.progress = !c.no_progress;
  ex::MoshiTrainResult r = ex::train_moshi_on_jsonl(c.o, std::cerr);
  if (c.json) {
    std::cout << r.summary.dump(2) << "\n";
  } else if (r.train.history.empty()) {
    std::printf("nothing to train: %s is complete (its checkpoint of step %d)\n", r.run_dir.c_str(), r.train.resumed_from);
  } else {
    if (r.train.resumed_from > 0) std::printf("resumed from step %d\n", r.train.resumed_from);
    std::printf("trained %zu steps on %lld windows (%s): loss %.4f -> %.4f\ncheckpoint: %s\n",
                r.train.history.size(), static_cast<long long>(r.windows), r.codec.c_str(),
                r.summary["first_loss"].get<double>(), r.summary["final_loss"].get<double>(),
                r.train.last_checkpoint.c_str());
    for (const auto& e : r.train.evals)
      std::printf("eval at step %d: eval_loss %.4f, perplexity %.4f\n", e.step, e.eval_loss, e.perplexity);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"ttt-sweep: run experiment grids on Moshi-TTT models and print their verdicts"};
  app.require_subcommand(1);
  RunOptions run_opts;
  auto* run_cmd = app.add_subcommand("run", "run a spec's grid (or write its Slurm script)");
  declare_run(*run_cmd, run_opts);
  auto* list_cmd = app.add_subcommand("list", "list the built-in experiment kinds");
  bool list_keys = false, list_json = false;
  list_cmd->add_flag("--keys", list_keys, "also the config keys each kind reads (base: and grid axes)");
  list_cmd->add_flag("--json", list_json, "print JSON: name, description and config keys of each kind");
  std::string sum_dir;
  bool sum_json = false;
  auto* sum_cmd = app.add_subcommand("summarize", "rebuild summary and verdict from a sweep's run dirs");
  sum_cmd->add_option("out", sum_dir, "sweep output directory")->required();
  sum_cmd->add_flag("--json", sum_json, "print JSON");
  auto* data_cmd = app.add_subcommand("data", "generate training data");
  data_cmd->require_subcommand(1);
  SpeechCmd speech;
  auto* speech_cmd = data_cmd->add_subcommand("speech", "a small espeak-ng speech set (stereo WAVs + moshi-finetune jsonl)");
  declare_speech(*speech_cmd, speech);
  TrainCmd train;
  auto* train_cmd = app.add_subcommand("train", "train the tiny Moshi-TTT on a moshi-finetune jsonl with truncated BPTT");
  train_cmd->footer("Flags override the config; keys of it that nothing acts on are listed in one 'ignored:' line.");
  declare_train(*train_cmd, train);
  return mtt::app::run(app, argc, argv, "ttt-sweep", [&] {
    if (*run_cmd) return run(run_opts, argv[0]);
    if (*list_cmd) {
      if (list_json) {
        nlohmann::json kinds = nlohmann::json::array();
        for (const auto& k : ex::builtin_experiments())
          kinds.push_back({{"name", k.name}, {"description", k.description}, {"keys", k.config.keys()}});
        std::cout << kinds.dump(2) << "\n";
        return 0;
      }
      for (const auto& k : ex::builtin_experiments()) {
        std::printf("%-16s %s\n", k.name.c_str(), k.description.c_str());
        if (!list_keys) continue;
        std::string keys;
        for (const auto& key : k.config.keys()) keys += (keys.empty() ? "" : ", ") + key;
        std::printf("%-16s keys: %s\n", "", keys.c_str());
      }
      return 0;
    }
    if (*speech_cmd) return run_speech(speech);
    if (*train_cmd) return run_train(train);
    if (*sum_cmd) print_result(ex::summarize_sweep(sum_dir), sum_json);
    return 0;
  });
}
