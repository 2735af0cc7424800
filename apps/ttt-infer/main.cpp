// ttt-infer: speech in, speech out with a Moshi-TTT checkpoint; gating overrides (seed 001);
// --score: teacher-forced scoring of codes or a stereo WAV (lib/infer/score.h).
#include <CLI/CLI.hpp>
#include <cstdio>
#include <iostream>

#include "app_main.h"
#include "flags.h"
#include "core/error.h"
#include "infer/infer.h"
#include "infer/score.h"

int main(int argc, char** argv) {
  CLI::App app{"ttt-infer: WAV in, WAV out with a Moshi-TTT model, with TTT gate overrides; --score INPUT "
               "OUTPUT.safetensors: teacher-forced logits and per-position losses"};
  mtt::infer::InferOptions o;
  mtt::infer::ScoreOptions so;
  bool score = false, json_out = false;
  std::string channels = "moshi,user";
  std::optional<double> alpha, multiplier;
  std::vector<std::string> per_layer;
  app.add_option("input", o.input,
                 "input audio (any format libsndfile reads, any rate); with --score: a codes .safetensors (key "
                 "`codes`, int64 [B, 1 + n_q, T]) or a stereo WAV")
      ->required();
  app.add_option("output", o.output, "output WAV (24 kHz mono), written atomically; with --score: OUTPUT.safetensors")
      ->required();
  app.add_flag("--score", score,
               "teacher-forced scoring instead of generation: LMOutput (logits, mask, text_logits, text_mask) and "
               "per-position text_loss / audio_loss [B, T] into OUTPUT.safetensors");
  app.add_flag("--streaming", so.streaming, "with --score: frame by frame through the streaming state");
  app.add_option("--channels", channels,
                 "with --score on a stereo WAV: which channel is whose (moshi,user: moshi-finetune's data; "
                 "user,moshi: ttt-infer --stereo-output)")
      ->check(CLI::IsMember({"moshi,user", "user,moshi"}))
      ->capture_default_str();
  app.add_option("--text-padding-weight", so.text_padding_weight,
                 "with --score: weight of text padding targets (moshi-finetune text_padding_weight; default: the "
                 "run's args.yaml, else 0.5)");
  app.add_option("--first-codebook-weight-multiplier", so.first_codebook_weight_multiplier,
                 "with --score: weight of Moshi's first codebook (moshi-finetune first_codebook_weight_multiplier; "
                 "default: the run's args.yaml, else 1)");
  app.add_flag("--json", json_out,
               "the run summary as JSON on stdout (frames, seconds, real-time factor, sampling, gates, outputs "
               "written); with --score: the scoring summary");
  app.add_flag("--tiny", o.tiny,
               "built-in tiny Moshi-TTT + tiny Mimi, random weights (no files needed); with --checkpoint: the tiny "
               "model with those weights (its TTT layers are those the file has)");
  app.add_option("--random-weights", o.random_preset,
                 "random weights of a preset instead of files, full-size Mimi (speed measurements)")
      ->check(CLI::IsMember({"medium_300m", "moshiko_7b"}));
  app.add_option("--ttt-layers", o.ttt_layers, "TTT layers of a random model: none, all, middle or e.g. 29,30,31");
  auto* dtype = app.add_option("--dtype", o.dtype, "LM compute dtype")->check(CLI::IsMember({"f32", "bf16"}));
  bool half = false;
  // moshi computes in bf16 by default and its --half picks float16; our kernels run f32 and bf16, so
  // here --half is the 16-bit type we have.
  app.add_flag("--half", half, "half precision: the LM in bf16 (--dtype bf16; moshi's default dtype)")->excludes(dtype);
  app.add_option("--checkpoint", o.checkpoint,
                 "Moshi-TTT weights: a safetensors file, a sharded index, a model folder (moshi's config.json) or a "
                 "moshi-finetune run dir of either fork (its config.json, args.yaml and adapters are read)");
  app.add_option("--hf-repo", o.hf_repo,
                 "local model folder, or a repo id (kyutai/moshiko-pytorch-bf16) found in the local Hugging Face "
                 "cache ($HF_HOME/hub, no download): config.json (moshi_name, mimi_name, tokenizer_name) or "
                 "model.safetensors + the released Mimi and tokenizer files");
  app.add_option("--moshi-weight", o.moshi_weight,
                 "base Moshi weights under an adapter-only run (default: its args.yaml moshi_paths.moshi_path); "
                 "without --checkpoint: the Moshi weights themselves");
  app.add_option("--lora-weight", o.lora_weight, "LoRA / adapter safetensors applied over the weights");
  app.add_flag("--fuse-lora", o.fuse_lora,
               "merge LoRA adapters into the weights at load (moshi's --fuse-lora); default: kept separate");
  app.add_option("--step", o.step, "run dirs: load checkpoint_<step> instead of the newest")
      ->check(mtt::app::int_range(0, std::numeric_limits<int64_t>::max()));
  app.add_option("--fork-numerics", o.fork_numerics,
                 "auto: the TTT fork's own numerics for runs it wrote (multi-layer query pass, stateless streaming); "
                 "fork: always; ours: the textbook dual form and a persistent streaming state")
      ->check(CLI::IsMember({"auto", "fork", "ours"}));
  app.add_option("--mimi-weight", o.mimi_weight, "Mimi weights (safetensors)");
  app.add_option("--tokenizer", o.tokenizer, "SentencePiece model (tokenizer_spm_32k_3.model) to print the text");
  app.add_option("--config,--lm-config", o.config, "moshi config.json (moshi's --config / --lm-config)");
  app.add_option("--device", o.device, "cpu, cuda or cuda:N");
  app.add_option("--seed", o.seed, "sampling seed")->check(mtt::app::uint64_value());
  app.add_option("--threads", o.threads, "CPU threads (0: one per core; 1 is fastest for the tiny model)")
      ->check(mtt::app::int_range(0, mtt::infer::kMaxThreads));
  // Unset sampling flags leave the checkpoint's lm_gen_config in force (moshi's run_inference).
  const char* from_ckpt = "checkpoint";
  app.add_option("--temp", o.temp, "audio sampling temperature (0: greedy)")
      ->check(mtt::app::number_range(0))
      ->default_str(from_ckpt);
  app.add_option("--temp-text", o.temp_text, "text sampling temperature (0: greedy)")
      ->check(mtt::app::number_range(0))
      ->default_str(from_ckpt);
  app.add_option("--top-k", o.top_k, "audio top-k (0: all)")->check(mtt::app::int_range(0, 1 << 20))->default_str(from_ckpt);
  app.add_option("--top-k-text", o.top_k_text, "text top-k (0: all)")
      ->check(mtt::app::int_range(0, 1 << 20))
      ->default_str(from_ckpt);
  app.footer("Sampling: --temp, --temp-text, --top-k and --top-k-text default to the checkpoint's config.json "
             "lm_gen_config (else 0.8, 0.7, 250, 25); each flag given replaces its own value.");
  app.add_option("--batch-size", o.batch_size,
                 "rows generated from the input, each sampled on its own (moshi's --batch-size); above 1, OUTPUT.wav "
                 "becomes OUTPUT-0.wav ... OUTPUT-(N-1).wav")
      ->check(mtt::app::int_range(1, mtt::infer::kMaxBatch));
  app.add_flag("--greedy", o.greedy, "argmax instead of sampling");
  app.add_option("--force-gating-alpha", alpha,
                 "replace alpha by A in every TTT gate (forward and backward); the branch is multiplied by tanh(A) "
                 "and added to the residual")
      ->check(mtt::app::number_range());
  app.add_option("--force-gating-alpha-layer", per_layer, "LAYER=A: per-layer form of --force-gating-alpha");
  app.add_option("--force-gating-multiplier", multiplier,
                 "replace tanh(alpha) itself: 0 = base Moshi, 1 = the full TTT branch (not with the alpha flags)")
      ->check(mtt::app::number_range());
  app.add_flag("--allow-nonfinite", o.allow_nonfinite,
               "run a model whose weights hold NaN or Inf (refused by default, naming the tensor)");
  app.add_option("--stereo-output", o.stereo_output, "also write input (left) + output (right)");
  app.add_option("--stats-json", o.stats_json, "write gate statistics, transcript, codes and timing as JSON");
  bool no_progress = false;
  app.add_flag("--no-progress", no_progress, "no progress bar on stderr");
  return mtt::app::run(app, argc, argv, "ttt-infer", [&] {
    o.progress = !no_progress;
    if (half) o.dtype = "bf16";
    o.gates.alpha = alpha;
    o.gates.multiplier = multiplier;
    for (const auto& s : per_layer) mtt::infer::add_layer_alpha(o.gates, s);
    if (!score && so.streaming) throw mtt::Error("", "--streaming", "only with --score", mtt::ErrorKind::Usage);
    // Scoring reads the rows of its input; a batch of copies would be silently ignored.
    if (score && o.batch_size != 1)
      throw mtt::Error("", "--batch-size", "not with --score (it scores the rows of its input)", mtt::ErrorKind::Usage);
    if (score) {
      so.channels = channels == "moshi,user" ? mtt::infer::StereoLayout::moshi_user : mtt::infer::StereoLayout::user_moshi;
      auto r = mtt::infer::run_score(o, so, std::cerr);
      if (json_out) {
        std::printf("%s\n", r.to_json().dump(2).c_str());
      } else {
        std::printf("text_loss: %.6f  audio_loss: %.6f  (moshi-finetune compute_loss_with_mask)\n", r.text_loss,
                    r.audio_loss);
        std::printf("B %lld  T %lld  %s  wall: %.3f s\n", static_cast<long long>(r.batch),
                    static_cast<long long>(r.frames), r.mode.c_str(), r.wall_seconds);
        std::printf("wrote %s\n", o.output.c_str());
      }
      return 0;
    }
    auto r = mtt::infer::run_inference(o, std::cerr);
    if (json_out) {
      std::printf("%s\n", r.summary_json().dump(2).c_str());
      return 0;
    }
    for (std::size_t b = 0; b < r.texts.size(); ++b) {
      const std::string& t = r.texts[b];
      std::printf("text%s: %s\n", r.texts.size() > 1 ? ("[" + std::to_string(b) + "]").c_str() : "",
                  t.empty() ? "(no tokenizer given; --stats-json has the token ids)" : t.c_str());
    }
    std::printf("frames: %lld  audio: %.2f s  wall: %.2f s  real-time factor: %.3f\n",
                static_cast<long long>(r.frames), r.audio_seconds, r.wall_seconds, r.rtf);
    for (const auto& p : r.outputs_written) std::printf("wrote %s\n", p.c_str());
    return 0;
  });
}
