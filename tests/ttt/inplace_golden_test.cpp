// In-Place TTT (Moshi port variant) against the four golden files inplace_ttt_*.safetensors
// (IPMOSHI TTTGating in train mode): outputs y and V̂, and every gradient, within the README
// tolerances; plus the exact-zero gradients the reference shows.
#include <gtest/gtest.h>

#include "inplace_golden_util.h"
#include "ttt/inplace_ttt.h"

using namespace mtt::test;
using mtt::ttt::InPlaceTTT;
using mtt::ttt::InPlaceTTTOptions;

namespace {

InPlaceTTTOptions golden_options(const Golden& g) {
  // config: dim 16, dim_feedforward 64 (hidden 42), chunk 4, k 2; lr and clip from the metadata.
  auto o = InPlaceTTTOptions::moshi_port(16, 64);
  o.chunk_size = 4;
  o.conv_kernel_size = 2;
  o.lr = std::stod(g.meta.at("lr"));
  const std::string clip = g.meta.at("delta_clip_fro_norm");
  if (clip == "None") {
    o.delta_clip_fro_norm = std::nullopt;
  } else {
    o.delta_clip_fro_norm = std::stod(clip);
  }
  return o;
}

const std::vector<std::string> kParams = {"linear_in.weight", "linear_out.weight", "w_down",
                                          "target_generator.conv1d.conv.weight", "target_generator.W_target.weight"};

struct Result {
  at::Tensor y, v_hat;
  std::map<std::string, at::Tensor> grads;
};

Result run(const Golden& g, at::ScalarType dt) {
  InPlaceTTT block(golden_options(g));
  if (dt == at::kDouble) block.to(at::kDouble);
  block.load(g.t, "", "golden");
  at::Tensor x = g["in.x"].to(dt).detach().clone().set_requires_grad(true);
  at::Tensor e = g["in.token_embeddings"].to(dt).detach().clone().set_requires_grad(true);
  auto out = block.forward(x, e);
  (out.y * g["cot.G"].to(dt)).sum().backward();
  Result r{out.y.detach(), out.v_hat.detach(), {}};
  for (auto& p : block.named_parameters(true)) r.grads[p.key()] = p.value().grad();
  r.grads["x"] = x.grad();
  r.grads["token_embeddings"] = e.grad();
  return r;
}

void check_file(const std::string& name) {
  Golden g = load_golden("ttt/" + name + ".safetensors");
  for (auto dt : {at::kFloat, at::kDouble}) {
    const std::string tag = name + (dt == at::kFloat ? " f32" : " f64");
    Result r = run(g, dt);
    // The reference casts to fp32 inside, so an fp64 port is also held to the fp32 tolerance.
    EXPECT_TRUE(close_to(tag + " y", r.y, g["out.y"], kOutTol));
    EXPECT_TRUE(close_to(tag + " y vs f32 run", r.y, g["out_f32.y"], kOutTol));
    EXPECT_TRUE(close_to(tag + " V_hat", r.v_hat, g["out.V_hat"], kOutTol));
    for (const std::string& p : {"x", "token_embeddings", "linear_in.weight", "w_down",
                                 "target_generator.conv1d.conv.weight", "target_generator.W_target.weight"}) {
      const at::Tensor& ref = g["grad." + p];
      if (ref.abs().max().item<double>() == 0.0) {
        EXPECT_TRUE(exactly_zero(tag + " grad " + p, r.grads[p]));
      } else {
        EXPECT_TRUE(close_to(tag + " grad " + p, r.grads[p], ref, kGradTol));
        EXPECT_TRUE(close_to(tag + " grad_f32 " + p, r.grads[p], g["grad_f32." + p], kGradTol));
      }
    }
    // linear_out is in the checkpoint but the TTT path reads w_down: no gradient at all.
    EXPECT_TRUE(exactly_zero(tag + " grad linear_out.weight", r.grads["linear_out.weight"]));
    EXPECT_EQ(g["grad.linear_out.weight"].abs().max().item<double>(), 0.0);
  }
}

}  // namespace

