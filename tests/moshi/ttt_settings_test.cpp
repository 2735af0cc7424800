// The one TTT configuration model (lib/moshi/ttt_settings.h): every field survives the JSON round
// trip, the forks' own sections parse with their meanings, unknown keys fail with file and line.
#include <gtest/gtest.h>

#include <functional>

#include "core/error.h"
#include "moshi/config.h"
#include "moshi/ttt_settings.h"

using namespace mtt::moshi;
namespace ttt = mtt::ttt;

namespace {

// One mutation per field, each away from the default.
const std::vector<std::pair<std::string, std::function<void(TTTSettings&)>>>& mutations() {
  static const std::vector<std::pair<std::string, std::function<void(TTTSettings&)>>> m = {
      {"enable", [](TTTSettings& t) { t.enable = true; }},
      {"layers", [](TTTSettings& t) { t.layers = "1,3"; }},
      {"variant", [](TTTSettings& t) { t.variant = TTTVariant::inplace; }},
      {"dialect", [](TTTSettings& t) { t.dialect = TTTDialect::ttt_fork; }},
      {"base_lr", [](TTTSettings& t) { t.base_lr = 0.25; }},
      {"mini_batch_size", [](TTTSettings& t) { t.mini_batch_size = 8; }},
      {"persistent_states", [](TTTSettings& t) { t.persistent_states = false; }},
      {"initial_gating_alpha", [](TTTSettings& t) { t.initial_gating_alpha = 0.05; }},
      {"ttt_mlp_layers", [](TTTSettings& t) { t.ttt_mlp_layers = 3; }},
      {"ttt_mlp_expansion_factor", [](TTTSettings& t) { t.ttt_mlp_expansion_factor = 2.0; }},
      {"ttt_mlp_hidden_dims", [](TTTSettings& t) { t.ttt_mlp_hidden_dims = {64}; }},
      {"use_rope", [](TTTSettings& t) { t.use_rope = true; }},
      {"rope_theta", [](TTTSettings& t) { t.rope_theta = 500.0; }},
      {"eval_chunk_size", [](TTTSettings& t) { t.eval_chunk_size = 24; }},
      {"log_inner_loop_losses", [](TTTSettings& t) { t.log_inner_loop_losses = true; }},
      {"output_post_norm_wo", [](TTTSettings& t) { t.output_post_norm_wo = true; }},
      {"scan_checkpoint_group_size", [](TTTSettings& t) { t.scan_checkpoint_group_size = 2; }},
      {"multilayer_query", [](TTTSettings& t) { t.multilayer_query = ttt::MultiLayerQuery::fork_updated; }},
      {"streaming_state", [](TTTSettings& t) { t.streaming_state = ttt::StreamingState::fork_restart; }},
      {"model_dim", [](TTTSettings& t) { t.model_dim = 48; }},
      {"num_heads", [](TTTSettings& t) { t.num_heads = 3; }},
      {"inner", [](TTTSettings& t) { t.inner = ttt::InnerModel::linear; }},
      {"eta", [](TTTSettings& t) { t.eta = ttt::Eta::dit; }},
      {"recon_target", [](TTTSettings& t) { t.recon_target = ttt::ReconTarget::legacy; }},
      {"output_path", [](TTTSettings& t) { t.output_path = ttt::OutputPath::skip; }},
      {"rope", [](TTTSettings& t) { t.rope = ttt::Rope::fork_audio; }},
      {"pad_updates", [](TTTSettings& t) { t.pad_updates = ttt::PadUpdates::legacy; }},
      {"proj_bias_init", [](TTTSettings& t) { t.proj_bias_init = "torch_default"; }},
      {"lr", [](TTTSettings& t) { t.lr = 0.01; }},
      {"inplace_start_layer", [](TTTSettings& t) { t.inplace_start_layer = 1; }},
      {"inplace_layer_frequency", [](TTTSettings& t) { t.inplace_layer_frequency = 2; }},
      {"conv_kernel_size", [](TTTSettings& t) { t.conv_kernel_size = 3; }},
      {"inplace_lr", [](TTTSettings& t) { t.inplace_lr = 0.3; }},
      {"inplace_chunk_size", [](TTTSettings& t) { t.inplace_chunk_size = 7; }},
      {"inplace_delta_clip", [](TTTSettings& t) { t.inplace_delta_clip = 0.0; }},
      {"inplace_delta_clip_epsilon", [](TTTSettings& t) { t.inplace_delta_clip_epsilon = 1e-9; }},
      {"inplace_activation", [](TTTSettings& t) { t.inplace_activation = "gelu"; }},
  };
  return m;
}

TTTSettings round_trip(const TTTSettings& t) { return ttt_settings_from_yaml(ttt_settings_to_json(t), "rt.json"); }

}  // namespace

