// Seed 001's question answered by construction: `--force-gating-alpha 0` on a Moshi-TTT checkpoint
// must give exactly what the base Moshi model gives when it is built on its own, without TTT layers,
// from the same base weights (docs/ttt.md §4: the branch is tanh(alpha) * TTT(x) added to the
// residual, so tanh(0) = 0 removes it, and the backward gate is never called in a causal model).
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>

#include "infer/infer.h"
#include "infer/models.h"
#include "kernels/common/cuda_runtime_info.h"
#include "mimi/config.h"
#include "moshi/lm.h"
#include "nn/tensor_io.h"
#include "test_util.h"

namespace {

namespace fs = std::filesystem;
using mtt::test::TempDir;

void write_chirp(const fs::path& p, double seconds, int rate) {
  std::vector<float> pcm(static_cast<size_t>(seconds * rate));
  for (size_t i = 0; i < pcm.size(); ++i) {
    const double t = static_cast<double>(i) / rate;
    pcm[i] = static_cast<float>(0.3 * std::sin(2 * M_PI * (200 + 400 * t) * t));
  }
  std::ofstream f(p, std::ios::binary);
  auto u32 = [&](uint32_t v) { f.write(reinterpret_cast<const char*>(&v), 4); };
  auto u16 = [&](uint16_t v) { f.write(reinterpret_cast<const char*>(&v), 2); };
  f.write("RIFF", 4);
  u32(36 + 4 * static_cast<uint32_t>(pcm.size()));
  f.write("WAVEfmt ", 8);
  u32(16);
  u16(3);  // IEEE float
  u16(1);
  u32(rate);
  u32(4 * rate);
  u16(4);
  u16(32);
  f.write("data", 4);
  u32(4 * static_cast<uint32_t>(pcm.size()));
  f.write(reinterpret_cast<const char*>(pcm.data()), static_cast<std::streamsize>(4 * pcm.size()));
}

std::string slurp(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// The fork layout (docs/checkpoint-keys.md §1.2) keeps a hybrid layer's Moshi weights under
// original_layer.* (and again under seq_modeling_block.original_layer.*); the base model stores them
// under the layer itself.
std::map<std::string, at::Tensor> base_model_tensors(const std::map<std::string, at::Tensor>& hybrid) {
  std::map<std::string, at::Tensor> base;
  const std::string ol = "original_layer.";
  for (const auto& [k, t] : hybrid) {
    if (k.find(".seq_modeling_block.") != std::string::npos) continue;
    std::string name = k;
    if (auto at = name.find(ol); at != std::string::npos) name.erase(at, ol.size());
    base[name] = t.contiguous();
  }
  return base;
}

struct InferRun {
  mtt::infer::InferResult result;
  std::string wav, log;
};

InferRun run(const TempDir& dir, const std::string& name, const std::string& checkpoint,
        const mtt::infer::GateOverride& gates) {
  mtt::infer::InferOptions o;
  o.input = (dir / "in.wav").string();
  o.output = (dir / (name + ".wav")).string();
  o.tiny = true;
  o.checkpoint = checkpoint;
  o.seed = 1234;  // sampling on (the default temperatures): equal draws need equal logits
  o.gates = gates;
  o.progress = false;
  std::ostringstream log;
  InferRun r;
  r.result = mtt::infer::run_inference(o, log);
  r.wav = slurp(o.output);
  r.log = log.str();
  return r;
}

TEST(InferBaseModel, ForcedAlphaZeroEqualsTheSeparatelyBuiltBaseModel) {
  TempDir dir;
  write_chirp(dir / "in.wav", 1.2, 22050);
  // A tiny Moshi-TTT (every layer hybrid) with random weights, saved in the fork's key layout, and
  // the base model's file cut from it.
  mtt::moshi::LMModel lm(mtt::infer::tiny_lm_config(mtt::mimi::MimiConfig::tiny(), "all"));
  lm.init_random(7);
  std::map<std::string, at::Tensor> hybrid;
  for (const auto& [k, t] : lm.state_dict()) hybrid[k] = t.contiguous();
  const auto base = base_model_tensors(hybrid);
  ASSERT_LT(base.size(), hybrid.size());
  mtt::nn::save_tensors((dir / "hybrid.safetensors").string(), hybrid);
  mtt::nn::save_tensors((dir / "base.safetensors").string(), base);
  EXPECT_EQ(mtt::infer::ttt_layers_of_checkpoint((dir / "hybrid.safetensors").string()), "0,1,2,3");
  EXPECT_EQ(mtt::infer::ttt_layers_of_checkpoint((dir / "base.safetensors").string()), "none");

  mtt::infer::GateOverride none, alpha0;
  alpha0.alpha = 0.0;
  InferRun b = run(dir, "base", (dir / "base.safetensors").string(), none);
  InferRun h0 = run(dir, "alpha0", (dir / "hybrid.safetensors").string(), alpha0);
  InferRun h = run(dir, "hybrid", (dir / "hybrid.safetensors").string(), none);

  EXPECT_NE(b.log.find("no TTT layers in this model"), std::string::npos) << b.log;
  EXPECT_TRUE(b.result.gates.empty());
  ASSERT_EQ(h0.result.gates.size(), 8u);  // 4 layers x (forward, backward)
  ASSERT_GT(b.result.frames, 4);
  // alpha = 0: the same tokens, codes and output audio as the base model, bit for bit.
  EXPECT_EQ(h0.result.text_tokens, b.result.text_tokens);
  EXPECT_EQ(h0.result.audio_codes, b.result.audio_codes);
  EXPECT_EQ(h0.wav, b.wav);
  // The trained gates (alpha 0.1 at init: the branch is multiplied by tanh(0.1) = 9.97 %) change the output.
  EXPECT_NEAR(h.result.gates[0].multiplier_mean_pct, 100 * std::tanh(0.1), 1e-4);
  EXPECT_NE(h.result.audio_codes, b.result.audio_codes);
}

TEST(InferBaseModel, CudaWithoutAGpuIsAOneLineUsageError) {
  if (mtt::kernels::cuda_device_count() > 0) GTEST_SKIP() << "a CUDA device is visible: covered by the GPU check";
  TempDir dir;
  write_chirp(dir / "in.wav", 0.3, 16000);
  mtt::infer::InferOptions o;
  o.input = (dir / "in.wav").string();
  o.output = (dir / "out.wav").string();
  o.tiny = true;
  o.device = "cuda";
  o.progress = false;
  std::ostringstream log;
  try {
    mtt::infer::run_inference(o, log);
    FAIL() << "expected an error";
  } catch (const std::exception& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("--device"), std::string::npos) << msg;
    EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
  }
  EXPECT_FALSE(fs::exists(dir / "out.wav"));
}

}  // namespace
