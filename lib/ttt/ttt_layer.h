#pragma once
// The TTT layer (docs/ttt.md §1) with its inner loop in the dual form (§2), the scan with
// checkpoint groups (§3) and a persistent, per-batch-element state for streaming (§2.4, §7b/c).
//
// One implementation, variants as named options (docs/architecture.md):
//   InnerModel {linear, mlp}        TTT-Linear / TTT-MLP (depth + expansion configurable)
//   ReconTarget {correct, legacy, raw}  LN(XV-XK) (+XK) / the fork's LN(XV)-XK / LMPT's XV-XK
//   Eta {causal, dit}               tril + token factor 1/(i+1)+tau (LM) / VDIT's identical rows (leaks)
//   OutputPath {post_norm_wo, skip} post_norm + wo / the fork's "return XQW directly"
//   PadUpdates {masked, legacy}     pad tokens never update the state / they do (fork)
//   StateMode {functional, legacy_batch0_copy, legacy_write_params}
//   MultiLayerQuery {dual, fork_updated}  query pass of a depth >= 3 MLP (the fork's uses W')
//
// Parameters hold the learned initial inner weights W0 and are never written by a forward pass in
// StateMode::functional; the adapted weights live in a TTTState owned by the caller.
#include <ATen/ATen.h>

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "ttt/variants.h"

namespace mtt::ttt {

class InnerLoopLog;  // inner_loop_log.h

struct TTTConfig {
  int64_t model_dim = 0;          // D
  int64_t num_heads = 0;          // H, head dim d = D / H
  int64_t mini_batch_size = 16;   // b
  InnerModel inner = InnerModel::mlp;
  int64_t ttt_mlp_layers = 2;            // depth of the inner MLP (>= 2; 1 means linear)
  double ttt_mlp_expansion_factor = 4.0; // hidden width = int(d * factor)
  // Explicit hidden widths (ttt_mlp_layers - 1 of them; the fork's ttt_mlp_hidden_dims), overriding
  // the expansion factor when non-empty.
  std::vector<int64_t> ttt_mlp_hidden_dims;
  // Query pass of a depth >= 3 inner MLP (ttt_scan.h): dual form or the fork's updated-weights pass.
  MultiLayerQuery multilayer_query = MultiLayerQuery::dual;
  double ttt_base_lr = 1.0;
  bool proj_bias = true;                 // wq/wk/wv/wo with bias (VDIT, fork) or not (LMPT)
  bool l2_normalize_qk = true;           // F.normalize(eps 1e-12) of XQ, XK (VDIT) or not (LMPT)
  Rope rope = Rope::minibatch_1d;
  double rope_theta = 10000.0;
  ReconTarget recon_target = ReconTarget::correct;
  double recon_target_eps = 1e-8;        // VDIT 1e-8; fork current 1e-5; fork legacy 1e-6
  double inner_ln_eps = 1e-6;            // LMPT/kernels 1e-6; VDIT PyTorch ops 1e-8
  double post_norm_eps = 1e-6;
  Eta eta = Eta::causal;
  OutputPath output_path = OutputPath::post_norm_wo;
  int64_t scan_checkpoint_group_size = 0; // mini-batches per remat group; <= 0: no remat
  int layer_index = 0;                   // for logs
  std::string name = "ttt";

  int64_t head_dim() const { return num_heads > 0 ? model_dim / num_heads : 0; }
  int64_t num_inner_layers() const { return inner == InnerModel::linear ? 1 : ttt_mlp_layers; }
  std::vector<int64_t> inner_dims() const;  // [d, e, ..., e, d] (linear: [d, d])
  void validate() const;                    // throws mtt::Error on an inconsistent config

  // The Moshi-TTT configuration we recommend: causal eta, correct target, post_norm/wo, d = D/H.
  static TTTConfig moshi(int64_t D, int64_t H, int64_t b = 32);
  // The VDIT TTTWrapper (golden vdit_*_layer_*): bias, L2-norm, correct target, dit eta, eps 1e-8.
  static TTTConfig vdit(int64_t D, int64_t H, int64_t b, InnerModel inner);
  // The LMPT TTTLinear/TTTMLP forward (golden lmpt_*_layer*): no bias, no L2-norm, raw target.
  static TTTConfig lmpt(int64_t D, int64_t H, int64_t b, InnerModel inner);
};

// Per-call options.
struct Options {
  PadUpdates pad_updates = PadUpdates::masked;
  StateMode state_mode = StateMode::functional;
  at::Tensor pad_mask;                // [B, L] bool, true = real token; undefined = all real
  InnerLoopLog* inner_loop_log = nullptr;  // records the Figure-5 losses when set (no cost otherwise)
  int64_t checkpoint_group_override = -1;  // >= 0 replaces config.scan_checkpoint_group_size
};

// The adapted inner weights of one layer, per batch element, fp32 (fp64 when the layer runs in fp64).
// weights[k] [B, H, m_k, m_k+1], biases[k] [B, H, 1, m_k+1] are the weights at the START of the
// current mini-batch; acc_* hold sum_j lr_j * grad_j of the tokens already seen in that mini-batch
// (the primal-form accumulators of §2.4, zero when the mini-batch is complete); position[b] counts
// the tokens element b has seen since its last reset (RoPE phase and mini-batch phase).
struct TTTState {
  std::vector<at::Tensor> weights, biases;
  std::vector<at::Tensor> acc_weights, acc_biases;
  std::vector<int64_t> position;
  // Handles of the layer's W0 parameters ([H, ...]) used by reset(); set by TTTLayer::init_state.
  std::vector<at::Tensor> init_weights, init_biases;

