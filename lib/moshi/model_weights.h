#pragma once
// The resolved model's tensors (moshi/model_source.h: base overlaid by the run) as zero-copy views
// under the model's keys, ready for LMModel::load. Each view keeps its mapped file alive.
#include <ATen/ATen.h>

#include <map>
#include <string>

#include "moshi/lm.h"
#include "moshi/model_source.h"

namespace mtt::moshi {

std::map<std::string, at::Tensor> weight_tensors(const ModelSource& source);

// LMModel::load options for the resolved model: its LoRA settings (kept separate, or merged with
// fuse_lora as moshi's --fuse-lora) in the compute dtype.
LoadOptions load_options(const ModelSource& source, at::ScalarType dtype = at::kFloat, bool fuse_lora = false);

}  // namespace mtt::moshi