TEST(InPlaceGolden, ZeroInit) {
  check_file("inplace_ttt_zero_init");
  // Both target-generator factors zero: V̂ ≡ 0, both gradients exactly zero, output = FFN without TTT.
  Golden g = load_golden("ttt/inplace_ttt_zero_init.safetensors");
  Result r = run(g, at::kFloat);
  EXPECT_EQ(r.grads["target_generator.conv1d.conv.weight"].abs().max().item<double>(), 0.0);
  EXPECT_EQ(r.grads["target_generator.W_target.weight"].abs().max().item<double>(), 0.0);
  InPlaceTTT block(golden_options(g));
  block.load(g.t, "", "golden");
  EXPECT_TRUE(at::equal(r.y, block.forward_no_ttt(g["in.x"]).detach()));
}
TEST(InPlaceGolden, RandomInit) { check_file("inplace_ttt_random_init"); }
TEST(InPlaceGolden, RandomInitNoClip) { check_file("inplace_ttt_random_init_noclip"); }
TEST(InPlaceGolden, OfficialInit) {
  check_file("inplace_ttt_official_init");
  // conv = 0, W_target = diagonal: the conv (the zero factor) gets a gradient, W_target none.
  Golden g = load_golden("ttt/inplace_ttt_official_init.safetensors");
  Result r = run(g, at::kFloat);
  EXPECT_GT(r.grads["target_generator.conv1d.conv.weight"].norm().item<double>(), 0.0);
  EXPECT_EQ(r.grads["target_generator.W_target.weight"].abs().max().item<double>(), 0.0);
}

TEST(InPlaceGolden, GradNormsMatchMetadata) {
  // grad_norms_f64 in the metadata, e.g. "conv...=4.098303e-06; W_target...=4.461490e-06" (random_init).
  for (const std::string name : {"inplace_ttt_random_init", "inplace_ttt_random_init_noclip"}) {
    Golden g = load_golden("ttt/" + name + ".safetensors");
    Result r = run(g, at::kFloat);
    const std::string& s = g.meta.at("grad_norms_f64");
    for (const std::string& p : kParams) {
      auto pos = s.find(p + "=");
      ASSERT_NE(pos, std::string::npos) << p;
      double ref = std::stod(s.substr(pos + p.size() + 1));
      double got = r.grads[p].defined() ? r.grads[p].norm().item<double>() : 0.0;
      EXPECT_NEAR(got, ref, 1e-4 * std::max(ref, 1e-30)) << name << " " << p;
    }
  }
}

TEST(InPlaceGolden, LoraNamesAreMergedOnLoad) {
  // Port checkpoint with LoRA: W_target.frozen_W.weight + scaling · lora_B · lora_A (checkpoint-keys.md §2.3).
  Golden g = load_golden("ttt/inplace_ttt_random_init_noclip.safetensors");
  const at::Tensor W = g["target_generator.W_target.weight"];
  const int64_t D = W.size(0), r = 3;
  at::Tensor A = at::randn({r, D}) * 0.1, Bm = at::randn({D, r}) * 0.1;
  auto opts = golden_options(g);
  opts.lora_scaling = 2.0;
  std::map<std::string, at::Tensor> sd = g.t;
  sd.erase("target_generator.W_target.weight");
  sd["target_generator.W_target.frozen_W.weight"] = W - 2.0 * at::matmul(Bm, A);
  sd["target_generator.W_target.lora_A.weight"] = A;
  sd["target_generator.W_target.lora_B.weight"] = Bm;
  InPlaceTTT block(opts);
  block.load(sd, "", "lora.safetensors");
  EXPECT_TRUE(at::allclose(block.target_proj, W, 1e-6, 1e-6));
  auto out = block.forward(g["in.x"], g["in.token_embeddings"]);
  EXPECT_TRUE(close_to("y with merged LoRA W_target", out.y, g["out.y"], kOutTol));

  // Frozen weight alone (zero-initialised LoRA not saved) loads as the plain weight.
  sd.erase("target_generator.W_target.lora_A.weight");
  sd.erase("target_generator.W_target.lora_B.weight");
  sd["target_generator.W_target.frozen_W.weight"] = W;
  InPlaceTTT block2(opts);
  block2.load(sd, "", "lora.safetensors");
  EXPECT_TRUE(at::equal(block2.target_proj, W));
  // Half a LoRA pair is an input error naming the key.
  sd["target_generator.W_target.lora_A.weight"] = A;
  try {
    InPlaceTTT block3(opts);
    block3.load(sd, "", "lora.safetensors");
    FAIL() << "no error";
  } catch (const mtt::Error& e) {
    EXPECT_EQ(e.key(), "target_generator.W_target.lora_B.weight");
  }
}
