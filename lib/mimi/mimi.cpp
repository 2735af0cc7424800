#include "mimi/mimi.h"

#include "core/error.h"
#include "mimi/weights.h"
#include "nn/tensor_io.h"

namespace mtt::mimi {

MimiModel MimiModel::from_tensors(std::map<std::string, at::Tensor> tensors, const MimiConfig& cfg,
                                  const std::string& source) {
  WeightStore w(std::move(tensors), source);
  return build(w, cfg);
}

MimiModel MimiModel::random(const MimiConfig& cfg, uint64_t seed, std::map<std::string, at::Tensor>* tensors) {
  WeightStore w = WeightStore::random(seed);
  MimiModel m = build(w, cfg);
  if (tensors) *tensors = w.tensors();
  return m;
}

MimiModel MimiModel::build(WeightStore& w, const MimiConfig& cfg) {
  const std::string& source = w.source();
  MimiModel m;
  m.cfg_ = cfg;
  const int D = cfg.seanet.dimension;
  if (cfg.transformer.d_model != D || cfg.quantizer.input_dimension != D || cfg.quantizer.output_dimension != D) {
    throw Error(source, "config", "Mimi transformer/quantizer width must equal the SEANet dimension (" +
                                      std::to_string(D) + "): projections are not supported", ErrorKind::Usage);
  }
  if (cfg.transformer.d_model % cfg.transformer.num_heads != 0 || (cfg.transformer.d_model / cfg.transformer.num_heads) % 2) {
    throw Error(source, "config", "d_model / num_heads must be an even integer (RoPE)", ErrorKind::Usage);
  }
  const int stride = cfg.downsample_stride();
  if (stride < 1 || cfg.frame_size() != cfg.seanet.hop_length() * stride) {
    throw Error(source, "config", "frame size must be SEANet hop x an integer downsample stride", ErrorKind::Usage);
  }
  m.encoder_ = Seanet::encoder(w, cfg.seanet);
  m.decoder_ = Seanet::decoder(w, cfg.seanet);
  m.encoder_tr_ = MimiTransformer::load(w, cfg.transformer, "encoder_transformer");
  m.decoder_tr_ = MimiTransformer::load(w, cfg.transformer, "decoder_transformer");
  // §5.4: learnt resampling. downsample: conv k=2*stride, no bias, replicate padding;
  // upsample: depthwise (channel-wise "bug" kept upstream) transposed conv, no bias.
  m.downsample_ = Conv1d::load(w, "downsample.conv.conv.conv", D, D, 2 * stride, stride, 1, 1, false, true);
  m.upsample_ = ConvTranspose1d::load(w, "upsample.convtr.convtr.convtr", D, D, 2 * stride, stride, D, false);
  m.quantizer_ = SplitRVQ::load(w, cfg.quantizer);
  w.check_all_used();
  m.set_num_codebooks(cfg.num_codebooks);
  return m;
}

MimiModel MimiModel::load(const std::string& path, const MimiConfig& cfg) {
  return from_tensors(nn::load_tensors(path), cfg, path);
}

void MimiModel::set_num_codebooks(int k) {
  if (k < cfg_.quantizer.n_q_semantic || k > cfg_.quantizer.n_q) {
    throw Error("", "num_codebooks", "must be in [" + std::to_string(cfg_.quantizer.n_q_semantic) + ", " +
                                         std::to_string(cfg_.quantizer.n_q) + "], got " + std::to_string(k),
                ErrorKind::Usage);
  }
  cfg_.num_codebooks = k;
}

void MimiModel::to(const at::TensorOptions& o) {
  encoder_.to(o);
  decoder_.to(o);
  encoder_tr_.to(o);
  decoder_tr_.to(o);
  downsample_.to(o);
  upsample_.to(o);
  quantizer_.to(o);
}

at::Tensor MimiModel::check_audio(const at::Tensor& audio) const {
  if (audio.dim() != 3 || audio.size(1) != cfg_.seanet.channels) {
    throw Error("", "audio", "expected [B, " + std::to_string(cfg_.seanet.channels) + ", N], got " +
                                 shape_str(audio.sizes()), ErrorKind::Usage);
  }
  return audio.to(at::kFloat);
}

at::Tensor MimiModel::check_codes(const at::Tensor& codes) const {
  if (codes.dim() != 3) throw Error("", "codes", "expected [B, K, T], got " + shape_str(codes.sizes()), ErrorKind::Usage);
  return codes.to(at::kLong);
}

at::Tensor MimiModel::encode_latent(const at::Tensor& audio) const {
  at::Tensor x = check_audio(audio);
  const int64_t fs = frame_size(), N = x.size(-1);
  if (N == 0) throw Error("", "audio", "empty input", ErrorKind::Usage);
  // pad_for_conv1d(x, frame_size, frame_size) (compression.py:352-356): right-pad with zeros.
  const int64_t padded = (N + fs - 1) / fs * fs;
  if (padded != N) x = at::constant_pad_nd(x, {0, padded - N}, 0);
  at::Tensor emb = encoder_.forward(x);
  emb = encoder_tr_.forward(emb);
  return downsample_.forward(emb);
}

at::Tensor MimiModel::encode(const at::Tensor& audio) const {
  return quantizer_.encode(encode_latent(audio), cfg_.num_codebooks);
}

at::Tensor MimiModel::decode_latent(const at::Tensor& codes) const { return quantizer_.decode(check_codes(codes)); }

at::Tensor MimiModel::decode(const at::Tensor& codes) const {
  at::Tensor emb = upsample_.forward(decode_latent(codes));
  emb = decoder_tr_.forward(emb);
  return decoder_.forward(emb);
}

MimiStreamer::MimiStreamer(const MimiModel& model, StreamOptions opts) : m_(&model), opts_(opts) { reset(); }

void MimiStreamer::reset() {
  enc_ = m_->encoder_.new_state();
  dec_ = m_->decoder_.new_state();
  enc_tr_ = m_->encoder_tr_.new_state();
  dec_tr_ = m_->decoder_tr_.new_state();
  down_ = {};
  up_ = {};
  enc_frames_ = dec_frames_ = 0;
}

at::Tensor MimiStreamer::encode_step(const at::Tensor& audio) {
  at::Tensor x = m_->check_audio(audio);
  const int64_t fs = m_->frame_size();
  if (x.size(-1) == 0 || x.size(-1) % fs != 0) {
    throw Error("", "audio", "streaming input length " + std::to_string(x.size(-1)) +
                                 " must be a positive multiple of the frame size " + std::to_string(fs),
                ErrorKind::Usage);
  }
  at::Tensor emb = m_->encoder_.step(x, enc_);
  emb = m_->encoder_tr_.step(emb, enc_tr_, opts_.kv_mode);
  emb = m_->downsample_.step(emb, down_);
  enc_frames_ += emb.size(-1);
  return m_->quantizer_.encode(emb, m_->cfg_.num_codebooks);
}

at::Tensor MimiStreamer::decode_step(const at::Tensor& codes) {
  at::Tensor c = m_->check_codes(codes);
  if (c.size(-1) == 0) throw Error("", "codes", "streaming decode needs at least one frame", ErrorKind::Usage);
  at::Tensor emb = m_->upsample_.step(m_->quantizer_.decode(c), up_);
  emb = m_->decoder_tr_.step(emb, dec_tr_, opts_.kv_mode);
  dec_frames_ += c.size(-1);
  return m_->decoder_.step(emb, dec_);
}

}  // namespace mtt::mimi
