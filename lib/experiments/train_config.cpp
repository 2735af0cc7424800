#include "experiments/train_config.h"

#include <cmath>
#include <limits>

#include "core/error.h"

namespace mtt::experiments {

using nlohmann::json;

namespace {
// Integers must be integral and in the field's range (nlohmann would truncate 2.5, wrap -1 into an
// unsigned seed and cast 1e20 with undefined behaviour); numbers must be finite.
template <class T>
void read(const json& obj, const char* key, T& out, const std::string& where) {
  if (!obj.is_object() || !obj.contains(key)) return;
  const json& v = obj.at(key);
  if constexpr (std::is_same_v<T, bool>) {
    if (!v.is_boolean()) throw Error(where, key, "expected true or false, got " + v.dump());
    out = v.get<bool>();
  } else if constexpr (std::is_integral_v<T>) {
    const double d = v.is_number() ? v.get<double>() : std::nan("");
    const bool integral = v.is_number_integer() || (v.is_number_float() && std::isfinite(d) && d == std::floor(d));
    const bool in_range = integral && (v.is_number_unsigned() ? v.get<uint64_t>() <= static_cast<uint64_t>(
                                                                     std::numeric_limits<T>::max())
                                                              : d >= static_cast<double>(std::numeric_limits<T>::min()) &&
                                                                    d <= static_cast<double>(std::numeric_limits<T>::max()));
    if (!in_range)
      throw Error(where, key, "expected an integer in " + std::to_string(std::numeric_limits<T>::min()) + ".." +
                                  std::to_string(std::numeric_limits<T>::max()) + ", got " + v.dump());
    out = v.is_number_integer() ? v.get<T>() : static_cast<T>(d);
  } else {
    if (!v.is_number() || !std::isfinite(v.get<double>()))
      throw Error(where, key, "expected a finite number, got " + (v.is_number() ? std::to_string(v.get<double>()) : v.dump()));
    out = v.get<T>();
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
  if (c.max_steps > 10'000'000) throw Error(where, "max_steps", "must be at most 10000000");
  if (c.lr < 0) throw Error(where, "optim.lr", "must be >= 0");
  if (c.weight_decay < 0) throw Error(where, "optim.weight_decay", "must be >= 0");
  if (c.log_freq <= 0) throw Error(where, "log_freq", "must be positive");
  if (c.ckpt_freq < 0) throw Error(where, "ckpt_freq", "must be >= 0 (0: only the final checkpoint)");
  if (c.checkpoint_group < -1) throw Error(where, "checkpoint_group", "must be >= -1 (-1: the layer's own)");
  if (c.eval_freq < 0) throw Error(where, "eval_freq", "must be >= 0");
  return c;
}

}  // namespace mtt::experiments
