// Behaviour of the TTT layer beyond the golden files: streaming equivalence, state ownership,
// per-element independence, pads, legacy state modes, causality, float64 gradient checks.
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <torch/csrc/autograd/autograd.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <vector>

#include "core/atomic_file.h"
#include "core/error.h"
#include "test_util.h"
#include "ttt/inner_loop_log.h"
#include "ttt/ttt_layer.h"

using namespace mtt::ttt;

namespace {

TTTConfig small_config(InnerModel inner = InnerModel::mlp, int64_t layers = 2) {
  TTTConfig c = TTTConfig::moshi(/*D=*/32, /*H=*/2, /*b=*/8);
  c.inner = inner;
  c.ttt_mlp_layers = layers;
  c.ttt_base_lr = 1.0;
  return c;
}

// Randomises every parameter so that each one matters (like the golden files do).
void randomise(TTTLayer& layer, uint64_t seed) {
  at::manual_seed(seed);
  at::NoGradGuard ng;
  for (auto& [name, p] : layer.named_parameters()) {
    if (name.find("norm_weight") != std::string::npos || name == "post_norm.weight") p.copy_(1.0 + 0.2 * at::randn_like(p));
    else if (name == "learnable_token_idx") p.copy_(0.05 * at::rand_like(p));
    else if (name[0] == 'W' || name.rfind("weights.", 0) == 0) p.copy_(0.3 * at::randn_like(p));
    else if (name.rfind("w", 0) == 0 && name.find(".weight") != std::string::npos) p.copy_(at::randn_like(p) / std::sqrt(32.0));
    else p.copy_(0.2 * at::randn_like(p));
  }
}

double max_rel(const at::Tensor& a, const at::Tensor& ref) {
  double m = ref.abs().max().item<double>();
  return (a - ref).abs().max().item<double>() / (m > 0 ? m : 1.0);
}

at::Tensor run_chunks(TTTLayer& layer, const at::Tensor& x, const std::vector<int64_t>& chunks, TTTState& st,
                      const Options& opt = {}) {
  std::vector<at::Tensor> ys;
  int64_t off = 0;
  for (int64_t c : chunks) {
    ys.push_back(layer.forward(x.narrow(1, off, c), &st, opt));
    off += c;
  }
  EXPECT_EQ(off, x.size(1));
  return at::cat(ys, 1);
}

// ---------------------------------------------------------------------------------------------

struct StreamCase {
  InnerModel inner;
  int64_t layers;
};

class Streaming : public ::testing::TestWithParam<StreamCase> {};

TEST_P(Streaming, ChunkedEqualsOneShot) {
  at::NoGradGuard ng;
  TTTLayer layer(small_config(GetParam().inner, GetParam().layers), 1);
  randomise(layer, 2);
  layer.to(at::kDouble);
  const int64_t B = 3, L = 37;  // L not a multiple of b = 8
  at::Tensor x = at::randn({B, L, 32}, at::kDouble);
  TTTState ref_state;
  at::Tensor ref = layer.forward(x, &ref_state);
  at::Tensor stateless = layer.forward(x, nullptr);
  EXPECT_LT(max_rel(stateless, ref), 1e-12);
  auto ref_w = layer.effective_weights(ref_state);
  const std::vector<std::vector<int64_t>> chunkings = {
      {5, 11, 1, 20}, {8, 8, 8, 13}, {3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 1}, {1, 7, 9, 15, 5}, std::vector<int64_t>(37, 1)};
  for (auto& ch : chunkings) {
    TTTState st;
    at::Tensor y = run_chunks(layer, x, ch, st);
    EXPECT_LT(max_rel(y, ref), 1e-10) << "chunking of " << ch.size() << " pieces";
    auto w = layer.effective_weights(st);
    ASSERT_EQ(w.size(), ref_w.size());
    for (size_t k = 0; k < w.size(); ++k) EXPECT_LT(max_rel(w[k], ref_w[k]), 1e-10) << "state tensor " << k;
    EXPECT_EQ(st.position, std::vector<int64_t>(B, L));
  }
  // The adaptation is real: the final state differs from W0.
  EXPECT_GT((ref_w[0] - layer.inner_weights()[0].unsqueeze(0)).abs().max().item<double>(), 1e-3);
}

INSTANTIATE_TEST_SUITE_P(Inner, Streaming,
                         ::testing::Values(StreamCase{InnerModel::linear, 1}, StreamCase{InnerModel::mlp, 2},
                                           StreamCase{InnerModel::mlp, 3}),
                         [](const ::testing::TestParamInfo<StreamCase>& i) {
                           return i.param.inner == InnerModel::linear ? std::string("linear")
                                                                      : "mlp" + std::to_string(i.param.layers);
                         });

TEST(TTTLayer, ParametersBitIdenticalAfterTrainingForwardAndBackward) {
  TTTLayer layer(small_config(), 3);
  randomise(layer, 4);
  layer.train(true);
  std::vector<at::Tensor> before;
  for (auto& [n, p] : layer.named_parameters()) before.push_back(p.detach().clone());
  at::Tensor x = at::randn({2, 21, 32});
  TTTState st;
  at::Tensor y = layer.forward(x, &st);
  y = at::cat({y, layer.forward(at::randn({2, 13, 32}), &st)}, 1);
  y.pow(2).sum().backward();
  size_t i = 0;
  for (auto& [n, p] : layer.named_parameters()) {
    EXPECT_TRUE(at::equal(p.detach(), before[i])) << n << " was written by the forward pass";
    ++i;
  }
  // ... and the outer-loop gradient reaches W0 through the inner loop.
  EXPECT_TRUE(layer.param("W1").grad().defined());
  EXPECT_GT(layer.param("W1").grad().abs().max().item<double>(), 0.0);
}

TEST(TTTLayer, BatchElementsEvolveIndependently) {
  at::NoGradGuard ng;
  TTTLayer layer(small_config(), 5);
  randomise(layer, 6);
  layer.to(at::kDouble);
  at::Tensor x = at::randn({3, 19, 32}, at::kDouble);
  TTTState st;
  at::Tensor y = run_chunks(layer, x, {7, 12}, st);
  auto w = layer.effective_weights(st);
  for (int64_t e = 0; e < 3; ++e) {
    TTTState s1;
    at::Tensor y1 = run_chunks(layer, x.narrow(0, e, 1), {7, 12}, s1);
    EXPECT_LT(max_rel(y1, y.narrow(0, e, 1)), 1e-12) << "element " << e;
    auto w1 = layer.effective_weights(s1);
    for (size_t k = 0; k < w.size(); ++k) EXPECT_LT(max_rel(w1[k], w[k].narrow(0, e, 1)), 1e-12);
  }
  // Different inputs give different states per element (nothing is shared across the batch).
  EXPECT_GT((w[0][0] - w[0][1]).abs().max().item<double>(), 1e-4);
}

TEST(TTTLayer, ResetOneElementRestartsOnlyThatElement) {
  at::NoGradGuard ng;
  TTTLayer layer(small_config(), 7);
  randomise(layer, 8);
  layer.to(at::kDouble);
  at::Tensor a = at::randn({3, 11, 32}, at::kDouble), b = at::randn({3, 13, 32}, at::kDouble);
  TTTState st;
  layer.forward(a, &st);
  st.reset(at::tensor({0, 1, 0}).to(at::kBool));
  EXPECT_EQ(st.position, (std::vector<int64_t>{11, 0, 11}));
  at::Tensor y = layer.forward(b, &st);  // elements now sit at different positions (grouped path)
  // Element 1 behaves like a fresh stream on b; elements 0 and 2 like a stream over a then b.
  TTTState fresh;
  at::Tensor y1 = layer.forward(b.narrow(0, 1, 1), &fresh);
  EXPECT_LT(max_rel(y.narrow(0, 1, 1), y1), 1e-12);
  TTTState cont;
  layer.forward(a, &cont);
  at::Tensor yc = layer.forward(b, &cont);
  EXPECT_LT(max_rel(y.narrow(0, 0, 1), yc.narrow(0, 0, 1)), 1e-12);
  EXPECT_LT(max_rel(y.narrow(0, 2, 1), yc.narrow(0, 2, 1)), 1e-12);
  EXPECT_GT((y.narrow(0, 1, 1) - yc.narrow(0, 1, 1)).abs().max().item<double>(), 1e-6);
}

TEST(TTTLayer, MaskedPadTokensNeverUpdateTheState) {
  at::NoGradGuard ng;
  TTTLayer layer(small_config(), 9);
  randomise(layer, 10);
  layer.to(at::kDouble);
  const int64_t B = 2, real = 10, L = 16;
  at::Tensor x = at::randn({B, L, 32}, at::kDouble);
  at::Tensor x2 = x.clone();
  x2.narrow(1, real, L - real).copy_(at::randn({B, L - real, 32}, at::kDouble) * 5);
  at::Tensor mask = at::zeros({B, L}, at::kBool);
  mask.narrow(1, 0, real).fill_(true);
  for (PadUpdates mode : {PadUpdates::masked, PadUpdates::legacy}) {
    Options o;
    o.pad_mask = mask;
    o.pad_updates = mode;
    TTTState s1, s2;
    at::Tensor y1 = layer.forward(x, &s1, o), y2 = layer.forward(x2, &s2, o);
    auto w1 = layer.effective_weights(s1), w2 = layer.effective_weights(s2);
    double state_diff = 0;
    for (size_t k = 0; k < w1.size(); ++k) state_diff = std::max(state_diff, (w1[k] - w2[k]).abs().max().item<double>());
    if (mode == PadUpdates::masked) {
      EXPECT_EQ(state_diff, 0.0) << "pad content reached the state";
      EXPECT_LT(max_rel(y1.narrow(1, 0, real), y2.narrow(1, 0, real)), 1e-12);
    } else {
      EXPECT_GT(state_diff, 1e-6) << "legacy mode should let pads update the state (fork behaviour)";
    }
  }
}

TEST(TTTLayer, LegacyStateModesWriteParametersLikeTheFork) {
  at::NoGradGuard ng;
  TTTLayer layer(small_config(), 11);
  randomise(layer, 12);
  at::Tensor x = at::randn({2, 16, 32});
  auto snapshot = [&]() { return layer.param("W1").detach().clone(); };
  // legacy_batch0_copy: no write in training, batch element 0's state in eval.
  Options o;
  o.state_mode = StateMode::legacy_batch0_copy;
  at::Tensor w0 = snapshot();
  layer.train(true);
  layer.forward(x, nullptr, o);
  EXPECT_TRUE(at::equal(layer.param("W1").detach(), w0));
  layer.train(false);
  TTTState st;
  layer.forward(x, &st, o);
  EXPECT_FALSE(at::equal(layer.param("W1").detach(), w0));
  EXPECT_TRUE(at::allclose(layer.param("W1").detach(), st.weights[0][0]));
  // Element 1's state is lost: it differs from what was written.
  EXPECT_GT((st.weights[0][1] - layer.param("W1").detach()).abs().max().item<double>(), 1e-6);
  // legacy_write_params: writes in training too.
  o.state_mode = StateMode::legacy_write_params;
  layer.train(true);
  at::Tensor w1 = snapshot();
  layer.forward(x, nullptr, o);
  EXPECT_FALSE(at::equal(layer.param("W1").detach(), w1));
}

TEST(TTTLayer, DitEtaLeaksTheFutureCausalDoesNot) {
  at::NoGradGuard ng;
  for (Eta eta : {Eta::causal, Eta::dit}) {
    TTTConfig c = small_config();
    c.eta = eta;
    TTTLayer layer(c, 13);
    randomise(layer, 14);
    at::Tensor x = at::randn({1, 16, 32});
    at::Tensor x2 = x.clone();
    x2.narrow(1, 5, 1).add_(1.0);  // change token 5 of the first mini-batch
    at::Tensor y = layer.forward(x, nullptr), y2 = layer.forward(x2, nullptr);
    double past = (y.narrow(1, 0, 5) - y2.narrow(1, 0, 5)).abs().max().item<double>();
    if (eta == Eta::causal) EXPECT_EQ(past, 0.0);
    else EXPECT_GT(past, 1e-6) << "VDIT's eta lets tokens 0..4 see token 5";
  }
}

TEST(TTTLayer, DitStreamingOfPartialMiniBatchIsRejected) {
  TTTConfig c = small_config();
  c.eta = Eta::dit;
  TTTLayer layer(c, 15);
  TTTState st;
  EXPECT_NO_THROW(layer.forward(at::randn({1, 16, 32}), &st));
  EXPECT_THROW(layer.forward(at::randn({1, 5, 32}), &st), mtt::Error);
  EXPECT_NO_THROW(layer.forward(at::randn({1, 5, 32}), nullptr));  // stateless: its own mini-batch
}

TEST(TTTLayer, CheckpointGroupsChangeMemoryNotValues) {
  TTTLayer layer(small_config(), 16);
  randomise(layer, 17);
  layer.to(at::kDouble);
  at::Tensor x = at::randn({2, 40, 32}, at::kDouble);
  std::vector<std::vector<at::Tensor>> grads;
  for (int64_t g : {0, 1, 2, 5}) {
    Options o;
    o.checkpoint_group_override = g;
    for (auto& [n, p] : layer.named_parameters()) p.mutable_grad() = at::Tensor();
    at::Tensor y = layer.forward(x, nullptr, o);
    (y * at::cos(y)).sum().backward();
    std::vector<at::Tensor> gs;
    for (auto& [n, p] : layer.named_parameters()) gs.push_back(p.grad().clone());
    grads.push_back(gs);
  }
  for (size_t i = 1; i < grads.size(); ++i)
    for (size_t k = 0; k < grads[0].size(); ++k) EXPECT_LT(max_rel(grads[i][k], grads[0][k]), 1e-12) << "group case " << i << " tensor " << k;
}

TEST(TTTLayer, BadInputIsAnError) {
  TTTLayer layer(small_config(), 18);
  EXPECT_THROW(layer.forward(at::randn({2, 5, 31}), nullptr), mtt::Error);
  TTTState st = layer.init_state(3);
  EXPECT_THROW(layer.forward(at::randn({2, 5, 32}), &st), mtt::Error);
  TTTConfig bad = small_config();
  bad.num_heads = 3;
  EXPECT_THROW(TTTLayer{bad}, mtt::Error);
  std::map<std::string, at::Tensor> ckpt{{"W1", at::zeros({1, 2, 3})}};
  try {
    layer.load(ckpt, "", "ckpt.safetensors", true);
    FAIL() << "shape mismatch accepted";
  } catch (const mtt::Error& e) {
    EXPECT_EQ(e.file(), "ckpt.safetensors");
    EXPECT_EQ(e.key(), "W1");
  }
}

TEST(TTTLayer, CheckpointNamesFollowTheFork) {
  TTTLayer mlp(small_config(), 0);
  std::vector<std::string> names;
  for (auto& [n, p] : mlp.named_parameters()) names.push_back(n);
  for (const char* k : {"wq.weight", "wq.bias", "wo.weight", "learnable_ttt_lr_weight", "learnable_ttt_lr_bias",
                        "ttt_norm_weight", "ttt_norm_bias", "W1", "b1", "W2", "b2", "post_norm.weight", "post_norm.bias"})
    EXPECT_NE(std::find(names.begin(), names.end(), k), names.end()) << k;
  EXPECT_EQ(mlp.param("W1").sizes(), (at::IntArrayRef{2, 16, 64}));
  EXPECT_EQ(mlp.param("b2").sizes(), (at::IntArrayRef{2, 1, 16}));
  TTTLayer deep(small_config(InnerModel::mlp, 3), 0);
  EXPECT_EQ(deep.param("weights.1").sizes(), (at::IntArrayRef{2, 64, 64}));
  EXPECT_THROW(deep.param("W1"), mtt::Error);
}

TEST(InnerLoopLog, Figure5LossesAreRecordedAndConsistent) {
  at::NoGradGuard ng;
  TTTConfig c = small_config();
  c.ttt_base_lr = 0.1;
  c.layer_index = 7;
  c.name = "layers.7.ttt";
  TTTLayer layer(c, 19);
  randomise(layer, 20);
  InnerLoopLog log(/*per_head=*/true);
  Options o;
  o.inner_loop_log = &log;
  TTTState st;
  at::Tensor x = at::randn({2, 13, 32});
  at::Tensor y = layer.forward(x.narrow(1, 0, 6), &st, o);
  y = at::cat({y, layer.forward(x.narrow(1, 6, 7), &st, o)}, 1);
  // Recording does not change the result.
  TTTState st2;
  EXPECT_TRUE(at::allclose(y, at::cat({layer.forward(x.narrow(1, 0, 6), &st2), layer.forward(x.narrow(1, 6, 7), &st2)}, 1)));
  const auto& rec = log.layers().at(7);
  EXPECT_EQ(rec.positions.size(), 13u);
  EXPECT_EQ(rec.positions.back(), 12);
  ASSERT_EQ(rec.per_head_w0.size(), 2u);
  // In the first mini-batch the start weights are W0: loss before == loss with W0.
  for (int t = 0; t < 8; ++t) EXPECT_NEAR(rec.loss_before[t], rec.loss_w0[t], 1e-6 * (1 + rec.loss_w0[t]));
  // After the first mini-batch the state has moved: the curves separate.
  double diff = 0;
  for (int t = 8; t < 13; ++t) diff += std::abs(rec.loss_before[t] - rec.loss_w0[t]);
  EXPECT_GT(diff, 1e-7);
  // A (small) gradient step on a token's own loss lowers it on average.
  double before = 0, after = 0;
  for (size_t t = 0; t < 13; ++t) {
    before += rec.loss_before[t];
    after += rec.loss_after[t];
  }
  EXPECT_LT(after, before);
  mtt::test::TempDir dir;
  log.write_json((dir / "inner.json").string());
  auto j = nlohmann::json::parse(mtt::read_file((dir / "inner.json").string()));
  EXPECT_EQ(j["format"], "moshi-ttt/inner-loop/1");
  EXPECT_EQ(j["layers"][0]["layer"], 7);
  EXPECT_EQ(j["layers"][0]["mini_batch_size"], 8);
  EXPECT_EQ(j["layers"][0]["loss_after"].size(), 13u);
  EXPECT_EQ(j["layers"][0]["per_head"]["loss_w0"].size(), 2u);
}

// ---------------------------------------------------------------------------------------------
// Float64 gradient checks: for every parameter (and the input), the autograd gradient's projection
// on a random direction equals the central finite difference of L = sum(y * G).

struct GradCase {
  std::string name;
  TTTConfig cfg;
  int64_t L;
  std::vector<int64_t> chunks;  // streamed with a persistent state (empty: one stateless call)
  int64_t group = 0;
};

std::vector<GradCase> grad_cases() {
  std::vector<GradCase> v;
  auto base = [] {
    TTTConfig c = TTTConfig::moshi(16, 2, 4);
    c.ttt_base_lr = 1.0;
    return c;
  };
  { GradCase g{"moshi_mlp", base(), 11, {}}; v.push_back(g); }
  { GradCase g{"linear", base(), 10, {}}; g.cfg.inner = InnerModel::linear; v.push_back(g); }
  { GradCase g{"mlp3", base(), 8, {}}; g.cfg.ttt_mlp_layers = 3; g.cfg.ttt_mlp_expansion_factor = 2.0; v.push_back(g); }
  { GradCase g{"legacy_target_dit_skip", base(), 8, {}}; g.cfg.recon_target = ReconTarget::legacy;
    g.cfg.eta = Eta::dit; g.cfg.output_path = OutputPath::skip; v.push_back(g); }
  { GradCase g{"lmpt_raw_nobias", TTTConfig::lmpt(16, 2, 4, InnerModel::mlp), 10, {}}; v.push_back(g); }
  { GradCase g{"vdit_frames", TTTConfig::vdit(16, 2, 4, InnerModel::mlp), 8, {}}; g.cfg.rope = Rope::vdit_frames; v.push_back(g); }
  { GradCase g{"streamed_partial", base(), 11, {3, 6, 2}}; v.push_back(g); }
  { GradCase g{"checkpointed", base(), 12, {}, 2}; v.push_back(g); }
  return v;
}

class GradCheck : public ::testing::TestWithParam<GradCase> {};

TEST_P(GradCheck, DirectionalFiniteDifferencesMatchAutograd) {
  const GradCase& gc = GetParam();
  TTTLayer layer(gc.cfg, 21);
  randomise(layer, 22);
  layer.to(at::kDouble);
  at::manual_seed(23);
  at::Tensor x = at::randn({2, gc.L, gc.cfg.model_dim}, at::kDouble).requires_grad_(true);
  at::Tensor G = at::randn({2, gc.L, gc.cfg.model_dim}, at::kDouble);
  Options o;
  o.checkpoint_group_override = gc.group;
  auto loss = [&]() {
    at::Tensor y;
    if (gc.chunks.empty()) {
      y = layer.forward(x, nullptr, o);
    } else {
      TTTState st;
      y = run_chunks(layer, x, gc.chunks, st, o);
    }
    return (y * G).sum();
  };
  std::vector<std::pair<std::string, at::Tensor>> vars = layer.named_parameters();
  vars.emplace_back("x", x);
  std::vector<at::Tensor> leaves;
  for (auto& [n, t] : vars) leaves.push_back(t);
  auto grads = torch::autograd::grad({loss()}, leaves, {}, false, false, /*allow_unused=*/true);
  at::NoGradGuard ng;
  const double eps = 1e-6;
  for (size_t i = 0; i < vars.size(); ++i) {
    at::Tensor& t = vars[i].second;
    at::Tensor g = grads[i].defined() ? grads[i] : at::zeros_like(t);
    at::Tensor dir = at::randn_like(t);
    double analytic = (g * dir).sum().item<double>();
    t.add_(eps * dir);
    double lp = loss().item<double>();
    t.sub_(2 * eps * dir);
    double lm = loss().item<double>();
    t.add_(eps * dir);
    double numeric = (lp - lm) / (2 * eps);
    EXPECT_NEAR(analytic, numeric, 1e-6 * (1.0 + std::abs(numeric))) << gc.name << ": " << vars[i].first;
  }
}

INSTANTIATE_TEST_SUITE_P(Variants, GradCheck, ::testing::ValuesIn(grad_cases()),
                         [](const ::testing::TestParamInfo<GradCase>& i) { return i.param.name; });

}  // namespace
