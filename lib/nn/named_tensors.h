#pragma once
// The parameters a module registers, by checkpoint name (docs/checkpoint-keys.md): modules hold
// plain at::Tensor members and collect() hands out (name, handle) pairs in registration order,
// the way torch's state_dict walks named_parameters(). Handles alias the module's tensors, so
// assigning through one (a load, a dtype move) replaces the module's tensor.
#include <ATen/ATen.h>

#include <string>
#include <utility>
#include <vector>

namespace mtt::nn {

using NamedTensors = std::vector<std::pair<std::string, at::Tensor*>>;

}  // namespace mtt::nn
