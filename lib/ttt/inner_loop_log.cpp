// Inner-loop loss log (TTT "Figure 5"): JSON format moshi-ttt/inner-loop/1.
#include "ttt/inner_loop_log.h"

#include <nlohmann/json.hpp>

#include "core/atomic_file.h"
#include "core/error.h"

namespace mtt::ttt {

namespace {

std::vector<double> to_vec(const at::Tensor& t) {
  at::Tensor c = t.detach().to(at::kCPU, at::kDouble).contiguous();
  return std::vector<double>(c.data_ptr<double>(), c.data_ptr<double>() + c.numel());
}

void append_to(std::vector<double>& dst, const std::vector<double>& src) { dst.insert(dst.end(), src.begin(), src.end()); }

}  // namespace

void InnerLoopLog::append(int layer, const std::string& name, int64_t mini_batch_size,
                          const std::vector<int64_t>& positions, const at::Tensor& loss_w0,
                          const at::Tensor& loss_before, const at::Tensor& loss_after) {
  const int64_t n = static_cast<int64_t>(positions.size());
  for (const at::Tensor* t : {&loss_w0, &loss_before, &loss_after})
    if (t->dim() != 3 || t->size(2) != n)
      throw Error("", "inner_loop_log", "losses must be [B, H, " + std::to_string(n) + "], got " + c10::str(t->sizes()),
                  ErrorKind::Internal);
  InnerLoopLayerRecord& r = layers_[layer];
  r.layer = layer;
  r.name = name;
  r.mini_batch_size = mini_batch_size;
  r.positions.insert(r.positions.end(), positions.begin(), positions.end());
  // Head- and batch-averaged curves.
  append_to(r.loss_w0, to_vec(loss_w0.mean(at::IntArrayRef{0, 1})));
  append_to(r.loss_before, to_vec(loss_before.mean(at::IntArrayRef{0, 1})));
  append_to(r.loss_after, to_vec(loss_after.mean(at::IntArrayRef{0, 1})));
  if (per_head_) {
    const int64_t H = loss_w0.size(1);
    for (auto* v : {&r.per_head_w0, &r.per_head_before, &r.per_head_after})
      if (v->size() != static_cast<size_t>(H)) v->resize(H);
    at::Tensor w = loss_w0.mean(0), b = loss_before.mean(0), a = loss_after.mean(0);
    for (int64_t h = 0; h < H; ++h) {
      append_to(r.per_head_w0[h], to_vec(w[h]));
      append_to(r.per_head_before[h], to_vec(b[h]));
      append_to(r.per_head_after[h], to_vec(a[h]));
    }
  }
}

std::string InnerLoopLog::to_json_string() const {
  nlohmann::json j;
  j["format"] = "moshi-ttt/inner-loop/1";
  j["layers"] = nlohmann::json::array();
  for (auto& [idx, r] : layers_) {
    nlohmann::json l = {{"layer", r.layer},          {"name", r.name},
                        {"mini_batch_size", r.mini_batch_size}, {"positions", r.positions},
                        {"loss_w0", r.loss_w0},      {"loss_before", r.loss_before},
                        {"loss_after", r.loss_after}};
    if (per_head_ && !r.per_head_w0.empty())
      l["per_head"] = {{"loss_w0", r.per_head_w0}, {"loss_before", r.per_head_before}, {"loss_after", r.per_head_after}};
    j["layers"].push_back(std::move(l));
  }
  return j.dump() + "\n";
}

void InnerLoopLog::write_json(const std::string& path) const { write_file_atomic(path, to_json_string()); }

}  // namespace mtt::ttt
