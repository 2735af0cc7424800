// Readers of ttt-plot's inputs: the fixtures parse to what they hold; malformed or empty inputs
// give one-line errors naming the file and the key or line.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/safetensors.h"
#include "plot/inputs.h"
#include "test_util.h"

namespace {

namespace pl = mtt::plot;
using mtt::test::fixtures_dir;
using mtt::test::TempDir;

std::string fx(const std::string& rel) { return (fixtures_dir() / "plot" / rel).string(); }

void write(const std::filesystem::path& p, const std::string& s) {
  std::filesystem::create_directories(p.parent_path());
  std::ofstream(p, std::ios::binary) << s;
}

// Runs f, expects an mtt::Error whose one-line message contains every needle.
template <class F>
void expect_error(F&& f, std::initializer_list<std::string> needles) {
  try {
    f();
    ADD_FAILURE() << "no error thrown";
  } catch (const mtt::Error& e) {
    const std::string w = e.what();
    EXPECT_EQ(w.find('\n'), std::string::npos) << w;
    for (const auto& n : needles) EXPECT_NE(w.find(n), std::string::npos) << "'" << n << "' not in: " << w;
  }
}

TEST(PlotInputs, InnerLoopFixtureMatchesTheJson) {
  const auto d = pl::read_inner_loop(fx("run"));  // run dir -> inner_loop.json
  ASSERT_EQ(d.layers.size(), 2u);
  const auto j = nlohmann::json::parse(std::ifstream(fx("run/inner_loop.json")));
  for (std::size_t i = 0; i < 2; ++i) {
    const auto& l = d.layers[i];
    EXPECT_EQ(l.layer, j["layers"][i]["layer"].get<int>());
    EXPECT_EQ(l.mini_batch_size, 16);
    ASSERT_EQ(l.positions.size(), 192u);
    EXPECT_EQ(l.loss_after, j["layers"][i]["loss_after"].get<std::vector<double>>());
    ASSERT_EQ(l.head_w0.size(), 4u);
    EXPECT_EQ(l.head_before[3], j["layers"][i]["per_head"]["loss_before"][3].get<std::vector<double>>());
  }
  // The file path works as well as the run dir.
  EXPECT_EQ(pl::read_inner_loop(fx("run/inner_loop.json")).layers[1].loss_w0, d.layers[1].loss_w0);
}

TEST(PlotInputs, InnerLoopNullIsNaN) {
  auto d = pl::parse_inner_loop(
      R"({"format":"moshi-ttt/inner-loop/1","layers":[{"layer":3,"positions":[0,1],"loss_w0":[1,null],"loss_before":[1,2],"loss_after":[0.5,1]}]})",
      "x.json");
  EXPECT_TRUE(std::isnan(d.layers[0].loss_w0[1]));
}

TEST(PlotInputs, InnerLoopErrorsNameFileAndKey) {
  const std::string ok_layer = R"("positions":[0,1],"loss_w0":[1,1],"loss_before":[1,1],"loss_after":[1,1])";
  expect_error([] { pl::parse_inner_loop("", "a.json"); }, {"a.json", "empty"});
  expect_error([] { pl::parse_inner_loop("{\"format\": \"moshi-ttt/inner-loop/1\",\n \"layers\": [", "a.json"); },
               {"a.json", "line 2", "invalid JSON"});
  expect_error([] { pl::parse_inner_loop(R"({"format":"other/1","layers":[]})", "a.json"); }, {"a.json", "format", "unsupported"});
  expect_error([] { pl::parse_inner_loop(R"({"format":"moshi-ttt/inner-loop/1","layers":[]})", "a.json"); },
               {"a.json", "layers", "no layers"});
  expect_error(
      [&] {
        pl::parse_inner_loop(R"({"format":"moshi-ttt/inner-loop/1","layers":[{"layer":1,)" + ok_layer + R"(},
          {"layer":2,"positions":[0,1,2],"loss_w0":[1,1,1],"loss_before":[1,1,1],"loss_after":[1,1]}]})",
                             "a.json");
      },
      {"a.json", "layers[1].loss_after", "2 values for 3 positions"});
  expect_error(
      [&] {
        pl::parse_inner_loop(R"({"format":"moshi-ttt/inner-loop/1","layers":[{"layer":1,"positions":[0,1],"loss_w0":[1,"x"],"loss_before":[1,1],"loss_after":[1,1]}]})",
                             "a.json");
      },
      {"layers[0].loss_w0[1]", "expected a number"});
  expect_error(
      [&] {
        pl::parse_inner_loop(R"({"format":"moshi-ttt/inner-loop/1","layers":[{"layer":1,)" + ok_layer +
                                 R"(,"per_head":{"loss_w0":[[1,1]],"loss_before":[[1,1],[1,1]],"loss_after":[[1,1]]}}]})",
                             "a.json");
      },
      {"per_head.loss_before", "2 heads"});
  expect_error([&] { pl::parse_inner_loop(R"({"format":"moshi-ttt/inner-loop/1","layers":[{"layer":1,"loss_w0":[]}]})", "a.json"); },
               {"layers[0].positions", "missing"});
  TempDir t;
  expect_error([&] { pl::read_inner_loop(t.path().string()); }, {t.path().string(), "no inner_loop.json"});
  expect_error([&] { pl::read_inner_loop((t / "nope.json").string()); }, {"nope.json", "no such file"});
}

