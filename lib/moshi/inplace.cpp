#include "moshi/inplace.h"

#include <algorithm>
#include <map>
#include <numeric>
#include <vector>

#include "core/error.h"
#include "moshi/hybrid.h"
#include "ttt/inplace_ttt.h"

namespace mtt::moshi {

// Rows grouped by their position inside the current chunk; one InPlaceTTTState per group. Without
// per-row resets there is one group holding rows 0..B-1 in order (the batched fast path).
struct InPlaceRows {
  const InPlaceBlock* owner = nullptr;
  struct Group {
    std::vector<int64_t> rows;  // batch rows of this group, ascending
    ttt::InPlaceTTTState st;    // undefined w_down: not started (InPlaceTTT::step initialises it)
  };
  std::vector<Group> groups;
};

namespace {

at::Tensor meta(std::vector<int64_t> shape) {
  return at::empty(shape, at::TensorOptions().dtype(at::kFloat).device(at::kMeta));
}

at::Tensor index_of(const std::vector<int64_t>& rows, const at::Device& device) {
  return at::tensor(rows, at::TensorOptions().dtype(at::kLong)).to(device);
}

// The rows `pos` (positions inside the group) of a started state.
ttt::InPlaceTTTState select_rows(const ttt::InPlaceTTTState& s, const std::vector<int64_t>& pos) {
  ttt::InPlaceTTTState r;
  at::Tensor idx = index_of(pos, s.w_down.device());
  r.w_down = s.w_down.index_select(0, idx);
  if (s.z_buf.defined()) r.z_buf = s.z_buf.index_select(0, idx);
  if (s.t_buf.defined()) r.t_buf = s.t_buf.index_select(0, idx);
  r.tokens_seen = s.tokens_seen;
  r.chunks_done = s.chunks_done;
  return r;
}

// Groups whose rows sit at the same position inside their chunk step together: concatenate them,
// rows ascending, so that a batch without resets (or whose rows realigned) is one group again.
void merge_groups(InPlaceRows& r, const ttt::InPlaceTTT& m) {
  std::map<int64_t, std::vector<size_t>> by_phase;
  for (size_t g = 0; g < r.groups.size(); ++g) by_phase[r.groups[g].st.buffered()].push_back(g);
  if (by_phase.size() == r.groups.size()) return;
  std::vector<InPlaceRows::Group> out;
  for (auto& [phase, members] : by_phase) {
    if (members.size() == 1) {
      out.push_back(std::move(r.groups[members[0]]));
      continue;
    }
    std::vector<int64_t> rows;
    std::vector<at::Tensor> w, z, t;
    int64_t seen = 0, done = 0;
    for (size_t g : members) {
      auto& gr = r.groups[g];
      if (!gr.st.w_down.defined()) gr.st = m.init_state(static_cast<int64_t>(gr.rows.size()));
      rows.insert(rows.end(), gr.rows.begin(), gr.rows.end());
      w.push_back(gr.st.w_down);
      if (phase > 0) {
        z.push_back(gr.st.z_buf);
        t.push_back(gr.st.t_buf);
      }
      seen = std::max(seen, gr.st.tokens_seen);
      done = std::max(done, gr.st.chunks_done);
    }
    InPlaceRows::Group merged;
    merged.st.w_down = at::cat(w, 0);
    if (phase > 0) {
      merged.st.z_buf = at::cat(z, 0);
      merged.st.t_buf = at::cat(t, 0);
    }
    merged.st.tokens_seen = seen;
    merged.st.chunks_done = done;
    // Ascending rows.
    std::vector<int64_t> order(rows.size());
    std::iota(order.begin(), order.end(), 0);
    std::sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return rows[a] < rows[b]; });
    merged.st = select_rows(merged.st, order);
    for (int64_t i : order) merged.rows.push_back(rows[static_cast<size_t>(i)]);
    out.push_back(std::move(merged));
  }
  r.groups = std::move(out);
}

ttt::GatedActivation activation_for(const LMConfig& cfg) {
  // The LM's own gating activation, so that a zero target generator reproduces the base model
  // exactly; "gelu" reproduces the port, which passes F.gelu although Moshi gates with SiLU
  // (lib/ttt/inplace_ttt.h, golden README).
  const std::string a = cfg.ttt.inplace_activation == "gating" ? cfg.gating : cfg.ttt.inplace_activation;
  if (a == "silu") return ttt::GatedActivation::silu;
  if (a == "gelu") return ttt::GatedActivation::gelu_erf;
  throw Error("", "ttt.inplace_activation",
              "In-Place TTT supports the silu and gelu gated FFNs, not '" + a + "'", ErrorKind::Usage);
}

}  // namespace

