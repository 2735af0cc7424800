#include "infer/models.h"

#include <set>

#include "core/error.h"
#include "io/checkpoint.h"
#include "kernels/cuda_runtime_info.h"
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
    layers.insert(std::stoi(k.substr(pre.size(), dot - pre.size())));
  }
  if (layers.empty()) return "none";
  std::string s;
  for (int l : layers) s += (s.empty() ? "" : ",") + std::to_string(l);
  return s;
}

void check_device_available(const at::Device& device, const std::string& flag) {
  if (!device.is_cuda()) return;
  // The CUDA runtime seen by our kernels' build (kernels/cuda_runtime_info.h): a CPU-only build or a
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

namespace {

std::map<std::string, at::Tensor> checkpoint_tensors(const io::Checkpoint& ckpt) {
  // Zero-copy views (each keeps its mapped file alive); a moshi-finetune run dir or a sharded index
  // resolves to its files here, so the LM loader sees one flat name -> tensor map.
  std::map<std::string, at::Tensor> views;
  for (const auto& k : ckpt.keys()) views[k] = nn::to_tensor(ckpt.get(k));
  return views;
}

}  // namespace

Models build_models(const ModelOptions& opt, std::ostream& log) {
  check_device_available(opt.device);
  Models m;
  const bool random = !opt.random_preset.empty();
  const bool tiny = opt.random_preset == "tiny";
  mimi::MimiConfig mcfg = tiny ? mimi::MimiConfig::tiny() : mimi::MimiConfig::v0_1();
  moshi::LMConfig lcfg;
  if (random) {
    m.codec = std::make_unique<mimi::MimiModel>(mimi::MimiModel::random(mcfg, opt.seed));
    if (tiny) {
      // With a checkpoint, the tiny model's TTT layers are those the file carries (a base model
      // file gives the base model).
      const std::string layers = !opt.checkpoint.empty() ? ttt_layers_of_checkpoint(opt.checkpoint) : opt.ttt_layers;
      lcfg = tiny_lm_config(mcfg, layers);
    } else {
      lcfg = moshi::LMConfig::preset(opt.random_preset);
      const std::string layers = opt.ttt_layers.empty() ? "none" : opt.ttt_layers;
      lcfg.ttt.enable = layers != "none";
      lcfg.ttt.layers = layers;
    }
  } else {
    if (opt.mimi_weight.empty())
      throw Error("", "--mimi-weight", "a Mimi checkpoint is required (or --tiny)", ErrorKind::Usage);
    if (opt.checkpoint.empty())
      throw Error("", "--checkpoint", "a Moshi(-TTT) checkpoint is required (or --tiny)", ErrorKind::Usage);
    m.codec = std::make_unique<mimi::MimiModel>(mimi::MimiModel::load(opt.mimi_weight, mcfg));
    lcfg = opt.config.empty() ? moshi::LMConfig::moshiko_7b() : moshi::LMConfig::from_json_file(opt.config);
  }
  m.codec->set_num_codebooks(static_cast<int>(lcfg.dep_q));
  m.lm = std::make_unique<moshi::LMModel>(lcfg);
  if (!opt.checkpoint.empty()) {
    io::Checkpoint ckpt = io::Checkpoint::open(opt.checkpoint);
    moshi::LoadOptions lo;
    lo.dtype = opt.dtype;
    auto rep = m.lm->load(checkpoint_tensors(ckpt), lo, opt.checkpoint);
    m.label = "loaded " + opt.checkpoint + ": " + rep.summary();
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
    m.codec->to(at::TensorOptions().device(opt.device));
  }
  log << m.label << "\n";
  return m;
}

}  // namespace mtt::infer
