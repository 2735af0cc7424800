#include "ttt/variants.h"

#include <utility>

#include "core/error.h"

namespace mtt::ttt {

namespace {

template <class E, std::size_t N>
const char* name_of(E v, const std::pair<E, const char*> (&table)[N]) {
  for (const auto& [e, n] : table)
    if (e == v) return n;
  return "?";
}

template <class E, std::size_t N>
void parse_of(const std::string& text, E& out, const std::pair<E, const char*> (&table)[N], const std::string& file,
              const std::string& key) {
  std::string names;
  for (const auto& [e, n] : table) {
    if (text == n) {
      out = e;
      return;
    }
    names += (names.empty() ? "" : ", ") + std::string(n);
  }
  throw Error(file, key, "unknown value '" + text + "' (one of: " + names + ")");
}

const std::pair<InnerModel, const char*> kInner[] = {{InnerModel::mlp, "mlp"}, {InnerModel::linear, "linear"}};
const std::pair<ReconTarget, const char*> kRecon[] = {
    {ReconTarget::correct, "correct"}, {ReconTarget::legacy, "legacy"}, {ReconTarget::raw, "raw"}};
const std::pair<Eta, const char*> kEta[] = {{Eta::causal, "causal"}, {Eta::dit, "dit"}};
const std::pair<OutputPath, const char*> kOutput[] = {{OutputPath::post_norm_wo, "post_norm_wo"},
                                                       {OutputPath::skip, "skip"}};
const std::pair<PadUpdates, const char*> kPad[] = {{PadUpdates::masked, "masked"}, {PadUpdates::legacy, "legacy"}};
const std::pair<StateMode, const char*> kState[] = {{StateMode::functional, "functional"},
                                                     {StateMode::legacy_batch0_copy, "legacy_batch0_copy"},
                                                     {StateMode::legacy_write_params, "legacy_write_params"}};
const std::pair<Rope, const char*> kRope[] = {{Rope::none, "none"},
                                               {Rope::minibatch_1d, "minibatch_1d"},
                                               {Rope::vdit_frames, "vdit_frames"},
                                               {Rope::fork_audio, "fork_audio"}};
const std::pair<MultiLayerQuery, const char*> kQuery[] = {{MultiLayerQuery::dual, "dual"},
                                                           {MultiLayerQuery::fork_updated, "fork_updated"}};
const std::pair<StreamingState, const char*> kStream[] = {{StreamingState::persistent, "persistent"},
                                                           {StreamingState::fork_restart, "fork_restart"},
                                                           {StreamingState::fork_batch0, "fork_batch0"}};

}  // namespace

#define MTT_VARIANT(E, TABLE)                                                                        \
  const char* variant_name(E v) { return name_of(v, TABLE); }                                         \
  void parse_variant(const std::string& text, E& out, const std::string& file, const std::string& key) { \
    parse_of(text, out, TABLE, file, key);                                                            \
  }
MTT_VARIANT(InnerModel, kInner)
MTT_VARIANT(ReconTarget, kRecon)
MTT_VARIANT(Eta, kEta)
MTT_VARIANT(OutputPath, kOutput)
MTT_VARIANT(PadUpdates, kPad)
MTT_VARIANT(StateMode, kState)
MTT_VARIANT(Rope, kRope)
MTT_VARIANT(MultiLayerQuery, kQuery)
MTT_VARIANT(StreamingState, kStream)
#undef MTT_VARIANT

MultiLayerQuery fork_multilayer_query(long long ttt_mlp_layers) {
  return ttt_mlp_layers >= 3 ? MultiLayerQuery::fork_updated : MultiLayerQuery::dual;
}

StreamingState fork_streaming_state(long long ttt_mlp_layers) {
  return ttt_mlp_layers >= 3 ? StreamingState::fork_batch0 : StreamingState::fork_restart;
}

}  // namespace mtt::ttt
