#pragma once
// The Mimi codec (docs/moshi.md §5; upstream `models/compression.py:105-433`):
//   encode: audio [B,1,N] -> SEANet encoder (25 Hz) -> encoder transformer -> learnt stride-2
//           downsample (12.5 Hz) -> split RVQ -> codes [B,K,T] (int64)
//   decode: codes -> RVQ decode -> depthwise stride-2 upsample -> decoder transformer -> SEANet
//           decoder -> audio [B,1,T*1920]
// Offline calls pad the input on the right to a multiple of the frame size (pad_for_conv1d);
// MimiStreamer encodes/decodes frame by frame with carried state.
#include <ATen/ATen.h>

#include <map>
#include <memory>
#include <string>

#include "mimi/config.h"
#include "mimi/conv.h"
#include "mimi/quantizer.h"
#include "mimi/seanet.h"
#include "mimi/transformer.h"

namespace mtt::mimi {

class WeightStore;

class MimiModel {
 public:
  // Loads the released checkpoint names (tokenizer-e351c8d8-checkpoint125.safetensors, §5.6),
  // strictly: missing, mis-shaped or unknown keys are an mtt::Error naming file and key.
  static MimiModel load(const std::string& path, const MimiConfig& cfg = MimiConfig::v0_1());
  static MimiModel from_tensors(std::map<std::string, at::Tensor> tensors, const MimiConfig& cfg,
                                const std::string& source = "<tensors>");
  // Random weights (WeightStore::random), for tests and benchmarks; `tensors`, when given,
  // receives them under the checkpoint names (save with nn::save_tensors to get a file).
  static MimiModel random(const MimiConfig& cfg, uint64_t seed, std::map<std::string, at::Tensor>* tensors = nullptr);

  at::Tensor encode(const at::Tensor& audio) const;         // [B,1,N] -> [B,K,ceil(N/1920)]
  at::Tensor encode_latent(const at::Tensor& audio) const;  // unquantized [B,D,T] before the RVQ
  at::Tensor decode(const at::Tensor& codes) const;         // [B,K,T] -> [B,1,T*1920]
  at::Tensor decode_latent(const at::Tensor& codes) const;  // RVQ reconstruction [B,D,T]

  const MimiConfig& config() const { return cfg_; }
  int frame_size() const { return cfg_.frame_size(); }
  void set_num_codebooks(int k);
  // Moves weights (e.g. to CUDA); streaming state follows the input's device.
  void to(const at::TensorOptions& o);

 private:
  friend class MimiStreamer;
  at::Tensor check_audio(const at::Tensor& audio) const;
  at::Tensor check_codes(const at::Tensor& codes) const;
  static MimiModel build(WeightStore& w, const MimiConfig& cfg);
  MimiConfig cfg_;
  Seanet encoder_, decoder_;
  MimiTransformer encoder_tr_, decoder_tr_;
  Conv1d downsample_;
  ConvTranspose1d upsample_;
  SplitRVQ quantizer_;
};

struct StreamOptions {
  KvMode kv_mode = KvMode::Exact;  // UpstreamRing reproduces Python's streaming quirk (§2.6)
};

// Frame-by-frame streaming (compression.py `streaming()` context): encode_step takes a positive
// multiple of 1920 samples and returns one code frame per 1920; decode_step the reverse. The
// encoder and decoder states are independent. With KvMode::Exact the concatenated outputs equal
// the offline ones for any length.
class MimiStreamer {
 public:
  MimiStreamer(const MimiModel& model, StreamOptions opts = {});
  at::Tensor encode_step(const at::Tensor& audio);  // [B,1,n*1920] -> [B,K,n]
  at::Tensor decode_step(const at::Tensor& codes);  // [B,K,n] -> [B,1,n*1920]
  void reset();
  int64_t encoded_frames() const { return enc_frames_; }
  int64_t decoded_frames() const { return dec_frames_; }

 private:
  const MimiModel* m_;
  StreamOptions opts_;
  SeanetState enc_, dec_;
  TransformerState enc_tr_, dec_tr_;
  Conv1d::State down_;
  ConvTranspose1d::State up_;
  int64_t enc_frames_ = 0, dec_frames_ = 0;
};

}  // namespace mtt::mimi