TEST(PlotInputs, SummaryCsvAndJsonAgree) {
  const auto c = pl::read_summary(fx("sweep/summary.csv"));
  const auto j = pl::read_summary(fx("sweep"));  // dir -> summary.json
  EXPECT_EQ(j.path, fx("sweep/summary.json"));
  EXPECT_EQ(j.axes, (std::vector<std::string>{"mini_batch_size", "ttt_base_lr", "recon_target"}));
  ASSERT_EQ(c.rows.size(), 16u);
  ASSERT_EQ(j.rows.size(), 16u);
  EXPECT_EQ(c.columns, j.columns);
  for (std::size_t r = 0; r < 16; ++r)
    for (std::size_t k = 0; k < c.columns.size(); ++k) {
      EXPECT_EQ(c.rows[r][k].null, j.rows[r][k].null) << r << " " << c.columns[k];
      EXPECT_EQ(c.rows[r][k].numeric, j.rows[r][k].numeric) << r << " " << c.columns[k];
      if (c.rows[r][k].numeric) {
        EXPECT_DOUBLE_EQ(c.rows[r][k].num, j.rows[r][k].num);
      }
    }
  EXPECT_EQ(c.lines[0], 2);
  EXPECT_TRUE(c.rows[15][c.column("final_loss")].null);  // the failed point
}

TEST(PlotInputs, CsvQuotingAndErrors) {
  auto t = pl::parse_summary_csv("id,name,loss\r\np0,\"a, \"\"quoted\"\"\nname\",1.5\r\np1,b,\n", "s.csv");
  ASSERT_EQ(t.rows.size(), 2u);
  EXPECT_EQ(t.rows[0][1].text, "a, \"quoted\"\nname");
  EXPECT_DOUBLE_EQ(t.rows[0][2].num, 1.5);
  EXPECT_EQ(t.lines[1], 4);  // the quoted newline counts
  EXPECT_TRUE(t.rows[1][2].null);
  expect_error([] { pl::parse_summary_csv("", "s.csv"); }, {"s.csv", "empty"});
  expect_error([] { pl::parse_summary_csv("id,x,y\n", "s.csv"); }, {"s.csv", "no rows"});
  expect_error([] { pl::parse_summary_csv("id,x,y\np0,1,2\np1,1\n", "s.csv"); }, {"s.csv", "line 3", "2 fields", "3"});
  expect_error([] { pl::parse_summary_csv("id,x,x\np0,1,2\n", "s.csv"); }, {"line 1", "'x' appears twice"});
  expect_error([] { pl::parse_summary_csv("id,x\np0,\"1\n", "s.csv"); }, {"line 2", "unterminated"});
  expect_error([] { pl::parse_summary_json(R"({"axes":["a"],"metrics":["m"],"rows":[]})", "s.json"); }, {"s.json", "rows", "no rows"});
  expect_error([] { pl::parse_summary_json(R"({"axes":["a"],"rows":[{"a":1}]})", "s.json"); }, {"s.json", "metrics"});
  TempDir d;
  expect_error([&] { pl::read_summary(d.path().string()); }, {"no summary.json or summary.csv"});
}

