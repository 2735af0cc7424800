#pragma once
// The tanh approximation of GELU used by the TTT inner MLP (docs/ttt.md §2 helpers):
//   gelu(z)  = 1/2 z (1 + tanh(c (z + a z^3)))
//   gelu'(z) = 1/2 (1 + t) + 1/2 z (1 - t^2) (c + c3 z^2),  t = tanh(c z (1 + a z^2))
// The constants as the reference implementations write them (c is sqrt(2/pi) rounded to 8 digits,
// c3 = 3 a c rounded to 10), defined once for the CUDA kernels and their CPU copy (as float), the
// fused CPU scan and the LibTorch op path (lib/ttt). Plain constexpr doubles: usable in device code.
namespace mtt::kernels::gelu_tanh {

inline constexpr double kC = 0.79788456;     // sqrt(2/pi)
inline constexpr double kA = 0.044715;       // cubic coefficient
inline constexpr double kC3 = 0.1070322243;  // 3 * kA * kC, the literal factor of gelu'

}  // namespace mtt::kernels::gelu_tanh
