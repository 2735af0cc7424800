// The progress line: counts, rate, ETA and the current figure (issue 14).
#include <gtest/gtest.h>

#include "core/progress.h"

namespace mtt {
namespace {

TEST(Progress, LineShowsRateEtaAndTheCurrentLoss) {
  // 3 of 7 steps in 2 s: 1.5 step/s, 4 steps left = 2.7 s.
  EXPECT_EQ(progress_text(3, 7, 2.0, "step", "loss 2.3456"), "3/7 (43%) 1.50 step/s ETA 2.7s loss 2.3456 2.0s elapsed");
  // Nothing done yet: no rate to show, no ETA to guess.
  EXPECT_EQ(progress_text(0, 7, 0.5, "step", ""), "0/7 (0%) 0.5s elapsed");
  // All done: the rate stays, no ETA.
  EXPECT_EQ(progress_text(7, 7, 3.5, "step", ""), "7/7 (100%) 2.00 step/s 3.5s elapsed");
  // Long ETAs in minutes and hours.
  EXPECT_EQ(progress_text(1, 1000, 1.0, "frame", ""), "1/1000 (0%) 1.00 frame/s ETA 16m39s 1.0s elapsed");
  EXPECT_EQ(progress_text(1, 100000, 1.0, "", ""), "1/100000 (0%) 1.00 it/s ETA 27h46m 1.0s elapsed");
}

TEST(Progress, BytesAndResumedJobs) {
  EXPECT_EQ(progress_text(50'000'000, 100'000'000, 2.0, "B", ""), "50000000/100000000 (50%) 25.0 MB/s ETA 2.0s 2.0s elapsed");
  // Resumed at step 6 of 10, 2 steps done here in 4 s: 0.5 step/s, 2 steps left = 4 s.
  EXPECT_EQ(progress_text(8, 10, 4.0, "step", "", 6), "8/10 (80%) 0.50 step/s ETA 4.0s 4.0s elapsed");
  EXPECT_EQ(progress_text(6, 10, 1.0, "step", "", 6), "6/10 (60%) 1.0s elapsed");
}

}  // namespace
}  // namespace mtt
