#pragma once
// The configuration keys the experiment kinds read (io::ConfigRules), in groups the kinds
// combine, and the check of a spec's grid points against a kind's keys before a sweep runs.
// The limits are sanity bounds for CPU experiments, not model limits: they keep a typo (a
// vocabulary of 0, a sequence of 10^12, a NaN learning rate) from reaching LibTorch as a crash,
// a hang or a silent NaN run.
#include <set>
#include <string>
#include <vector>

#include "experiments/grid.h"
#include "experiments/registry.h"
#include "io/config_rules.h"

namespace mtt::experiments {

// TrainConfig (train_config.h): max_steps, seed, batch_size, num_microbatches, max_norm, log_freq,
// ckpt_freq, do_ckpt, num_ckpt_keep, eval_freq, do_eval, tbptt_chunk, checkpoint_group,
// optim.{lr, weight_decay, pct_start}.
const io::ConfigRules& train_config_rules();

// The `ttt:` section, read by the one TTT settings reader (moshi/ttt_settings.h) with its own
// errors, placed at the spec's line. `used`: the ttt keys this kind acts on (any other is an
// error naming them; empty: every TTT settings key). `toy_layer`: the section also builds a
// stand-alone TTT layer (experiments/ttt_settings.h), whose consistency is checked too.
io::ConfigRules::Check ttt_section_check(std::set<std::string> used = {}, bool toy_layer = false);

// Keys of the toy TTT LM on the permutation task (toy_training.h): vocab, seq_len, follow, the
// ttt keys it uses, the training keys, and a cap on batch x length x vocabulary.
const io::ConfigRules& toy_lm_rules();
// The ttt keys the toy LM reads.
const std::set<std::string>& toy_ttt_keys();

// A cap on the product of integer keys (each with the default its reader uses when the key is
// absent): the size of the largest tensor a kind allocates, so a grid value cannot ask for
// terabytes. The error is placed at `blame`.
io::ConfigRules::Relation size_cap(std::vector<std::pair<std::string, int64_t>> factors, std::string blame,
                                   int64_t cap = int64_t{1} << 26);

// Checks every point of the grid (base, reduced base and the point's axis values) against the
// kind's keys; an error names the spec and the line of the offending value ("grid.optim.lr[1]
// (line 12)"). With `reduced`, the full grid is checked too. Does nothing for a kind that declares no key.
void check_grid_configs(const ExperimentSpec& spec, const ExperimentKind& kind, const std::vector<GridPoint>& points,
                        bool reduced);

}  // namespace mtt::experiments
