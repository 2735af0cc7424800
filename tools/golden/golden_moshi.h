#pragma once
// The Moshi LM goldens (golden/moshi: upstream's own test assets, tests/test_lm.py): a model state
// dict, the codes and the reference logits/masks, checked as upstream checks them (masks equal,
// per-codebook masked cross-entropy within a relative 1e-6) and, beyond that, the valid logits.
#include "golden/golden_runner.h"
#include "moshi/config.h"

namespace mtt::golden {

// The LMModel configuration of a triple. Upstream stores none in the files: a `config` metadata
// JSON (moshi config.json keys) in any of the three is used when present; otherwise every size is
// read from the state dict's shapes and the settings that leave no trace in shapes (heads,
// delays, context, depformer schedule, gating kind) are those of upstream tests/test_lm.py.
moshi::LMConfig moshi_lm_config(const MoshiLMFiles& files);

Report run_moshi_lm(const MoshiLMFiles& files, const RunOptions& opt);

}  // namespace mtt::golden
