// Compile-and-link check of the CUDA kernels (runs without a GPU): the test binary links the kernel
// library, cuda_status() reports how it was built, and the launchers reject unsupported shapes on the
// host before touching a device.
#include <gtest/gtest.h>

#include <cstdlib>
#include <string>

#include "kernels/common/cuda_runtime_info.h"
#include "kernels/ttt_scan/params.h"
#include "ttt/cuda_dispatch.h"
#ifdef MTT_HAVE_CUDA
#include "kernels/ttt_scan/cuda/launch.h"
#endif

namespace K = mtt::kernels;

TEST(KernelsBuild, StatusMatchesBuild) {
  const std::string s = K::cuda_status();
#ifdef MTT_HAVE_CUDA
  EXPECT_TRUE(K::built_with_cuda());
  EXPECT_NE(s.find("built with CUDA kernels"), std::string::npos) << s;
#else
  EXPECT_FALSE(K::built_with_cuda());
  EXPECT_NE(s.find("built without CUDA"), std::string::npos) << s;
  EXPECT_EQ(K::cuda_device_count(), 0);
#endif
  EXPECT_EQ(mtt::ttt::cuda_kernels_status(), s);
  EXPECT_EQ(mtt::ttt::cuda_kernels_available(),
            !std::getenv("MTT_DISABLE_CUDA_KERNELS") && K::built_with_cuda() && K::cuda_device_count() > 0);
}

// The device scope restores the caller's device; without a device it reports that it could not set one.
TEST(KernelsBuild, DeviceScopeRestoresTheDevice) {
  const int n = K::cuda_device_count();
  const int before = K::cuda_current_device();
  {
    K::CudaDeviceScope scope(0);
    EXPECT_EQ(scope.ok(), n > 0);
    if (n > 0) {
      EXPECT_EQ(K::cuda_current_device(), 0);
    }
  }
  EXPECT_EQ(K::cuda_current_device(), before);
  K::CudaDeviceScope none(n + 3);  // no such device
  EXPECT_FALSE(none.ok());
  if (n > 1) {
    ASSERT_TRUE(K::cuda_set_device(0));
    {
      K::CudaDeviceScope scope(n - 1);
      EXPECT_TRUE(scope.ok());
      EXPECT_EQ(K::cuda_current_device(), n - 1);
    }
    EXPECT_EQ(K::cuda_current_device(), 0);
  }
}

K::TTTScanParams dummy_params(int depth, int d, int b) {
  static float f = 0.f;
  K::TTTScanParams p;
  p.B = 1; p.H = 2; p.NC = 3; p.b = b; p.d = d; p.depth = depth; p.hidden = depth == 2 ? 4 * d : 0;
  p.XQ = p.XK = p.XV = p.eta = p.ln_weight = p.ln_bias = &f;
  p.XQW = &f;
  for (int k = 0; k < depth && k < 2; ++k) {
    p.W_in[k] = p.b_in[k] = &f;
    p.W_out[k] = p.b_out[k] = &f;
  }
  return p;
}

TEST(KernelsBuild, ShapeLimits) {
  EXPECT_EQ(K::ttt_scan_unsupported(dummy_params(1, 128, 64)), nullptr);
  EXPECT_EQ(K::ttt_scan_unsupported(dummy_params(2, 64, 16)), nullptr);
  EXPECT_STREQ(K::ttt_scan_unsupported(dummy_params(1, 256, 16)), "head dim above 128");
  EXPECT_STREQ(K::ttt_scan_unsupported(dummy_params(2, 64, 65)), "mini-batch size above 64");
  EXPECT_NE(K::ttt_scan_unsupported(dummy_params(3, 64, 16)), nullptr);
  K::TTTScanParams p = dummy_params(1, 64, 16);
  p.XQ = nullptr;
  EXPECT_NE(K::ttt_scan_unsupported(p), nullptr);
  // Workspace sizing: the whole plan for a zero shared-memory budget, per (batch, head).
  K::TTTScanParams q = dummy_params(1, 16, 8);
  const size_t per = 16 * 16 + 16 + 8 * 16 * 3 + 8 * 8 * 2 + 8 * 16 * 3;  // state, Xq/Xk/T, E/M, Z/G/Zbar
  EXPECT_EQ(K::ttt_scan_workspace_bytes(q), per * sizeof(float) * 2);
  EXPECT_EQ(K::ttt_state_floats(q), size_t(16 * 16 + 16));
  EXPECT_EQ(K::ttt_state_floats(dummy_params(2, 16, 8)), size_t(16 * 64 + 64 + 64 * 16 + 16));
}

#ifdef MTT_HAVE_CUDA
TEST(KernelsBuild, LaunchersRejectUnsupportedWithoutDevice) {
  // Host-side validation happens before any CUDA call, so this runs in CI without a GPU.
  K::TTTScanParams p = dummy_params(1, 256, 16);
  EXPECT_EQ(K::ttt_linear_scan_forward(p, nullptr).code, 1);
  p = dummy_params(2, 32, 16);
  EXPECT_EQ(K::ttt_linear_scan_forward(p, nullptr).code, 1);  // depth 2 given to the linear launcher
  EXPECT_EQ(K::ttt_mlp_scan_forward(dummy_params(1, 32, 16), nullptr).code, 1);
  K::TTTScanGradParams g;
  EXPECT_EQ(K::ttt_linear_scan_backward(dummy_params(1, 32, 16), g, nullptr).code, 1);  // no grad pointers
  K::TTTScanParams w = dummy_params(1, 32, 16);
  EXPECT_STREQ(K::ttt_linear_scan_forward(w, nullptr).message, "workspace missing or too small");
}
#endif
