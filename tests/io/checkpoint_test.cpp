#include "io/checkpoint.h"

#include <gtest/gtest.h>

#include <filesystem>

#include "core/atomic_file.h"
#include "core/error.h"
#include "st_helpers.h"

namespace mtt::io {
namespace {

namespace fs = std::filesystem;

// Writes a file whose F32 tensors hold `value` at every element (shape [n]).
void write_st(const fs::path& path, const std::map<std::string, int64_t>& tensors, float value = 1.0f) {
  fs::create_directories(path.parent_path());
  std::vector<std::vector<float>> data;
  std::vector<TensorToWrite> w;
  data.reserve(tensors.size());
  for (const auto& [name, n] : tensors) {
    data.emplace_back(static_cast<std::size_t>(n), value);
    w.push_back({name, DType::F32, {n}, data.back().data()});
  }
  write_safetensors(path.string(), w);
}

void write_text(const fs::path& path, const std::string& s) {
  fs::create_directories(path.parent_path());
  write_file_atomic(path.string(), s);
}

float first_value(const TensorView& v) {
  float x;
  std::memcpy(&x, v.data, 4);
  return x;
}

// Expects an mtt::Error whose one-line message holds every fragment.
template <class F>
void expect_error(F&& f, std::initializer_list<std::string> fragments) {
  try {
    f();
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    std::string msg = e.what();
    EXPECT_EQ(msg.find('\n'), std::string::npos);
    EXPECT_EQ(e.exit_status(), kExitInput) << msg;
    for (const auto& frag : fragments) EXPECT_NE(msg.find(frag), std::string::npos) << "'" << frag << "' not in: " << msg;
  }
}

// A moshi-finetune run dir with checkpoints at `steps`; each consolidated/ holds lora.safetensors
// whose tensors hold the step as value, plus config.json.
fs::path make_run(const fs::path& root, std::initializer_list<int> steps, bool with_full = false) {
  for (int s : steps) {
    char name[32];
    std::snprintf(name, sizeof name, "checkpoint_%06d", s);
    fs::path c = root / "checkpoints" / name / "consolidated";
    write_st(c / "lora.safetensors", {{"layers.0.ttt.W1", 4}, {"layers.0.gating_alpha", 2}}, static_cast<float>(s));
    if (with_full) write_st(c / "consolidated.safetensors", {{"emb.weight", 8}, {"out.weight", 3}}, static_cast<float>(s));
    write_text(c / "config.json", "{\"dim\": 64, \"step\": " + std::to_string(s) + "}");
  }
  return root;
}

TEST(Checkpoint, SingleFile) {
  test::TempDir dir;
  write_st(dir / "m.safetensors", {{"b", 3}, {"a", 2}});
  auto c = Checkpoint::open((dir / "m.safetensors").string());
  EXPECT_EQ(c.kind(), CheckpointKind::File);
  EXPECT_EQ(c.keys(), (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(c.total_bytes(), 20u);
  EXPECT_EQ(c.get("b").shape(), (std::vector<int64_t>{3}));
  EXPECT_FALSE(c.find("zz").has_value());
  EXPECT_EQ(c.file_of("a"), (dir / "m.safetensors").string());
  EXPECT_FALSE(c.has_config());
  EXPECT_FALSE(c.step().has_value());
  EXPECT_EQ(c.describe(), "file " + (dir / "m.safetensors").string() + ": m.safetensors, 2 tensors, 20 B");
}

TEST(Checkpoint, MissingKeyNamesCheckpointKeyAndNearMiss) {
  test::TempDir dir;
  write_st(dir / "m.safetensors", {{"model.layers.0.w", 1}});
  auto c = Checkpoint::open((dir / "m.safetensors").string());
  expect_error([&] { c.get("layers.0.w"); }, {(dir / "m.safetensors").string(), "layers.0.w: no such tensor",
                                               "did you mean \"model.layers.0.w\""});
  expect_error([&] { c.file_of("nope"); }, {"nope: no such tensor"});
}

TEST(Checkpoint, ShardedIndex) {
  test::TempDir dir;
  write_st(dir / "model-00001-of-00002.safetensors", {{"a", 2}, {"b", 2}}, 1.0f);
  write_st(dir / "model-00002-of-00002.safetensors", {{"c", 4}}, 2.0f);
  write_text(dir / "model.safetensors.index.json",
             R"({"metadata": {"total_size": 32}, "weight_map": {"a": "model-00001-of-00002.safetensors",
                 "b": "model-00001-of-00002.safetensors", "c": "model-00002-of-00002.safetensors"}})");
  write_text(dir / "config.json", R"({"model_type": "moshi"})");
  for (auto p : {dir / "model.safetensors.index.json", dir.path()}) {
    auto c = Checkpoint::open(p.string());
    EXPECT_EQ(c.kind(), p == dir.path() ? CheckpointKind::ModelDir : CheckpointKind::ShardIndex);
    EXPECT_EQ(c.keys(), (std::vector<std::string>{"a", "b", "c"}));
    EXPECT_EQ(c.files().size(), 2u);
    EXPECT_EQ(c.file_of("c"), (dir / "model-00002-of-00002.safetensors").string());
    EXPECT_EQ(first_value(c.get("c")), 2.0f);
    EXPECT_EQ(c.total_bytes(), 32u);
    EXPECT_EQ(c.metadata().at("total_size"), "32");
    EXPECT_EQ(c.has_config(), p == dir.path());
  }
}

TEST(Checkpoint, ShardErrors) {
  test::TempDir dir;
  write_st(dir / "s1.safetensors", {{"a", 2}, {"b", 2}});
  write_st(dir / "s2.safetensors", {{"b", 2}, {"c", 1}});
  auto idx = (dir / "x.safetensors.index.json").string();
  write_text(idx, R"({"weight_map": {"a": "s1.safetensors", "z": "gone.safetensors"}})");
  expect_error([&] { Checkpoint::open(idx); }, {idx, "gone.safetensors", "is missing", "\"z\""});
  write_text(idx, R"({"weight_map": {"a": "s1.safetensors", "b": "s1.safetensors", "c": "s2.safetensors"}})");
  expect_error([&] { Checkpoint::open(idx); }, {"s2.safetensors", "b: tensor also in", "duplicated across"});
  write_st(dir / "s2.safetensors", {{"c", 1}});
  write_text(idx, R"({"weight_map": {"a": "s2.safetensors", "b": "s1.safetensors", "c": "s2.safetensors"}})");
  expect_error([&] { Checkpoint::open(idx); }, {idx, "a: weight_map names shard s2.safetensors but the tensor is in"});
  write_text(idx, R"({"weight_map": {"a": "s1.safetensors", "q": "s2.safetensors"}})");
  expect_error([&] { Checkpoint::open(idx); }, {"s2.safetensors: q: tensor named by", "not in this shard"});
  write_text(idx, R"({"weight_map": {"a": "s1.safetensors", "a": "s2.safetensors"}})");
  expect_error([&] { Checkpoint::open(idx); }, {idx, "duplicate key \"a\""});
  write_text(idx, R"({"weight_map": {"a": 3}})");
  expect_error([&] { Checkpoint::open(idx); }, {idx, "a: weight_map value is not a shard"});
  write_text(idx, R"({"metadata": {}})");
  expect_error([&] { Checkpoint::open(idx); }, {idx, "weight_map: missing"});
  write_text(idx, R"({"weight_map": )");
  expect_error([&] { Checkpoint::open(idx); }, {idx, "not valid JSON"});
}

TEST(Checkpoint, RunDirNewestStepByDefault) {
  test::TempDir dir;
  auto run = make_run(dir / "run", {100, 300, 200});
  auto c = Checkpoint::open(run.string());
  EXPECT_EQ(c.kind(), CheckpointKind::RunDir);
  EXPECT_EQ(c.step(), 300);
  EXPECT_EQ(c.available_steps(), (std::vector<int64_t>{100, 200, 300}));
  EXPECT_EQ(Checkpoint::list_steps(run.string()), (std::vector<int64_t>{100, 200, 300}));
  EXPECT_EQ(first_value(c.get("layers.0.ttt.W1")), 300.0f);
  ASSERT_TRUE(c.has_config());
  EXPECT_EQ(c.config()["step"], 300);
  EXPECT_NE(c.describe().find("run dir " + run.string() + " step 300 (of 100, 200, 300): lora.safetensors, 2 tensors"),
            std::string::npos)
      << c.describe();

  CheckpointOptions o;
  o.step = 100;
  auto c100 = Checkpoint::open(run.string(), o);
  EXPECT_EQ(c100.step(), 100);
  EXPECT_EQ(first_value(c100.get("layers.0.gating_alpha")), 100.0f);
  o.step = 150;
  expect_error([&] { Checkpoint::open(run.string(), o); }, {"no checkpoint for step 150", "available: 100, 200, 300"});
}

TEST(Checkpoint, RunDirSubfoldersAndParts) {
  test::TempDir dir;
  auto run = make_run(dir / "run", {5, 7}, /*with_full=*/true);
  auto both = Checkpoint::open(run.string());
  EXPECT_EQ(both.files().size(), 2u);
  EXPECT_EQ(both.size(), 4u);
  EXPECT_EQ(both.file_of("emb.weight"), (run / "checkpoints/checkpoint_000007/consolidated/consolidated.safetensors").string());
  CheckpointOptions lora_only;
  lora_only.consolidated = false;
  EXPECT_EQ(Checkpoint::open(run.string(), lora_only).size(), 2u);
  // The checkpoints/ folder, one checkpoint folder, and its consolidated/ folder all open.
  EXPECT_EQ(Checkpoint::open((run / "checkpoints").string()).step(), 7);
  auto one = Checkpoint::open((run / "checkpoints/checkpoint_000005").string());
  EXPECT_EQ(one.step(), 5);
  EXPECT_EQ(first_value(one.get("out.weight")), 5.0f);
  EXPECT_EQ(Checkpoint::open((run / "checkpoints/checkpoint_000005/").string()).step(), 5) << "trailing slash";
  EXPECT_EQ(Checkpoint::open(run.string() + "/").step(), 7);
  auto cons = Checkpoint::open((run / "checkpoints/checkpoint_000005/consolidated/").string());
  EXPECT_EQ(cons.kind(), CheckpointKind::ConsolidatedDir);
  EXPECT_EQ(cons.size(), 4u);
  EXPECT_EQ(cons.config()["dim"], 64);
}

TEST(Checkpoint, RunDirErrors) {
  test::TempDir dir;
  fs::create_directories(dir / "empty_run" / "checkpoints");
  expect_error([&] { Checkpoint::open((dir / "empty_run").string()); }, {"empty_run", "run dir without checkpoints"});
  fs::create_directories(dir / "nothing" / "logs");
  expect_error([&] { Checkpoint::open((dir / "nothing").string()); }, {"nothing", "no checkpoint found"});
  expect_error([&] { Checkpoint::open((dir / "absent").string()); }, {"absent", "no such file or directory"});

  // The newest checkpoint is incomplete: a clear error naming it, not a silent fallback.
  auto run = make_run(dir / "run", {1});
  fs::create_directories(run / "checkpoints/checkpoint_000002/consolidated");
  expect_error([&] { Checkpoint::open(run.string()); }, {"checkpoint_000002/consolidated", "incomplete save"});
  CheckpointOptions o;
  o.step = 1;
  EXPECT_EQ(Checkpoint::open(run.string(), o).step(), 1);

  // The same key in consolidated.safetensors and lora.safetensors.
  auto c = run / "checkpoints/checkpoint_000001/consolidated";
  write_st(c / "consolidated.safetensors", {{"layers.0.ttt.W1", 4}});
  expect_error([&] { Checkpoint::open(run.string(), o); }, {"lora.safetensors", "layers.0.ttt.W1", "duplicated"});

  // Broken config.json is named.
  write_st(c / "consolidated.safetensors", {{"x", 1}});
  write_text(c / "config.json", "{\"dim\": 64,");
  expect_error([&] { Checkpoint::open(run.string(), o); }, {(c / "config.json").string(), "not valid JSON"});

  // Two folders for one step.
  fs::create_directories(run / "checkpoints/checkpoint_1/consolidated");
  expect_error([&] { Checkpoint::open(run.string(), o); }, {"two checkpoint folders for step 1"});
}

}  // namespace
}  // namespace mtt::io
