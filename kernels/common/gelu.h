#pragma once
// The tanh approximation of GELU used by the TTT inner MLP (docs/ttt.md §2 helpers):
//   gelu(z)  = 1/2 z (1 + tanh(c (z + a z^3)))
//   gelu'(z) = 1/2 (1 + t) + 1/2 z (1 - t^2) (c + c3 z^2),  t = tanh(c z (1 + a z^2))
// The constants as the reference implementations write them, defined once for the CUDA kernels and
// their CPU copy (as float), the fused CPU scan and the LibTorch op path (lib/ttt). Plain constexpr
// doubles: usable in device code.
// Two values of c: the reference's forward is torch's F.gelu(approximate="tanh"), which uses
// sqrt(2/pi) in full (kCForward); its hand-written gelu_bwd, the gelu' of the inner-loop gradient,
// writes 0.79788456 (kC) and c3 = 3 a c rounded to 10 digits. In float32 both c round to the same
// number; a float64 port must keep them apart (they differ by 8e-10 relative, above the 1e-9
// tolerance of the pure-float64 goldens once it grows through the scan).
namespace mtt::kernels::gelu_tanh {

inline constexpr double kCForward = 0.7978845608028654;  // sqrt(2/pi), gelu(z) itself
inline constexpr double kC = 0.79788456;     // sqrt(2/pi) as gelu_bwd writes it, gelu'(z)
inline constexpr double kA = 0.044715;       // cubic coefficient
inline constexpr double kC3 = 0.1070322243;  // 3 * kA * kC, the literal factor of gelu'

}  // namespace mtt::kernels::gelu_tanh
