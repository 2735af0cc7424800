// ttt-infer's --device cuda path: the LM moved to the GPU computes what the CPU model computes
// (logits within fp32 reduction-order noise), and LMGen keeps its token cache and its sampling on
// the CPU so both devices draw from the same generator. Skips without a visible CUDA device.
#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>

#include "infer/models.h"
#include "kernels/common/cuda_runtime_info.h"
#include "mimi/config.h"
#include "moshi/lm.h"
#include "moshi/lmgen.h"

namespace {

TEST(InferDevice, CudaModelMatchesCpuModel) {
  if (mtt::kernels::cuda_device_count() <= 0)
    GTEST_SKIP() << "no CUDA device visible (" << mtt::kernels::cuda_status() << ")";
  const auto cfg = mtt::infer::tiny_lm_config(mtt::mimi::MimiConfig::tiny(), "all");
  mtt::moshi::LMModel cpu(cfg), gpu(cfg);
  cpu.init_random(11);
  gpu.init_random(11);
  cpu.set_requires_grad(false);
  gpu.set_requires_grad(false);
  mtt::infer::move_lm_to(gpu, at::Device("cuda"));
  for (auto& [name, t] : gpu.named_parameters()) ASSERT_TRUE(t->is_cuda()) << name;

  // Streamed generation, teacher-forced user codes, greedy: hidden states agree step by step.
  mtt::moshi::LMGen gc(cpu, mtt::moshi::SamplingOptions::greedy(), 1), gg(gpu, mtt::moshi::SamplingOptions::greedy(), 1);
  gc.reset(2);
  gg.reset(2);
  at::Generator g = at::make_generator<at::CPUGeneratorImpl>(3);
  const int64_t needed = cfg.n_q - cfg.dep_q;
  for (int step = 0; step < 12; ++step) {
    at::Tensor user = at::randint(cfg.card, {2, needed, 1}, g, at::kLong);
    at::Tensor a = gc.step(user), b = gg.step(user);
    ASSERT_EQ(a.defined(), b.defined());
    const at::Tensor lc = gc.last_text_logits(), lg = gg.last_text_logits().cpu();
    EXPECT_LT((lc - lg).abs().max().item<double>(), 1e-4) << "step " << step;
  }
}

}  // namespace
