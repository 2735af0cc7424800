#pragma once
// Mimi codec hyper-parameters (docs/moshi.md §5; upstream `loaders.py:28-88`).
// v0_1() is the released Mimi (moshiko); tiny() is spec §7's smallest faithful config used by
// the tests (every code path, tiny widths, context 5 so the streaming ring wraps quickly).
#include <cstdint>
#include <numeric>
#include <vector>

namespace mtt::mimi {

struct SeanetConfig {
  int channels = 1;
  int dimension = 512;
  int n_filters = 64;
  int n_residual_layers = 1;
  std::vector<int> ratios{8, 6, 5, 4};  // decoder order; the encoder uses them reversed (§5.2)
  int kernel_size = 7;
  int residual_kernel_size = 3;
  int last_kernel_size = 3;
  int dilation_base = 2;
  int compress = 2;
  int hop_length() const { return std::accumulate(ratios.begin(), ratios.end(), 1, std::multiplies<int>()); }
};

struct TransformerConfig {
  int d_model = 512;
  int num_heads = 8;
  int num_layers = 8;
  int dim_feedforward = 2048;
  int context = 250;          // attention window in 25 Hz steps (§5.3)
  double max_period = 10000;  // RoPE (§2.4)
  double norm_eps = 1e-5;     // nn.LayerNorm default
};

struct QuantizerConfig {
  int dimension = 256;  // codebook dimension
  int n_q = 32;         // total codebooks in the file: 1 semantic + n_q-1 acoustic (§5.5)
  int bins = 2048;
  int input_dimension = 512;
  int output_dimension = 512;
  int n_q_semantic = 1;
};

struct MimiConfig {
  int sample_rate = 24000;
  double frame_rate = 12.5;
  SeanetConfig seanet;
  TransformerConfig transformer;
  QuantizerConfig quantizer;
  int num_codebooks = 8;  // active codebooks (set_num_codebooks(8) for moshiko, §5)

  int frame_size() const { return static_cast<int>(sample_rate / frame_rate); }  // 1920
  double encoder_frame_rate() const { return static_cast<double>(sample_rate) / seanet.hop_length(); }
  int downsample_stride() const { return static_cast<int>(encoder_frame_rate() / frame_rate); }  // 2

  static MimiConfig v0_1() { return MimiConfig{}; }
  static MimiConfig tiny() {
    MimiConfig c;
    c.seanet.dimension = 32;
    c.seanet.n_filters = 4;
    c.transformer.d_model = 32;
    c.transformer.num_heads = 2;
    c.transformer.num_layers = 2;
    c.transformer.dim_feedforward = 64;
    c.transformer.context = 5;
    c.quantizer.dimension = 16;
    c.quantizer.n_q = 4;
    c.quantizer.bins = 40;
    c.quantizer.input_dimension = 32;
    c.quantizer.output_dimension = 32;
    c.num_codebooks = 3;
    return c;
  }
};

// How the streaming transformers keep their keys/values (spec §2.6 "exactness note", §9).
enum class KvMode {
  // Keep context-1 past keys plus the whole new chunk: streaming output == offline output for
  // any length (the window every query sees is exactly the offline one). Default.
  Exact,
  // Reproduce upstream Python: a ring of capacity == context written before attending, so once
  // it wraps, a query early in a multi-step chunk loses its oldest keys. Bit-faithful to
  // `moshi` streaming, differs from offline after `context` transformer steps.
  UpstreamRing,
};

}  // namespace mtt::mimi
