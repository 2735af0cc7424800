#pragma once
// The five findings, each computed from the model's declaration (moshi/schema.h) and the
// streamed statistics of every tensor (stats.h); no name lists live here.
#include <map>
#include <string>
#include <vector>

#include "audit/infer_config.h"
#include "audit/report.h"
#include "audit/stats.h"
#include "io/checkpoint.h"
#include "moshi/schema.h"

namespace mtt::audit {

using StatsMap = std::map<std::string, TensorStats>;
using CompareMap = std::map<std::string, CompareStats>;

// Layer of a checkpoint key (transformer.layers.N.*), or -1.
int key_layer(const std::string& key);
// True when `layer` passes the --layers filter (an empty filter passes everything; -1 = not a
// layer tensor and passes only an empty filter).
bool layer_selected(const std::vector<int>& filter, int layer);

Inventory make_inventory(const io::Checkpoint& ckpt, const InferredConfig& inferred, const moshi::ModelSchema& schema,
                         const StatsMap& stats);
Unused find_unused(const moshi::ModelSchema& schema, const StatsMap& stats, uint64_t total_params,
                   const std::vector<int>& filter);
// `base` empty when no --base was given.
Frozen find_frozen(const moshi::ModelSchema& schema, const StatsMap& stats, const CompareMap& base,
                   const std::string& base_path, uint64_t not_in_base, const std::vector<int>& filter);
Gating gating_stats(const io::Checkpoint& ckpt, const moshi::ModelSchema& schema, const std::vector<int>& filter);
DeadPaths find_dead_paths(const moshi::ModelSchema& schema, const StatsMap& stats, const std::vector<int>& filter);

// "bf16(0.3) = 0.30078125" when v is a known initial value (the declaration's constant, or one of
// 0, 1, 0.1, 0.3, 0.5 as stored in bf16/f16/f32/f64); "" otherwise.
std::string init_value_label(double v, const moshi::ParamDecl* decl);

}  // namespace mtt::audit
