#pragma once
// The reference families of shared/golden (golden README "Case families") and, for each, the
// configuration of our implementation read from the file itself: shapes from the stored tensors,
// hyper-parameters (mini-batch, base_lr, eps, chunk size, clip, activation, RoPE, padding) from the
// metadata the generator recorded. The golden runner and the golden tests both configure through
// these functions, so any file of a known family is a test case; nothing is keyed on a case name.
#include <optional>
#include <string>
#include <vector>

#include "golden/golden_file.h"
#include "ttt/hybrid_ttt_path.h"
#include "ttt/inplace_ttt.h"
#include "ttt/ssm_gating.h"
#include "ttt/ttt_layer.h"

namespace mtt::golden {

enum class Family {
  vdit_op,                   // VDIT ttt_mlp()/ttt_linear() op + scan on [B,H,NC,b,d]
  vdit_layer,                // VDIT TTTWrapper.forward from hidden states
  lmpt_dual,                 // LMPT get_ttt_inputs + dual-form ttt
  lmpt_layer,                // LMPT TTTLinear/TTTMLP.forward (remainder mini-batch included)
  ln_reconstruction_target,  // the target LN in several implementations (variants)
  ssm_gating,                // tanh(clamp(alpha)) x (fork) vs tanh(alpha) x (VDIT) (variants)
  fork_hybrid_ttt_path,      // the fork's HybridSeqModelingBlock._ttt_forward
  inplace_ttt,               // In-Place TTT TTTGating (train mode)
  moshi_lm,                  // upstream Moshi LMModel forward (model + codes + out files)
};
const char* family_name(Family f);

// How pure the reference's float64 run is (golden README "Tolerances").
enum class Fidelity { exact, rope32, tokidx32, fp32 };
const char* fidelity_name(Fidelity f);

// The family of a golden file: from the code that produced it (`reference` / `reference.*`
// metadata), else from the case name's family prefix; nullopt when neither names a known family.
std::optional<Family> detect_family(const GoldenFile& g);
// Throws mtt::Error(path, "reference") naming what was found when the family is unknown.
Family require_family(const GoldenFile& g);
// Fidelity class of the file's float64 run: the family's, or fp32 when the metadata says the
// reference casts to float32 inside (`precision_note`).
Fidelity fidelity_of(const GoldenFile& g, Family f);

// README tolerances, relative to max|ref| per tensor: a float32 port (or any port against the
// float32 run) 1e-5 outputs / 3e-5 gradients; a float64 port against the float64 run per class.
struct Tolerance {
  double out = 1e-5, grad = 3e-5;
};
Tolerance readme_tolerance(Fidelity f, bool f64_port, bool against_f32);

// Variants stored in one file as out.<variant>.<name> (ln_reconstruction_target, ssm_gating),
// sorted; empty for single-implementation files.
std::vector<std::string> variants(const GoldenFile& g);

// --- vdit_op ---
struct VditOpSettings {
  double inner_ln_eps = 1e-8;    // metadata inner_ln_eps (VDIT ops/utils.py)
  int64_t checkpoint_group = 0;  // call's checkpoint_group_size (memory only, values unchanged)
};
VditOpSettings vdit_op_settings(const GoldenFile& g);
// Inner-model tensor names under `prefix` in file order: {W1, W2, ...} / {weights.0, ...} and biases.
void inner_tensor_names(const GoldenFile& g, const std::string& prefix, std::vector<std::string>& weights,
                        std::vector<std::string>& biases);

// --- layers (parameter names relative to `prefix`: "ttt." for VDIT, "" for LMPT) ---
ttt::TTTConfig vdit_layer_config(const GoldenFile& g);
ttt::TTTConfig lmpt_config(const GoldenFile& g);
ttt::HybridTTTPathOptions fork_hybrid_options(const GoldenFile& g);
ttt::InPlaceTTTOptions inplace_options(const GoldenFile& g);
ttt::SSMGatingOptions ssm_gating_options(const GoldenFile& g, const std::string& variant);

struct LnTargetVariant {
  std::string name;
  ttt::ReconTarget target = ttt::ReconTarget::correct;
  double eps = 1e-8;
};
std::vector<LnTargetVariant> ln_target_variants(const GoldenFile& g);

}  // namespace mtt::golden
