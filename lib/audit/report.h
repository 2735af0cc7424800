#pragma once
// The audit report of `ttt-inspect` (issue 2): one struct per finding, filled by
// inventory.cpp, unused.cpp, frozen.cpp, gating.cpp and dead_paths.cpp, rendered by render.h as an
// aligned table or as JSON (schema: docs/inspect-json.md).
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "moshi/schema.h"

namespace mtt::audit {

struct ModuleRow {
  std::string module;  // schema module ("transformer.attn", "ttt.inner", ...) or "(undeclared)"
  uint64_t tensors = 0, params = 0, bytes = 0;
};

struct ShapeMismatch {
  std::string name;
  std::vector<int64_t> expected, found;
};

// A tensor holding NaN or Inf values, and where the first one is.
struct NonFiniteTensor {
  std::string name;
  uint64_t nan = 0, inf = 0;
  int64_t first_index = -1;              // flat (row-major) index of the first NaN or Inf
  int64_t first_nan = -1, first_inf = -1;  // flat indices, -1: none of that kind
  std::vector<int64_t> first_position;   // first_index as an index per dimension
};

// 1. Inventory: what the checkpoint is and holds.
struct Inventory {
  std::string checkpoint;      // path as given
  std::string description;     // io::Checkpoint::describe()
  std::string config_source;   // "metadata" | "shapes" | "shapes+config.json"
  std::vector<std::string> notes;
  // How the run-dir resolver read the configuration (files, TTT settings, base weights, numerics).
  std::vector<std::string> resolved;
  moshi::SchemaConfig config;
  bool partial = false;        // adapter / subset file: absent declared keys are expected
  std::vector<ModuleRow> modules;
  uint64_t tensors = 0, params = 0, bytes = 0;
  uint64_t declared = 0;       // tensors the model declares for this configuration
  uint64_t missing = 0;        // declared but absent
  std::vector<std::string> missing_examples;  // first few
  std::vector<std::string> undeclared;        // present but not declared by the model
  std::vector<ShapeMismatch> shape_mismatches;
  uint64_t duplicate_tensors = 0, duplicate_params = 0, duplicate_bytes = 0;  // fork original_layer copies
  std::vector<std::string> duplicate_mismatches;  // copies that differ from their canonical key
  std::map<std::string, uint64_t> dtypes;         // dtype name -> tensors
  uint64_t nan = 0, inf = 0;
  std::vector<std::string> nonfinite_tensors;
  std::vector<NonFiniteTensor> nonfinite;  // the same tensors, with counts and first indices
};

// 2. Unused parameters: checkpoint keys the model's forward never reads for this configuration.
struct UnusedEntry {
  std::string name, module, reason;
  int layer = -1;
  bool declared = true;  // false: not declared by the model at all
  uint64_t params = 0, bytes = 0;
};
struct Unused {
  std::vector<UnusedEntry> entries;
  uint64_t params = 0, bytes = 0;
  double share_percent = 0;  // params / inventory params * 100
};

// 3. Frozen parameters.
struct FrozenEntry {
  std::string name, role;
  int layer = -1;
  double value = 0;          // the constant
  std::string init_label;    // "bf16(0.3) = 0.30078125" when the constant is a known initial value
  uint64_t params = 0, bytes = 0;
  uint64_t varying_siblings = 0;  // tensors of the same role that vary
};
struct AtInitGroup {  // every tensor of a role constant (untrained checkpoint?): information only
  std::string role;
  uint64_t tensors = 0;
  std::string values;  // e.g. "1", "0, 0.30078125"
};
struct BaseEntry {
  std::string name, module;
  int layer = -1;
  bool unchanged = false;
  double rel_change = 0;  // ||W - W_base|| / ||W_base||
  uint64_t params = 0, bytes = 0;
  bool problem = false;   // unchanged while other tensors of its module moved
};
struct Frozen {
  std::vector<FrozenEntry> entries;
  uint64_t params = 0, bytes = 0;
  std::vector<AtInitGroup> at_init_groups;
  bool with_base = false;
  std::string base;
  std::vector<BaseEntry> base_entries;  // every key present in both
  uint64_t unchanged = 0, unchanged_params = 0, moved = 0, not_in_base = 0, base_problems = 0;
};

// 4. Gating statistics per TTT layer.
struct Summary {
  double mean = 0, min = 0, max = 0, std = 0;
};
struct GateRow {
  int layer = -1;
  std::string direction;  // "forward" | "backward"
  std::string key;
  bool consumed = true;
  uint64_t numel = 0;
  Summary alpha;           // raw gating_alpha
  Summary multiplier_pct;  // 100 * tanh(clamp(alpha, -3, 3)), the TTT branch multiplier (docs/ttt.md §4)
  uint64_t nonfinite = 0;
};
struct Gating {
  std::vector<GateRow> rows;
};

// 5. Dead gradient paths.
struct DeadPath {
  std::string name;
  int layer = -1;
  std::vector<std::string> factors;
  std::vector<bool> factor_zero;
  std::string status;  // "dead" | "one_factor_zero" | "live" | "absent"
  std::string remedy;
};
struct DeadPaths {
  std::vector<DeadPath> paths;
  uint64_t dead = 0;
};

struct Report {
  Inventory inventory;
  Unused unused;
  Frozen frozen;
  Gating gating;
  DeadPaths dead_paths;
  std::vector<int> layer_filter;  // --layers (empty: all)
  std::vector<std::string> problems;  // one line per problem found
  double seconds = 0;
  uint64_t bytes_scanned = 0;
  // 0: nothing found, 1: ran and found problems (error.h kExitFindings).
  int exit_status() const { return problems.empty() ? 0 : 1; }
};

}  // namespace mtt::audit