TEST(TTTSettings, EveryFieldRoundTripsAlone) {
  const TTTSettings def;
  EXPECT_TRUE(round_trip(def) == def);
  for (const auto& [name, mutate] : mutations()) {
    TTTSettings t;
    mutate(t);
    EXPECT_FALSE(t == def) << name << ": operator== does not see the field";
    EXPECT_NE(ttt_settings_to_json(t), ttt_settings_to_json(def)) << name << ": to_json drops the field";
    EXPECT_TRUE(round_trip(t) == t) << name << ": lost in the round trip\n" << ttt_settings_to_json(t);
  }
}

TEST(TTTSettings, AllFieldsTogetherRoundTrip) {
  TTTSettings t;
  for (const auto& [name, mutate] : mutations()) mutate(t);
  t.ttt_mlp_hidden_dims = {64, 32};  // ttt_mlp_layers 3 needs two widths
  EXPECT_TRUE(round_trip(t) == t) << ttt_settings_to_json(t);
}

TEST(TTTSettings, LMConfigJsonKeepsTheTTTSection) {
  // LMConfig::to_json used to drop output_post_norm_wo and ttt_mlp_hidden_dims.
  LMConfig c = LMConfig::tiny();
  c.ttt.enable = true;
  c.ttt.layers = "1,2";
  c.ttt.output_post_norm_wo = true;
  c.ttt.ttt_mlp_layers = 3;
  c.ttt.ttt_mlp_hidden_dims = {40, 24};
  c.ttt.mini_batch_size = 8;
  const LMConfig back = LMConfig::from_json(c.to_json(), "c.json");
  EXPECT_TRUE(back.ttt == c.ttt) << c.to_json();
}

TEST(TTTSettings, TheForksSectionWithNulls) {
  // The TTT fork's args.yaml as simple_parsing writes it: every TTTArgs key, nulls included.
  const std::string yaml = R"(run_dir: /x
ttt:
  enable: true
  layers: "1,2"
  base_lr: 0.5
  mini_batch_size: 8
  persistent_states: true
  initial_gating_alpha: 0.05
  override_gating_alpha_on_resume: false
  ttt_layer_context: null
  non_ttt_layer_context: null
  weight_lr_multiplier: 10.0
  alpha_lr_multiplier: 100.0
  log_inner_loop_losses: false
  inner_loop_log_interval: 1
  save_inner_loop_plots: false
  inner_loop_plot_dir: ./evaluation_plots/inner_loop
  optimize_chunk_size: true
  chunk_size: null
  max_chunk_size: 50
  prefer_efficiency: true
  ttt_mlp_layers: 2
  ttt_mlp_hidden_dims: null
  ttt_mlp_expansion_factor: 4.0
  normalize_ttt_output: false
  target_output_norm: 25.0
  use_rope: false
  rope_theta: 10000.0
  unfrozen_attention_layers: none
  enable_training_diagnostics: false
  training_diagnostic_frequency: 100
)";
  const TTTSettings t = ttt_settings_from_yaml(yaml, "args.yaml", TTTDialect::ttt_fork);
  EXPECT_TRUE(t.enable);
  EXPECT_EQ(t.dialect, TTTDialect::ttt_fork);
  EXPECT_EQ(t.layers, "1,2");
  EXPECT_EQ(t.mini_batch_size, 8);
  EXPECT_DOUBLE_EQ(t.base_lr, 0.5);
  EXPECT_DOUBLE_EQ(t.initial_gating_alpha, 0.05);
  EXPECT_FALSE(t.eval_chunk_size.has_value());
  EXPECT_TRUE(t.ttt_mlp_hidden_dims.empty());
  EXPECT_EQ(t.not_acted_on.size(), 13u);  // the tooling keys, reported
}

