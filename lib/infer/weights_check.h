#pragma once
// NaN and Inf in a model's weights: with one of them in a TTT gate or a projection every frame
// generates the same codes and the output is silence or a buzz, with exit 0. ttt-infer refuses
// such a model, naming the tensor, unless told to go on (then it says so).
#include <ATen/ATen.h>

#include <cstdint>
#include <map>
#include <ostream>
#include <string>
#include <vector>

namespace mtt::infer {

struct NonFiniteTensor {
  std::string name;
  int64_t nan = 0, inf = 0;
  int64_t first_index = -1;  // flat index of the first NaN/Inf
};

// The floating-point tensors holding NaN or Inf, in name order. One reduction per tensor (a sum in
// double is finite exactly when every element is: no finite bf16/f32 tensor reaches 1e308); only
// the tensors that fail are counted element by element.
std::vector<NonFiniteTensor> find_nonfinite(const std::map<std::string, at::Tensor>& tensors);

// Throws mtt::Error(source, tensor name, "n NaN and m Inf values (first at flat index i) ...")
// for the first such tensor; with `allow`, writes one warning line to `log` instead.
void check_finite_weights(const std::map<std::string, at::Tensor>& tensors, const std::string& source, bool allow,
                          std::ostream& log);

}  // namespace mtt::infer
