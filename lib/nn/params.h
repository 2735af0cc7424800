#pragma once
// The parameters a module registers: each with its checkpoint name (docs/checkpoint-keys.md), a
// handle on the module's tensor and its declaration (how the random initialiser fills it, which
// dtype it is kept in, whether it is a buffer). Modules hold plain at::Tensor members; collect()
// hands them out in registration order, as torch's named_parameters() walks a module tree, and
// declares each one where it is registered, so no caller has to guess a tensor's kind from its
// name. Handles alias the module's tensors: assigning through one (a load, a dtype move)
// replaces the module's tensor.
#include <ATen/ATen.h>

#include <string>
#include <utility>
#include <vector>

namespace mtt::nn {

// How LMModel::init_random fills a parameter: test weights of a realistic scale (the rules a
// fresh training run starts from are moshi/schema.h's InitRule).
enum class ParamInit {
  linear,       // N(0, 1/sqrt(in)), in = the last dim (weights, LoRA A and B); N(0, s) has std s
  bias,         // N(0, 0.1) (linear and LayerNorm biases)
  embedding,    // N(0, 1) (embedding tables)
  norm_gain,    // 1 + N(0, 0.1) (RMSNorm alpha, LayerNorm weight)
  layer_scale,  // s * (1 + N(0, 0.1)), s the configured LayerScale init (else 0.1)
  small_normal, // N(0, 1e-2): the In-Place port's fine-tuning initialiser (docs/checkpoint-keys.md §2.5)
  own,          // the module's own initialisation is kept (the TTT branch, docs/ttt.md §1.1)
  derived,      // set from other parameters after the rest (the In-Place fast weight from linear_out)
};

// The dtype a parameter is kept in: the model's compute dtype, or f32 whatever it is (the TTT
// inner loop and the In-Place fast weight run in f32, docs/ttt.md §2, docs/checkpoint-keys.md §2.2).
enum class ParamDType { compute, f32 };

struct ParamSpec {
  ParamInit init = ParamInit::linear;
  ParamDType dtype = ParamDType::compute;
  bool buffer = false;  // a persistent buffer: stored, never trained (In-Place w_down_pretrained)
};

struct Param {
  std::string name;
  at::Tensor* tensor = nullptr;
  ParamSpec spec;
};
using ParamList = std::vector<Param>;

// (name, handle) pairs, for callers that only walk the tensors.
using NamedTensors = std::vector<std::pair<std::string, at::Tensor*>>;

}  // namespace mtt::nn