  bool defined() const { return !weights.empty(); }
  int64_t batch_size() const { return static_cast<int64_t>(position.size()); }
  // Elements with mask[b] = true restart from W0 (accumulators zeroed, position 0); others untouched.
  void reset(const at::Tensor& mask);
  void reset_all();
  // Cuts the autograd graph (truncated BPTT between chunks of one file).
  void detach_();
  // Batch elements `index` (int64 [n]) as a new state, and the inverse (write them back).
  TTTState select(const at::Tensor& index) const;
  void assign(const at::Tensor& index, const TTTState& part);
};

// Intermediates of one forward, for tests and the golden runner.
struct ForwardResult {
  at::Tensor y;          // [B, L, D] layer output (after post_norm/wo unless OutputPath::skip)
  at::Tensor XQW;        // [B, L, D] op output before post_norm/wo
  at::Tensor XQ, XK, XV; // [B, H, L, d] op inputs (XV in target form: the op subtracts XK)
  at::Tensor lr;         // [B, H, L] base_lr * sigmoid(x.w + c) / d (before the dit 1/b, pads zeroed)
};

class TTTLayer {
 public:
  explicit TTTLayer(TTTConfig config, uint64_t seed = 0);

  const TTTConfig& config() const { return config_; }

  // x [B, L, D] (any L >= 1). state == nullptr: every element starts from W0 and nothing persists.
  // state not yet defined: initialised from W0 for B elements. The state's tensors are replaced
  // (functional update), never written in place; parameters are never written (functional mode).
  at::Tensor forward(const at::Tensor& x, TTTState* state, const Options& opt = {});
  ForwardResult forward_detailed(const at::Tensor& x, TTTState* state, const Options& opt = {});
  // The inner part alone, from op inputs after projection/L2/RoPE/target (XQ, XK, XV [B, H, L, d],
  // XV in target form) and the layer input x [B, L, D] (lr gate only). Returns y undefined.
  ForwardResult forward_core(const at::Tensor& x, const at::Tensor& XQ, const at::Tensor& XK,
                             const at::Tensor& XV, TTTState* state, const Options& opt = {});

  TTTState init_state(int64_t batch, at::ScalarType dtype = at::kFloat) const;
  // The state's current inner weights with any pending partial mini-batch applied
  // (W - tok_last * acc): {W1, .., Wn, b1, .., bn}, each [B, H, ...].
  std::vector<at::Tensor> effective_weights(const TTTState& state) const;

  // Parameters under checkpoint names (docs/checkpoint-keys.md §1.2): wq.weight, wq.bias, ..., wo.bias,
  // learnable_ttt_lr_weight [H,1,D], learnable_ttt_lr_bias [H,1], ttt_norm_weight/bias [H,d],
  // W1,b1(,W2,b2) or weights.k/biases.k (depth >= 3), post_norm.weight/bias [D],
  // learnable_token_idx [b] (Eta::causal only).
  std::vector<std::pair<std::string, at::Tensor>> named_parameters() const;
  at::Tensor& param(const std::string& name);  // throws mtt::Error naming the key
  const at::Tensor& param(const std::string& name) const;
  std::vector<at::Tensor> inner_weights() const;  // W0: W1, W2, ... [H, m_k, m_k+1]
  std::vector<at::Tensor> inner_biases() const;   // b1, b2, ... [H, 1, m_k+1]
  // Copies tensors named prefix + <name> into the parameters (shape checked; dtype converted).
  // Missing keys throw unless allow_missing; `file` names the source in errors.
  void load(const std::map<std::string, at::Tensor>& tensors, const std::string& prefix = "",
            const std::string& file = "", bool allow_missing = false);
  void to(at::ScalarType dtype);          // all parameters (e.g. kDouble for gradcheck)
  void to(const at::Device& device);
  void set_requires_grad(bool on);
  void train(bool on = true) { training_ = on; }
  bool is_training() const { return training_; }

 private:
  ForwardResult forward_uniform(const at::Tensor& x, TTTState* state, const Options& opt);
  ForwardResult core_uniform(const at::Tensor& xc, const at::Tensor& XQ, const at::Tensor& XK,
                             const at::Tensor& XV, TTTState* state, const Options& opt);

  TTTConfig config_;
  bool training_ = true;
  std::vector<std::pair<std::string, at::Tensor>> params_;
};

}  // namespace mtt::ttt
