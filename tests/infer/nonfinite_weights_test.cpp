// NaN/Inf in a checkpoint's weights (issue 15): ttt-infer refuses the model, naming the tensor and
// where the first bad value is, unless --allow-nonfinite; then it warns and runs.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <map>
#include <sstream>
#include <string>

#include "core/error.h"
#include "infer/infer.h"
#include "infer/models.h"
#include "mimi/config.h"
#include "moshi/lm.h"
#include "nn/tensor_io.h"
#include "test_util.h"

namespace {

namespace fs = std::filesystem;
using mtt::test::TempDir;

void write_tone(const fs::path& p, double seconds) { mtt::test::write_tone_wav(p, seconds); }

// The tiny Moshi-TTT's weights with `poison` applied, saved where ttt-infer --tiny --checkpoint reads them.
std::string tiny_checkpoint(const fs::path& dir, const std::string& name,
                            const std::function<void(std::map<std::string, at::Tensor>&)>& poison) {
  mtt::moshi::LMModel lm(mtt::infer::tiny_lm_config(mtt::mimi::MimiConfig::tiny(), "all"));
  lm.init_random(3);
  std::map<std::string, at::Tensor> w;
  for (const auto& [k, t] : lm.state_dict()) w[k] = t.detach().clone().contiguous();
  poison(w);
  const std::string path = (dir / name).string();
  mtt::nn::save_tensors(path, w);
  return path;
}

const char* kGate = "transformer.layers.2.seq_modeling_block.forward_ssm_gating.gating_alpha";

TEST(NonFiniteWeights, RefusedNamingTheTensorUnlessAllowed) {
  TempDir dir;
  write_tone(dir / "in.wav", 0.3);
  const std::string nan_gate = tiny_checkpoint(dir.path(), "nan_gate.safetensors", [](auto& w) {
    ASSERT_TRUE(w.count(kGate));
    w[kGate].view({-1})[5] = NAN;
  });
  mtt::infer::InferOptions o;
  o.input = (dir / "in.wav").string();
  o.output = (dir / "out.wav").string();
  o.tiny = true;
  o.checkpoint = nan_gate;
  o.progress = false;
  o.threads = 1;
  std::ostringstream log;
  try {
    mtt::infer::run_inference(o, log);
    FAIL() << "a NaN gate was accepted";
  } catch (const mtt::Error& e) {
    EXPECT_EQ(e.exit_status(), mtt::kExitInput);
    EXPECT_EQ(e.file(), nan_gate);
    EXPECT_EQ(e.key(), kGate);
    EXPECT_EQ(e.reason().rfind("1 NaN and 0 Inf values (first at flat index 5)", 0), 0u) << e.what();
  }
  EXPECT_FALSE(fs::exists(o.output));
  o.allow_nonfinite = true;
  const auto r = mtt::infer::run_inference(o, log);
  EXPECT_GT(r.frames, 0);
  EXPECT_NE(log.str().find(std::string("warning: ") + nan_gate + ": " + kGate), std::string::npos) << log.str();

  // The app: one line, exit 2; one +Inf in every tensor names the first (sorted) and counts the rest.
  const auto app = mtt::test::app_path("ttt-infer");
  if (!fs::exists(app)) GTEST_SKIP() << "ttt-infer not built";
  const std::string inf_all = tiny_checkpoint(dir.path(), "inf_all.safetensors", [](auto& w) {
    for (auto& [k, t] : w)
      if (at::isFloatingType(t.scalar_type()) && t.numel() > 0) t.view({-1})[0] = INFINITY;
  });
  auto run = [&](const std::string& ckpt, const std::string& extra) {
    return mtt::test::run_command(app.string() + " '" + (dir / "in.wav").string() + "' '" + (dir / "o.wav").string() +
                                  "' --tiny --no-progress --threads 1 --checkpoint '" + ckpt + "'" + extra);
  };
  auto r1 = run(inf_all, "");
  EXPECT_EQ(r1.status, 2) << r1.err;
  const std::string last = r1.err.substr(r1.err.rfind('\n', r1.err.size() - 2) + 1);
  EXPECT_EQ(last.rfind("ttt-infer: " + inf_all + ": ", 0), 0u) << r1.err;
  EXPECT_NE(last.find(": 0 NaN and 1 Inf values (first at flat index 0); "), std::string::npos) << r1.err;
  EXPECT_NE(last.find(" more tensors hold NaN/Inf"), std::string::npos) << r1.err;
  EXPECT_FALSE(fs::exists(dir / "o.wav"));
  auto r2 = run(nan_gate, " --allow-nonfinite");
  EXPECT_EQ(r2.status, 0) << r2.err;
  EXPECT_NE(r2.err.find("warning: "), std::string::npos) << r2.err;
}

}  // namespace
