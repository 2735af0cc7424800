#pragma once
// Inner-loop reconstruction losses for the TTT paper's "Figure 5" plots: per layer and per token
// position, averaged over heads and batch elements, the loss of the token with W0, with the weights
// before the mini-batch update (the start weights the gradient is taken at) and after it.
// Loss = mean over the head dim of (LN(f(XK; W)) - (XV - XK))^2 (ttt_scan.h ln_l2_loss).
//
// JSON (read by the plot tool, written atomically):
// {"format":"moshi-ttt/inner-loop/1","layers":[{"layer":int,"name":str,"mini_batch_size":int,
//   "positions":[int...],"loss_w0":[...],"loss_before":[...],"loss_after":[...],
//   "per_head":{"loss_w0":[[...] per head],"loss_before":[[...]],"loss_after":[[...]]}}]}
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <ATen/ATen.h>

namespace mtt::ttt {

struct InnerLoopLayerRecord {
  int layer = 0;
  std::string name;
  int64_t mini_batch_size = 0;
  std::vector<int64_t> positions;
  std::vector<double> loss_w0, loss_before, loss_after;
  // [head][position index]; empty when per-head recording is off.
  std::vector<std::vector<double>> per_head_w0, per_head_before, per_head_after;
};

class InnerLoopLog {
 public:
  explicit InnerLoopLog(bool per_head = false) : per_head_(per_head) {}
  bool per_head() const { return per_head_; }

  // Appends the losses of consecutive tokens: tensors [B, H, n] (any float dtype), positions n
  // absolute token positions. Averages over B (and H for the head-averaged curves).
  void append(int layer, const std::string& name, int64_t mini_batch_size,
              const std::vector<int64_t>& positions, const at::Tensor& loss_w0,
              const at::Tensor& loss_before, const at::Tensor& loss_after);

  const std::map<int, InnerLoopLayerRecord>& layers() const { return layers_; }
  std::string to_json_string() const;
  void write_json(const std::string& path) const;  // atomic
  void clear() { layers_.clear(); }

 private:
  bool per_head_;
  std::map<int, InnerLoopLayerRecord> layers_;
};

}  // namespace mtt::ttt