TEST(TTTSettings, ThePortsSections) {
  // The In-Place port's args.yaml `ttt:` (its TTTArgs: `enabled`, chunk_size = update chunk).
  const TTTSettings a = ttt_settings_from_yaml(
      "ttt:\n  enabled: true\n  layer_frequency: 2\n  start_layer: 1\n  chunk_size: 8\n  learning_rate: 0.5\n"
      "  conv_kernel_size: 2\n  delta_clip_fro_norm: null\n  unfreeze_ttt_layers: false\n",
      "args.yaml");
  EXPECT_EQ(a.dialect, TTTDialect::inplace_port);
  EXPECT_EQ(a.variant, TTTVariant::inplace);
  EXPECT_EQ(a.inplace_chunk_size, 8);
  EXPECT_DOUBLE_EQ(a.inplace_lr, 0.5);
  EXPECT_EQ(a.inplace_delta_clip, 0.0);  // None: no clip
  EXPECT_EQ(a.inplace_activation, "gelu");
  EXPECT_EQ(a.resolve_layers(4), (std::vector<int>{1, 3}));
  // Its config.json ttt_config, read by LMConfig (the port's loader reads it there).
  LMConfig c = LMConfig::tiny();
  nlohmann::json j = nlohmann::json::parse(c.to_json());
  j["ttt_config"] = {{"enabled", true}, {"layer_frequency", 2}, {"start_layer", 1}, {"chunk_size", 8},
                     {"learning_rate", 0.001}, {"conv_kernel_size", 2}};
  const LMConfig p = LMConfig::from_json(j.dump(), "config.json");
  EXPECT_TRUE(p.ttt.enable);
  EXPECT_EQ(p.ttt.variant, TTTVariant::inplace);
  EXPECT_DOUBLE_EQ(p.ttt.inplace_delta_clip, 1e-5);  // the port's default when ttt_config omits it
}

TEST(TTTSettings, BadSectionsNameFileKeyAndLine) {
  auto msg = [](const std::string& yaml) -> std::string {
    try {
      ttt_settings_from_yaml(yaml, "run.yaml");
    } catch (const mtt::Error& e) {
      return e.what();
    }
    return "no error";
  };
  EXPECT_NE(msg("ttt:\n  enable: true\n  mini_bach_size: 8\n").find("run.yaml: ttt.mini_bach_size (line 3): unknown key"),
            std::string::npos)
      << msg("ttt:\n  enable: true\n  mini_bach_size: 8\n");
  EXPECT_NE(msg("ttt:\n  mini_batch_size: [1]\n").find("ttt.mini_batch_size (line 2): bad value"), std::string::npos);
  EXPECT_NE(msg("ttt:\n  ttt_layer_context: 750\n").find("per-layer attention context is not supported"), std::string::npos);
  EXPECT_NE(msg("ttt:\n  normalize_ttt_output: true\n").find("not supported"), std::string::npos);
  EXPECT_NE(msg("ttt:\n  base_lr: .nan\n").find("ttt.base_lr"), std::string::npos);
  EXPECT_NE(msg("ttt:\n  eta: sideways\n").find("unknown value 'sideways' (one of: causal, dit)"), std::string::npos);
  EXPECT_NE(msg("ttt:\n  mini_batch_size: 0\n").find("ttt.mini_batch_size"), std::string::npos);
}
