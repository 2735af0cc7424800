// Input preparation of the TTT layer (docs/ttt.md §1).
#include "ttt/ttt_inputs.h"

#include "core/error.h"

namespace mtt::ttt {

at::Tensor l2_normalize(const at::Tensor& x, double eps) {
  return x / x.norm(2, {-1}, true).clamp_min(eps);
}

at::Tensor apply_rope(const at::Tensor& x, Rope rope, int64_t start, int64_t mini_batch, double theta) {
  if (rope == Rope::none) return x;
  const int64_t L = x.size(1), d = x.size(-1);
  if (d % 2 != 0) throw Error("", "rope", "head dim must be even for RoPE, got " + std::to_string(d));
  auto f32 = at::TensorOptions().dtype(at::kFloat).device(x.device());
  at::Tensor pos = at::arange(start, start + L, at::TensorOptions().dtype(at::kLong).device(x.device()));
  at::Tensor inv_freq;  // [d/2]
  if (rope == Rope::minibatch_1d) {
    // LMPT/LMJAX: positions modulo b, frequencies theta^(-2i/d) over the whole head dim (§1.2).
    pos = pos.remainder(mini_batch);
    inv_freq = 1.0 / at::pow(theta, at::arange(0, d, 2, f32) / static_cast<double>(d));
  } else if (rope == Rope::fork_audio) {
    // moshi_ttt/models/ssm/utils.py precompute_audio_rope_1d(audio_scaling=True), indexed by
    // position % b (ttt_layer.py process_input): the plain frequencies damped towards half speed.
    pos = pos.remainder(mini_batch);
    at::Tensor two_i = at::arange(0, d, 2, f32);
    inv_freq = 1.0 / at::pow(theta, two_i / static_cast<double>(d)) *
               (0.5 + 1.5 * at::exp(-two_i / static_cast<double>(2 * d)));
  } else {
    // VDIT 3-D RoPE on a 1x1 grid: the time band is the first d/4 channels with theta^(-2i/(d/4));
    // the h/w bands see position 0, i.e. angle 0 (§1.1 step 3).
    const int64_t dt = d / 4;
    at::Tensor ft = 1.0 / at::pow(theta, at::arange(0, dt, 2, f32).narrow(0, 0, dt / 2) / static_cast<double>(dt));
    inv_freq = at::cat({ft, at::zeros({d / 2 - dt / 2}, f32)});
  }
  at::Tensor ang = pos.to(at::kFloat).unsqueeze(1) * inv_freq.unsqueeze(0);  // [L, d/2] fp32
  at::Tensor c = at::cos(ang).to(x.scalar_type()).view({1, L, 1, d / 2});
  at::Tensor s = at::sin(ang).to(x.scalar_type()).view({1, L, 1, d / 2});
  at::Tensor xr = x.reshape({x.size(0), L, x.size(2), d / 2, 2});
  at::Tensor x0 = xr.select(-1, 0), x1 = xr.select(-1, 1);
  return at::stack({x0 * c - x1 * s, x0 * s + x1 * c}, -1).reshape(x.sizes());
}

at::Tensor reconstruction_target(const at::Tensor& XV, const at::Tensor& XK, const at::Tensor& gamma,
                                 const at::Tensor& beta, ReconTarget variant, double eps) {
  at::Tensor g = gamma.to(XV.scalar_type()), b = beta.to(XV.scalar_type());  // [H, d] broadcast
  switch (variant) {
    case ReconTarget::raw:
      return XV;
    case ReconTarget::correct: {
      // T = gamma * (D - mean) / (std_unbiased + eps) + beta, D = XV - XK; returned as T + XK.
      at::Tensor D = XV - XK;
      at::Tensor mu = D.mean(-1, true);
      at::Tensor sd = D.std(-1, /*unbiased=*/true, true);
      return g * ((D - mu) / (sd + eps)) + b + XK;
    }
    case ReconTarget::legacy: {
      // The fork's per-head F.layer_norm(XV) (biased variance), XK never used (§7a).
      at::Tensor mu = XV.mean(-1, true);
      at::Tensor var = XV.var(-1, /*unbiased=*/false, true);
      return g * ((XV - mu) / at::sqrt(var + eps)) + b;
    }
  }
  return XV;
}

at::Tensor token_lr(const at::Tensor& x, const at::Tensor& w, const at::Tensor& c, double base_lr, int64_t head_dim) {
  const int64_t H = w.size(0);
  at::Tensor s = at::matmul(x, w.to(x.scalar_type()).reshape({H, -1}).t()) + c.to(x.scalar_type()).reshape({H});
  return at::sigmoid(s).permute({0, 2, 1}) * (base_lr / static_cast<double>(head_dim));  // [B, H, L]
}

at::Tensor token_factor(const at::Tensor& learnable_token_idx, int64_t b, at::ScalarType dtype) {
  auto f32 = at::TensorOptions().dtype(at::kFloat).device(learnable_token_idx.device());
  at::Tensor base = 1.0 / at::arange(1, b + 1, f32);  // fp32 buffer, as LMPT's token_idx
  return (base.to(dtype) + learnable_token_idx.to(dtype).narrow(0, 0, b)).clamp_min(0.0);
}

at::Tensor make_eta(const at::Tensor& lr, const at::Tensor& tok, Eta mode, int64_t b) {
  const int64_t B = lr.size(0), H = lr.size(1), NC = lr.size(2) / b;
  at::Tensor lr5 = lr.reshape({B, H, NC, 1, b});
  if (mode == Eta::dit) return ((1.0 / static_cast<double>(b)) * lr5).expand({B, H, NC, b, b});
  return at::tril(tok.view({1, 1, 1, b, 1}) * lr5);
}

}  // namespace mtt::ttt
