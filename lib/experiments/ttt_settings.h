#pragma once
// The `ttt:` section of an experiment config as a TTT layer configuration. Keys follow the fork's
// YAML (mini_batch_size, base_lr, ttt_mlp_layers, ttt_mlp_expansion_factor, initial_gating_alpha)
// plus our variant switches (eta, recon_target, output_path, inner, rope, model_dim, num_heads).
#include <nlohmann/json.hpp>
#include <string>

#include "ttt/ttt_layer.h"

namespace mtt::experiments {

ttt::TTTConfig ttt_config_from_json(const nlohmann::json& cfg, const std::string& where);

}  // namespace mtt::experiments
