#include "infer/models.h"

#include <filesystem>
#include <set>

#include "core/error.h"
#include "core/parse_number.h"
#include "io/checkpoint.h"
#include "kernels/common/cuda_runtime_info.h"
#include "moshi/model_weights.h"
#include "nn/tensor_io.h"

namespace mtt::infer {

moshi::LMConfig tiny_lm_config(const mimi::MimiConfig& codec, const std::string& ttt_layers) {
  // The tiny Moshi(-TTT) sized to the tiny codec: its codebooks for the model and the user streams
  // (n_q = 2 * K, the tiny delays) and its codebook size.
  moshi::LMConfig c = moshi::LMConfig::tiny();
  c.card = codec.quantizer.bins;
  c.n_q = 2 * codec.num_codebooks;
  c.dep_q = codec.num_codebooks;
  c.ttt.enable = ttt_layers != "none";
  c.ttt.layers = ttt_layers.empty() ? "all" : ttt_layers;
  // The fork's DiT eta only advances the state a full mini-batch at a time; b = 1 makes the
  // streamed tiny model update at every frame.
  c.ttt.mini_batch_size = 1;
  return c;
}

std::string ttt_layers_of_checkpoint(const std::string& path) {
  io::Checkpoint ckpt = io::Checkpoint::open(path);
  const std::string pre = "transformer.layers.", mark = ".seq_modeling_block.ttt_layer.";
  std::set<int> layers;
  for (const auto& k : ckpt.keys()) {
    if (k.rfind(pre, 0) != 0) continue;
    const auto dot = k.find('.', pre.size());
    if (dot == std::string::npos || k.compare(dot, mark.size(), mark) != 0) continue;
    const auto n = parse_int64(k.substr(pre.size(), dot - pre.size()));
    if (!n || *n < 0 || *n > 100000) throw Error(path, k, "the layer index of this key is not a number");
    layers.insert(static_cast<int>(*n));
  }
  if (layers.empty()) return "none";
  std::string s;
  for (int l : layers) s += (s.empty() ? "" : ",") + std::to_string(l);
  return s;
}

void check_device_available(const at::Device& device, const std::string& flag) {
  if (!device.is_cuda()) return;
  // The CUDA runtime seen by our kernels' build (kernels/common/cuda_runtime_info.h): a CPU-only build or a
  // machine without a visible GPU gets one clear line instead of a LibTorch stack trace.
  if (!kernels::built_with_cuda())
    throw Error("", flag, "this build has no CUDA support (CUDA toolkit missing at configure time)", ErrorKind::Usage);
  if (kernels::cuda_device_count() <= 0)
    throw Error("", flag, "no CUDA device is visible (" + kernels::cuda_status() + ")", ErrorKind::Usage);
}

void move_lm_to(moshi::LMModel& lm, const at::Device& device) {
  // Names that share one tensor handle (fork duplicates) move once: the handle itself is replaced.
  for (auto& [name, t] : lm.named_parameters())
    if (t->defined() && t->device() != device) *t = t->to(device);
}

void check_codec_fits(const moshi::LMConfig& lm, const mimi::MimiConfig& codec, const std::string& config_file,
                      const std::string& codec_file) {
  // The LM embeds the codec's codes and the codec decodes the LM's: a mismatch would index out
  // of range deep inside an embedding or a codebook (issue 12 item 6).
  const std::string where = codec_file.empty() ? "the codec" : codec_file;
  if (lm.card != codec.quantizer.bins)
    throw Error(config_file, "card", "the LM's audio card " + std::to_string(lm.card) + " does not match " + where +
                                         "'s codebook size " + std::to_string(codec.quantizer.bins));
  if (lm.dep_q > codec.quantizer.n_q)
    throw Error(config_file, "dep_q", "the LM generates " + std::to_string(lm.dep_q) + " codebooks, " + where +
                                          " has " + std::to_string(codec.quantizer.n_q));
  if (lm.n_q - lm.dep_q > lm.dep_q)
    throw Error(config_file, "n_q", "the user stream needs " + std::to_string(lm.n_q - lm.dep_q) +
                                        " codebooks, more than the " + std::to_string(lm.dep_q) + " the codec encodes");
}

Models build_models(const ModelOptions& opt, std::ostream& log) {
  check_device_available(opt.device);
  Models m;
  const bool random = !opt.random_preset.empty();
  const bool tiny = opt.random_preset == "tiny";
  // Files the chosen model would not read are said, not dropped (a run would use other weights
  // than the user believes).
  auto unread = [](bool given, const char* flag, const char* why) {
    if (given) throw Error("", flag, why, ErrorKind::Usage);
  };
  unread(random && !opt.mimi_weight.empty(), "--mimi-weight",
         "not read with --tiny or --random-weights (their Mimi has random weights)");
  if (opt.checkpoint.empty()) {
    unread(!opt.lora_weight.empty(), "--lora-weight", "applies over a checkpoint's weights: give --checkpoint");
    unread(!opt.config.empty(), "--config", "describes a checkpoint's weights: give --checkpoint");
    unread(opt.step.has_value(), "--step", "picks a checkpoint of a run dir given with --checkpoint");
    unread(opt.fuse_lora, "--fuse-lora", "merges the LoRA adapters of a checkpoint: give --checkpoint");
  }
  mimi::MimiConfig mcfg = tiny ? mimi::MimiConfig::tiny() : mimi::MimiConfig::v0_1();
  moshi::LMConfig lcfg;
  std::optional<moshi::ModelSource> source;
  if (!opt.checkpoint.empty()) {
    moshi::ModelSourceOptions so;
    so.config = opt.config;
    so.moshi_weight = opt.moshi_weight;
    so.lora_weight = opt.lora_weight;
    so.model_folder = opt.model_folder;
    so.step = opt.step;
    so.fork_numerics = opt.fork_numerics;
    // --tiny with a plain file: the tiny model with the file's TTT layers (a base model file gives
    // the base model).
    if (tiny)
      so.fallback_config = tiny_lm_config(mcfg, ttt_layers_of_checkpoint(moshi::resolve_local_model_path(opt.checkpoint)));
    source = moshi::resolve_model_source(opt.checkpoint, so);
    lcfg = source->config;
    m.notes = source->notes;
    m.notes.insert(m.notes.end(), source->numerics.begin(), source->numerics.end());
    m.run_args = source->run_args;
    for (const auto& f : source->config_files)
      if (std::filesystem::path(f).filename() == "args.yaml") m.run_args_file = f;
    if (tiny && source->has_config) {
      // The run's own configuration; the random tiny codec is sized to its codebooks.
      mcfg.quantizer.bins = static_cast<int>(lcfg.card);
      mcfg.quantizer.n_q = static_cast<int>(std::max<int64_t>(mcfg.quantizer.n_q, lcfg.dep_q));
      mcfg.num_codebooks = static_cast<int>(lcfg.dep_q);
    }
  }
  if (random) {
    if (opt.need_codec) m.codec = std::make_unique<mimi::MimiModel>(mimi::MimiModel::random(mcfg, opt.seed));
    if (tiny && !source) {
      lcfg = tiny_lm_config(mcfg, opt.ttt_layers);
    } else if (!tiny) {
      if (source) throw Error("", "--random-weights", "takes no --checkpoint", ErrorKind::Usage);
      lcfg = moshi::LMConfig::preset(opt.random_preset);
      const std::string layers = opt.ttt_layers.empty() ? "none" : opt.ttt_layers;
      lcfg.ttt.enable = layers != "none";
      lcfg.ttt.layers = layers;
    }
  } else {
    if (!source)
      throw Error("", "--checkpoint", "a Moshi(-TTT) checkpoint is required (or --tiny)", ErrorKind::Usage);
    std::error_code ec;
    if (!source->tokenizer_path.empty() && std::filesystem::is_regular_file(source->tokenizer_path, ec))
      m.tokenizer_path = source->tokenizer_path;
    if (opt.need_codec) {
      const std::string mimi = !opt.mimi_weight.empty() ? opt.mimi_weight : source->mimi_path;
      if (mimi.empty())
        throw Error("", "--mimi-weight", "a Mimi checkpoint is required (or --tiny)", ErrorKind::Usage);
      m.codec = std::make_unique<mimi::MimiModel>(mimi::MimiModel::load(mimi, mcfg));
      check_codec_fits(lcfg, mcfg, source->config_files.empty() ? opt.checkpoint : source->config_files.front(), mimi);
    }
  }
  if (tiny && opt.need_codec)
    check_codec_fits(lcfg, mcfg, source && !source->config_files.empty() ? source->config_files.front() : "",
                     "the tiny codec");
  if (m.codec) m.codec->set_num_codebooks(static_cast<int>(lcfg.dep_q));
  m.lm = std::make_unique<moshi::LMModel>(lcfg);
  if (source) {
    const moshi::LoadOptions lo = moshi::load_options(*source, opt.dtype, opt.fuse_lora);
    auto rep = m.lm->load(moshi::weight_tensors(*source), lo, opt.checkpoint);
    m.label = "loaded " + source->describe() + ": " + rep.summary();
    if (tiny) m.label = "[tiny] tiny Mimi with random weights (seed " + std::to_string(opt.seed) + "); " + m.label;
  } else {
    m.lm->init_random(opt.seed, opt.dtype);
    m.label = tiny ? "[tiny] built-in tiny Moshi-TTT and tiny Mimi with random weights (seed " +
                         std::to_string(opt.seed) + "): the pipeline runs end to end, the speech is noise."
                   : "[random " + opt.random_preset + "] random weights (seed " + std::to_string(opt.seed) +
                         "), TTT layers: " + lcfg.ttt.layers + (lcfg.ttt.enable ? "" : " (none)") +
                         ": for speed measurements, the speech is noise.";
  }
  m.lm->set_requires_grad(false);
  if (opt.device.is_cuda()) {
    move_lm_to(*m.lm, opt.device);
    if (m.codec) m.codec->to(at::TensorOptions().device(opt.device));
  }
  log << m.label << "\n";
  for (const auto& n : m.notes) log << "  " << n << "\n";
  return m;
}

}  // namespace mtt::infer
