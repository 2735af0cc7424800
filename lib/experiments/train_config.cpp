#include "experiments/train_config.h"

#include "core/error.h"

namespace mtt::experiments {

using nlohmann::json;

namespace {
template <class T>
void read(const json& obj, const char* key, T& out, const std::string& where) {
  if (!obj.is_object() || !obj.contains(key)) return;
  try {
    out = obj.at(key).get<T>();
  } catch (const json::exception&) {
    throw Error(where, key, "expected " + std::string(std::is_same_v<T, bool> ? "true or false" : std::is_integral_v<T> ? "an integer" : "a number") +
                                ", got " + obj.at(key).dump());
  }
}
}  // namespace

TrainConfig train_config_from_json(const json& cfg, const std::string& where) {
  TrainConfig c;
  read(cfg, "max_steps", c.max_steps, where);
  read(cfg, "seed", c.seed, where);
  read(cfg, "batch_size", c.batch_size, where);
  read(cfg, "num_microbatches", c.num_microbatches, where);
  read(cfg, "max_norm", c.max_norm, where);
  read(cfg, "log_freq", c.log_freq, where);
  read(cfg, "ckpt_freq", c.ckpt_freq, where);
  read(cfg, "do_ckpt", c.do_ckpt, where);
  read(cfg, "eval_freq", c.eval_freq, where);
  read(cfg, "do_eval", c.do_eval, where);
  if (cfg.is_object() && cfg.contains("num_ckpt_keep")) {
    if (cfg["num_ckpt_keep"].is_null()) c.num_ckpt_keep.reset();
    else {
      int k = 0;
      read(cfg, "num_ckpt_keep", k, where);
      if (k < 1) throw Error(where, "num_ckpt_keep", "must be >= 1 (null: keep every checkpoint)");
      c.num_ckpt_keep = k;
    }
  }
  read(cfg, "tbptt_chunk", c.tbptt_chunk, where);
  read(cfg, "checkpoint_group", c.checkpoint_group, where);
  if (cfg.contains("optim")) {
    const json& o = cfg["optim"];
    read(o, "lr", c.lr, where);
    read(o, "weight_decay", c.weight_decay, where);
    read(o, "pct_start", c.pct_start, where);
  }
  if (cfg.contains("ttt")) read(cfg["ttt"], "lr", c.ssm_lr, where);
  if (c.max_steps <= 0) throw Error(where, "max_steps", "must be positive");
  if (c.num_microbatches <= 0) throw Error(where, "num_microbatches", "must be positive");
  if (c.batch_size <= 0) throw Error(where, "batch_size", "must be positive");
  if (c.tbptt_chunk < 0) throw Error(where, "tbptt_chunk", "must be >= 0 (0: the whole sequence in one chunk)");
  if (c.pct_start < 0 || c.pct_start >= 1) throw Error(where, "optim.pct_start", "must be in [0, 1)");
  if (c.log_freq <= 0) throw Error(where, "log_freq", "must be positive");
  if (c.eval_freq < 0) throw Error(where, "eval_freq", "must be >= 0");
  return c;
}

}  // namespace mtt::experiments
