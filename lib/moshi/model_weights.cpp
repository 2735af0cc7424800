#include "moshi/model_weights.h"

#include "nn/tensor_io.h"

namespace mtt::moshi {

std::map<std::string, at::Tensor> weight_tensors(const ModelSource& source) {
  std::map<std::string, at::Tensor> views;
  for (const auto& [key, w] : source.weights) views[key] = nn::to_tensor(w.source->get(w.key));
  return views;
}

}  // namespace mtt::moshi
