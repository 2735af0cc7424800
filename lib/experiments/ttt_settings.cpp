#include "experiments/ttt_settings.h"

#include "core/error.h"
#include "moshi/ttt_settings.h"

namespace mtt::experiments {

using nlohmann::json;

ttt::TTTConfig ttt_config_from_json(const json& cfg, const std::string& where) {
  // The one TTT settings reader (lib/moshi/ttt_settings.h): same keys, spellings and errors as the
  // LM's `ttt:` section; the experiments' toy layer defaults to TTTConfig::moshi.
  const moshi::TTTSettings s =
      cfg.contains("ttt") ? moshi::ttt_settings_from_yaml(json{{"ttt", cfg.at("ttt")}}.dump(), where)
                          : moshi::TTTSettings{};
  ttt::TTTConfig c = ttt::TTTConfig::moshi(s.model_dim.value_or(32), s.num_heads.value_or(2), s.mini_batch_size);
  c.ttt_base_lr = s.base_lr;
  c.ttt_mlp_layers = s.ttt_mlp_layers;
  c.ttt_mlp_expansion_factor = s.ttt_mlp_expansion_factor;
  c.scan_checkpoint_group_size = s.scan_checkpoint_group_size;
  c.inner = s.inner.value_or(c.inner);
  c.eta = s.eta.value_or(c.eta);
  c.recon_target = s.recon_target.value_or(c.recon_target);
  c.output_path = s.output_path.value_or(c.output_path);
  c.rope = s.rope.value_or(c.rope);
  c.validate();
  return c;
}

}  // namespace mtt::experiments
