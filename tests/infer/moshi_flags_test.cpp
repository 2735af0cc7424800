// The library side of ttt-infer's moshi flags (issue 14): sampling from the checkpoint's
// lm_gen_config unless a flag is given, moshi's batch output names.
#include <gtest/gtest.h>

#include "core/error.h"
#include "infer/infer.h"
#include "moshi/config.h"
#include "moshi/lmgen.h"

namespace mtt::infer {
namespace {

TEST(InferMoshiFlags, SamplingFromTheConfigUnlessAFlagIsGiven) {
  moshi::LMConfig c;
  c.temp = 0.3;
  c.temp_text = 0.2;
  c.top_k = 7;
  c.top_k_text = 3;
  InferOptions o;
  nlohmann::json from;
  auto s = sampling_options_of(o, c, &from);
  EXPECT_TRUE(s.use_sampling);
  EXPECT_EQ(s.temp, 0.3);
  EXPECT_EQ(s.temp_text, 0.2);
  EXPECT_EQ(s.top_k, 7);
  EXPECT_EQ(s.top_k_text, 3);
  EXPECT_EQ(from["top_k"], "checkpoint");
  o.temp = 1.1;
  o.top_k = 0;  // 0 is a value given (no top-k), not "unset"
  s = sampling_options_of(o, c, &from);
  EXPECT_EQ(s.temp, 1.1);
  EXPECT_EQ(s.top_k, 0);
  EXPECT_EQ(s.temp_text, 0.2);
  EXPECT_EQ(s.top_k_text, 3);
  EXPECT_EQ(from["temp"], "--temp");
  InferOptions g;
  g.greedy = true;
  EXPECT_FALSE(sampling_options_of(g, c).use_sampling);
  // A config without lm_gen_config parses to LMGen's defaults.
  const auto d = sampling_options_of(InferOptions{}, moshi::LMConfig{});
  EXPECT_EQ(d.temp, 0.8);
  EXPECT_EQ(d.temp_text, 0.7);
  EXPECT_EQ(d.top_k, 250);
  EXPECT_EQ(d.top_k_text, 25);
}

TEST(InferMoshiFlags, BatchOutputNamesAsRunInference) {
  // run_inference.py: outfile.with_name(f"{outfile.stem}-{index}{outfile.suffix}") when more than one.
  EXPECT_EQ(batch_output_path("dir/out.wav", 0, 1), "dir/out.wav");
  EXPECT_EQ(batch_output_path("dir/out.wav", 0, 3), "dir/out-0.wav");
  EXPECT_EQ(batch_output_path("dir/out.wav", 2, 3), "dir/out-2.wav");
  EXPECT_EQ(batch_output_path("out", 1, 2), "out-1");
  EXPECT_EQ(batch_output_path("a.b/x.tar.wav", 1, 2), "a.b/x.tar-1.wav");
}

TEST(InferMoshiFlags, OptionChecks) {
  InferOptions o;
  o.batch_size = 0;
  EXPECT_THROW(check_infer_options(o), Error);
  o.batch_size = 2;
  EXPECT_NO_THROW(check_infer_options(o));
  o.greedy = true;
  o.top_k_text = 5;
  EXPECT_THROW(check_infer_options(o), Error);
}

}  // namespace
}  // namespace mtt::infer
