#include "experiments/ttt_settings.h"

#include "core/error.h"

namespace mtt::experiments {

using nlohmann::json;

namespace {
template <class E>
E pick(const json& t, const char* key, std::initializer_list<std::pair<const char*, E>> options, E def,
       const std::string& where) {
  if (!t.contains(key)) return def;
  std::string v = t.at(key).is_string() ? t.at(key).get<std::string>() : t.at(key).dump();
  std::string names;
  for (const auto& [n, e] : options) {
    if (v == n) return e;
    names += (names.empty() ? "" : ", ") + std::string(n);
  }
  throw Error(where, std::string("ttt.") + key, "unknown value '" + v + "' (one of: " + names + ")");
}
}  // namespace

ttt::TTTConfig ttt_config_from_json(const json& cfg, const std::string& where) {
  const json t = cfg.value("ttt", json::object());
  try {
    ttt::TTTConfig c = ttt::TTTConfig::moshi(t.value("model_dim", 32), t.value("num_heads", 2),
                                             t.value("mini_batch_size", 16));
    c.ttt_base_lr = t.value("base_lr", 1.0);
    c.ttt_mlp_layers = t.value("ttt_mlp_layers", 2);
    c.ttt_mlp_expansion_factor = t.value("ttt_mlp_expansion_factor", 4.0);
    c.scan_checkpoint_group_size = t.value("scan_checkpoint_group_size", 0);
    c.inner = pick<ttt::InnerModel>(t, "inner", {{"mlp", ttt::InnerModel::mlp}, {"linear", ttt::InnerModel::linear}},
                                    c.inner, where);
    c.eta = pick<ttt::Eta>(t, "eta", {{"causal", ttt::Eta::causal}, {"dit", ttt::Eta::dit}}, c.eta, where);
    c.recon_target = pick<ttt::ReconTarget>(
        t, "recon_target",
        {{"correct", ttt::ReconTarget::correct}, {"legacy", ttt::ReconTarget::legacy}, {"raw", ttt::ReconTarget::raw}},
        c.recon_target, where);
    c.output_path = pick<ttt::OutputPath>(
        t, "output_path", {{"post_norm_wo", ttt::OutputPath::post_norm_wo}, {"skip", ttt::OutputPath::skip}},
        c.output_path, where);
    c.rope = pick<ttt::Rope>(t, "rope", {{"none", ttt::Rope::none}, {"minibatch_1d", ttt::Rope::minibatch_1d}, {"fork_audio", ttt::Rope::fork_audio}},
                             c.rope, where);
    c.validate();
    return c;
  } catch (const json::exception& e) {
    throw Error(where, "ttt", std::string("bad value: ") + e.what());
  }
}

}  // namespace mtt::experiments