TEST(PlotInputs, MetricsJsonl) {
  const auto r = pl::read_metrics(fx("run"));
  ASSERT_EQ(r.train.step.size(), 60u);
  EXPECT_EQ(r.train.step.front(), 1);
  EXPECT_EQ(r.train.step.back(), 60);
  ASSERT_TRUE(r.train.fields.count("loss"));
  ASSERT_TRUE(r.eval.has_value());
  EXPECT_EQ(r.eval->step.size(), 6u);
  EXPECT_TRUE(r.eval->fields.count("eval_loss"));
  // A field that appears later is NaN before it.
  auto m = pl::parse_metrics_jsonl("{\"step\":1,\"loss\":2}\n\n{\"step\":2,\"loss\":1,\"lr\":0.1}\n", "m.jsonl");
  ASSERT_EQ(m.fields["lr"].size(), 2u);
  EXPECT_TRUE(std::isnan(m.fields["lr"][0]));
  EXPECT_DOUBLE_EQ(m.fields["lr"][1], 0.1);
  expect_error([] { pl::parse_metrics_jsonl("", "m.jsonl"); }, {"m.jsonl", "no records"});
  expect_error([] { pl::parse_metrics_jsonl("{\"step\":1}\n{\"step\":2,\"loss\":\n", "m.jsonl"); }, {"m.jsonl", "line 2", "invalid JSON"});
  expect_error([] { pl::parse_metrics_jsonl("{\"step\":1}\n[1]\n", "m.jsonl"); }, {"line 2", "object"});
  expect_error([] { pl::parse_metrics_jsonl("{\"step\":1}\n{\"loss\":1}\n", "m.jsonl"); }, {"line 2", "step"});
  TempDir d;
  expect_error([&] { pl::read_metrics(d.path().string()); }, {"no metrics.train.jsonl"});
}

// Gates: a run dir expands to its steps; bf16 values decode exactly.
TEST(PlotInputs, GatesFromRunDir) {
  const auto g = pl::read_gates({fx("run")});
  ASSERT_EQ(g.size(), 4u);
  EXPECT_EQ(g[0].step, 100);
  EXPECT_EQ(g[3].step, 400);
  EXPECT_EQ(g[0].run, "run");
  ASSERT_EQ(g[0].gates.size(), 6u);  // 3 layers x forward/backward
  const auto& b = g[2].gates.at({30, "backward"}).alpha;
  ASSERT_EQ(b.size(), 64u);
  for (float v : b) EXPECT_EQ(v, mtt::bf16_to_float(mtt::float_to_bf16(0.1f)));
}

TEST(PlotInputs, GatesFromFilesAndErrors) {
  TempDir d;
  std::vector<float> a = {0.5f, -0.25f, 4.0f};
  std::vector<float> w = {1, 2};
  const auto p1 = (d / "checkpoint_000007" / "model.safetensors").string();
  std::filesystem::create_directories(d / "checkpoint_000007");
  mtt::io::write_safetensors(p1, {{"transformer.layers.5.seq_modeling_block.forward_ssm_gating.gating_alpha", mtt::DType::F32, {3}, a.data()},
                                  {"other.weight", mtt::DType::F32, {2}, w.data()}});
  auto g = pl::read_gates({p1});
  ASSERT_EQ(g.size(), 1u);
  EXPECT_EQ(g[0].step, 7);  // from the checkpoint_NNNNNN in the path
  EXPECT_EQ(g[0].gates.at({5, "forward"}).alpha, a);
  const auto p2 = (d / "plain.safetensors").string();
  mtt::io::write_safetensors(p2, {{"other.weight", mtt::DType::F32, {2}, w.data()}});
  expect_error([&] { pl::read_gates({p2}); }, {"plain.safetensors", "no *_ssm_gating.gating_alpha"});
  std::vector<int32_t> ints = {1, 2};
  const auto p3 = (d / "int.safetensors").string();
  mtt::io::write_safetensors(p3, {{"layers.1.seq_modeling_block.backward_ssm_gating.gating_alpha", mtt::DType::I32, {2}, ints.data()}});
  expect_error([&] { pl::read_gates({p3}); }, {"int.safetensors", "gating_alpha", "dtype I32"});
  write(d / "broken.safetensors", "not a safetensors file");
  expect_error([&] { pl::read_gates({(d / "broken.safetensors").string()}); }, {"broken.safetensors"});
  expect_error([&] { pl::read_gates({(d / "missing").string()}); }, {"missing", "no such file"});
}

}  // namespace
