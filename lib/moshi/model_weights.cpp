#include "moshi/model_weights.h"

#include "nn/tensor_io.h"

namespace mtt::moshi {

std::map<std::string, at::Tensor> weight_tensors(const ModelSource& source) {
  std::map<std::string, at::Tensor> views;
  for (const auto& [key, w] : source.weights) views[key] = nn::to_tensor(w.source->get(w.key));
  return views;
}

LoadOptions load_options(const ModelSource& source, at::ScalarType dtype, bool fuse_lora) {
  LoadOptions o;
  o.dtype = dtype;
  o.lora.enable = source.lora.enable;
  o.lora.rank = source.lora.rank;
  o.lora.scaling = source.lora.scaling;
  o.lora.ft_embed = source.lora.ft_embed;
  o.fuse_lora = fuse_lora;
  return o;
}

}  // namespace mtt::moshi
