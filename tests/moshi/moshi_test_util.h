#pragma once
// Helpers shared by the Moshi LM tests: random codes, the parameter/schema comparison and the
// PyPI moshi reference runner (tests/moshi/ref/moshi_ref.py, MTT_REF_PYTHON venv, test only).
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "moshi/config.h"
#include "moshi/lm.h"
#include "moshi/schema.h"
#include "nn/tensor_io.h"
#include "test_util.h"

namespace mtt::moshi::testing {

// [B, n_q + 1, T]: text tokens in [0, text_card), audio tokens in [0, card).
inline at::Tensor random_codes(const LMConfig& c, int64_t B, int64_t T, uint64_t seed) {
  at::Generator g = at::make_generator<at::CPUGeneratorImpl>(seed);
  at::Tensor codes = at::empty({B, c.num_codebooks(), T}, at::TensorOptions().dtype(at::kLong));
  codes.select(1, 0).random_(0, c.text_card, g);
  codes.narrow(1, 1, c.n_q).random_(0, c.card, g);
  return codes;
}

inline double max_abs(const at::Tensor& a, const at::Tensor& b) {
  return (a.to(at::kDouble) - b.to(at::kDouble)).abs().max().item<double>();
}

// Registered parameter names and shapes == the torch-free schema of the config.
inline void expect_params_match_schema(LMModel& m) {
  ModelSchema s = declare_parameters(m.config().to_schema());
  std::map<std::string, std::vector<int64_t>> model, schema;
  for (auto& [n, t] : m.named_parameters()) model[n] = t->sizes().vec();
  for (auto& d : s.params) schema[d.name] = d.shape;
  for (auto& [n, shape] : schema) {
    auto it = model.find(n);
    if (it == model.end()) {
      ADD_FAILURE() << "schema declares " << n << ", the model has no such parameter";
      continue;
    }
    EXPECT_EQ(it->second, shape) << n;
  }
  for (auto& [n, shape] : model) EXPECT_TRUE(schema.count(n)) << "model parameter " << n << " is not declared";
}

// The reference venv's python: MTT_REF_PYTHON from the environment (scripts/test.sh exports it),
// else the one configured into the build.
inline std::string ref_python() {
  if (const char* p = std::getenv("MTT_REF_PYTHON")) return p;
  return MTT_REF_PYTHON;
}

inline bool ref_available(std::string* why) {
  static int cached = -1;
  static std::string reason;
  if (cached < 0) {
    const std::string py = ref_python();
    if (py.empty() || !std::filesystem::exists(py)) {
      cached = 0;
      reason = "reference venv missing (MTT_REF_PYTHON='" + py + "')";
    } else {
      auto r = test::run_command(py + " -c 'import moshi'");
      cached = r.status == 0 ? 1 : 0;
      if (!cached) reason = "the reference venv lacks the moshi package: " + r.err;
    }
  }
  if (why) *why = reason;
  return cached == 1;
}

#define MTT_REQUIRE_MOSHI_REF()                                                       \
  do {                                                                                \
    std::string why_;                                                                 \
    if (!::mtt::moshi::testing::ref_available(&why_)) MTT_REFERENCE_UNAVAILABLE(why_); \
  } while (0)

struct RefRun {
  test::TempDir dir;
  std::string config, weights;
};

// Writes the model's config (LMModel kwargs JSON) and f32 weights for the reference script.
inline void write_model(LMModel& m, RefRun& run) {
  run.config = (run.dir / "config.json").string();
  run.weights = (run.dir / "weights.safetensors").string();
  std::ofstream(run.config) << m.config().to_json();
  std::map<std::string, at::Tensor> sd;
  for (auto& [n, t] : m.state_dict()) sd[n] = t.to(at::kFloat).contiguous();
  nn::save_tensors(run.weights, sd);
}

inline std::map<std::string, at::Tensor> run_ref(RefRun& run, const std::string& mode,
                                                 const std::map<std::string, at::Tensor>& inputs,
                                                 const std::string& extra = "") {
  const std::string script = (test::source_dir() / "tests" / "moshi" / "ref" / "moshi_ref.py").string();
  const std::string in = (run.dir / (mode + "_in.safetensors")).string();
  const std::string out = (run.dir / (mode + "_out.safetensors")).string();
  nn::save_tensors(in, inputs);
  auto r = test::run_command(ref_python() + " " + script + " " + mode + " " + run.config + " " +
                             run.weights + " " + in + " " + out + " " + extra);
  EXPECT_EQ(r.status, 0) << r.err;
  if (r.status != 0) return {};
  return nn::load_tensors(out);
}

}  // namespace mtt::moshi::testing