InPlaceBlock::InPlaceBlock(const LMConfig& cfg, int layer) {
  const TransformerConfig mt = cfg.main_transformer();
  if (mt.gating == "none")
    throw Error("", "ttt.variant", "In-Place TTT needs the gated FFN (gating != none), layer " + std::to_string(layer),
                ErrorKind::Usage);
  const TTTSettings& s = cfg.ttt;
  ttt::InPlaceTTTOptions o = ttt::InPlaceTTTOptions::moshi_port(cfg.dim, mt.dim_feedforward);
  o.chunk_size = s.inplace_chunk_size;
  o.lr = s.inplace_lr;
  o.conv_kernel_size = s.conv_kernel_size;
  o.delta_clip_fro_norm = s.inplace_delta_clip > 0 ? std::optional<double>(s.inplace_delta_clip) : std::nullopt;
  o.activation = activation_for(cfg);
  options_ = std::make_unique<ttt::InPlaceTTTOptions>(o);
  const int64_t D = cfg.dim, h = o.hidden, k = o.conv_kernel_size;
  w_down = meta({D, h});
  w_down_pretrained = meta({D, h});
  conv_weight = meta({D, D, k});
  target_proj = meta({D, D});
}

InPlaceBlock::~InPlaceBlock() = default;

ttt::InPlaceTTT& InPlaceBlock::module() const {
  if (!ttt_) {
    ttt_ = std::make_shared<ttt::InPlaceTTT>(*options_);
    // The module initialised tensors of its own; the LM owns the parameters, bound per call, so
    // release that memory (7B: ~1 GB per layer).
    for (auto& p : ttt_->named_parameters(true)) p.value().set_data(at::empty({0}));
    for (auto& b : ttt_->named_buffers(true)) b.value().set_data(at::empty({0}));
  }
  return *ttt_;
}

void InPlaceBlock::bind(const TransformerLayer* layer) const {
  ttt::InPlaceTTT& m = module();
  if (layer) {
    // gating.linear_in [2h, D] (with a separate LoRA adapter applied, docs/checkpoint-keys.md §2.3)
    m.w_gate_up = layer->gating_in.at(0).effective_weight();
    m.linear_out = layer->gating_out.at(0).effective_weight();  // not read by the TTT path (§2.2)
  }
  m.w_down = w_down;
  m.w_down_pretrained = w_down_pretrained;
  m.conv_weight = conv_weight;
  m.target_proj = target_proj;
}

void InPlaceBlock::collect(const std::string& g, ParamList& out) {
  // The fast weight W0 and its reset copy (a buffer) come from linear_out and stay f32 whatever
  // the compute dtype (docs/checkpoint-keys.md §2.2); the target generator starts at the port's
  // fine-tuning N(0, 1e-2) (§2.5).
  using nn::ParamDType, nn::ParamInit;
  out.push_back({g + "w_down", &w_down, {ParamInit::derived, ParamDType::f32}});
  out.push_back({g + "w_down_pretrained", &w_down_pretrained, {ParamInit::derived, ParamDType::f32, /*buffer=*/true}});
  out.push_back({g + "target_generator.conv1d.conv.weight", &conv_weight, {ParamInit::small_normal}});
  out.push_back({g + "target_generator.W_target.weight", &target_proj, {ParamInit::small_normal}});
}

void InPlaceBlock::init_fast_weight_from(const TransformerLayer& layer) {
  w_down = layer.gating_out.at(0).effective_weight().detach().to(at::kFloat).clone();
  w_down_pretrained = w_down.clone();
}

std::shared_ptr<InPlaceRows> InPlaceBlock::new_state(int64_t batch) const {
  auto r = std::make_shared<InPlaceRows>();
  r->owner = this;
  InPlaceRows::Group g;
  g.rows.resize(static_cast<size_t>(batch));
  std::iota(g.rows.begin(), g.rows.end(), 0);
  r->groups.push_back(std::move(g));
  return r;
}

