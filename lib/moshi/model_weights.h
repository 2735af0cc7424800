#pragma once
// The resolved model's tensors (moshi/model_source.h: base overlaid by the run) as zero-copy views
// under the model's keys, ready for LMModel::load. Each view keeps its mapped file alive.
#include <ATen/ATen.h>

#include <map>
#include <string>

#include "moshi/model_source.h"

namespace mtt::moshi {

std::map<std::string, at::Tensor> weight_tensors(const ModelSource& source);

}  // namespace mtt::moshi