at::Tensor InPlaceBlock::forward(const TransformerLayer& layer, const at::Tensor& x, const at::Tensor& src,
                                 LayerTTTState* state) {
  if (!src.defined() || !src.sizes().equals(x.sizes()))
    throw Error("", "target_source", "In-Place TTT needs the summed token embeddings as target source, shaped like x",
                ErrorKind::Internal);
  bind(&layer);
  ttt::InPlaceTTT& m = module();
  if (state == nullptr) return m.forward(x, src).y;
  if (!state->inplace) state->inplace = new_state(x.size(0));
  InPlaceRows& r = *state->inplace;
  if (r.groups.size() == 1) return m.step(x, src, r.groups[0].st);  // rows 0..B-1 in order
  // Rows at different positions inside their chunks: each group steps on its own rows.
  std::vector<at::Tensor> parts;
  std::vector<int64_t> order;
  for (auto& g : r.groups) {
    at::Tensor idx = index_of(g.rows, x.device());
    parts.push_back(m.step(x.index_select(0, idx), src.index_select(0, idx), g.st));
    order.insert(order.end(), g.rows.begin(), g.rows.end());
  }
  std::vector<int64_t> inverse(order.size());
  for (size_t i = 0; i < order.size(); ++i) inverse[static_cast<size_t>(order[i])] = static_cast<int64_t>(i);
  at::Tensor y = at::cat(parts, 0).index_select(0, index_of(inverse, x.device()));
  merge_groups(r, m);
  return y;
}

std::shared_ptr<InPlaceRows> copy_rows(const InPlaceRows& r) { return std::make_shared<InPlaceRows>(r); }

void restore_rows(InPlaceRows& now, const InPlaceRows& before, const std::vector<bool>& exec) {
  std::vector<InPlaceRows::Group> out;
  auto take = [&](const InPlaceRows& src, bool want) {
    for (const auto& g : src.groups) {
      std::vector<int64_t> pos, rows;
      for (size_t i = 0; i < g.rows.size(); ++i) {
        const size_t row = static_cast<size_t>(g.rows[i]);
        if ((row < exec.size() ? exec[row] : true) == want) {
          pos.push_back(static_cast<int64_t>(i));
          rows.push_back(g.rows[i]);
        }
      }
      if (rows.empty()) continue;
      InPlaceRows::Group k;
      k.rows = rows;
      k.st = rows.size() == g.rows.size() || !g.st.w_down.defined() ? g.st : select_rows(g.st, pos);
      out.push_back(std::move(k));
    }
  };
  take(now, true);
  take(before, false);
  now.groups = std::move(out);
  now.owner->bind(nullptr);
  merge_groups(now, now.owner->module());
}

void detach_rows(InPlaceRows& r) {
  for (auto& g : r.groups) g.st.detach_();
}

void reset_rows(InPlaceRows& r, const at::Tensor& mask_in) {
  at::Tensor mask = mask_in.to(at::kCPU).to(at::kBool).contiguous();
  auto acc = mask.accessor<bool, 1>();
  r.owner->bind(nullptr);
  const ttt::InPlaceTTT& m = r.owner->module();
  std::vector<InPlaceRows::Group> out;
  std::vector<int64_t> restarted;
  for (auto& g : r.groups) {
    std::vector<int64_t> keep_pos, keep_rows;
    for (size_t i = 0; i < g.rows.size(); ++i) {
      const int64_t row = g.rows[i];
      if (row >= mask.size(0))
        throw Error("", "reset_mask", "row " + std::to_string(row) + " outside the mask", ErrorKind::Usage);
      if (acc[row]) {
        restarted.push_back(row);
      } else {
        keep_pos.push_back(static_cast<int64_t>(i));
        keep_rows.push_back(row);
      }
    }
    if (keep_rows.size() == g.rows.size()) {
      out.push_back(std::move(g));
    } else if (!keep_rows.empty()) {
      InPlaceRows::Group k;
      k.rows = keep_rows;
      k.st = g.st.w_down.defined() ? select_rows(g.st, keep_pos) : ttt::InPlaceTTTState{};
      out.push_back(std::move(k));
    }
  }
  if (!restarted.empty()) {
    std::sort(restarted.begin(), restarted.end());
    InPlaceRows::Group fresh;  // W0, empty chunk buffer (initialised on the first step)
    fresh.rows = restarted;
    out.push_back(std::move(fresh));
  }
  r.groups = std::move(out);
  merge_groups(r, m);
}

}  // namespace mtt::moshi
