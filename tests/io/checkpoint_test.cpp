#include "io/checkpoint.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/atomic_file.h"
#include "core/dtype.h"
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


// ---------------------------------------------------------------------------------------------
// Run dirs written by the forks' own code (tests/data/fork_runs: the moshi-finetune TTT fork's
// Checkpointer; tests/data/inplace_runs: the In-Place TTT port's). The fixtures above come from our
// own writer; these are users' files. Every expectation is read from the case's meta.json (the
// generator's record of what the fork loaded) or from its README, never from our reader.
// ---------------------------------------------------------------------------------------------

namespace forkdata {

nlohmann::json read_json(const fs::path& p) {
  std::ifstream f(p);
  return nlohmann::json::parse(f);
}

struct RunCase {
  fs::path dir;   // <family>/<case>
  bool fork;      // fork_runs (else inplace_runs)
  nlohmann::json meta;
  std::string name() const { return dir.parent_path().filename().string() + "/" + dir.filename().string(); }
  fs::path run() const { return dir / "run"; }
  // The weights file relative to the run dir, as meta.json names it.
  fs::path weights_file() const {
    if (fork) return meta.at("load").at("weights_file").get<std::string>();
    std::string f = meta.at("saved_checkpoint").at("file").get<std::string>();  // "run/checkpoints/..."
    return f.substr(std::string("run/").size());
  }
  size_t keys_in_file() const {
    return fork ? meta.at("load").at("keys_in_file").get<size_t>() : meta.at("saved_checkpoint").at("n_tensors").get<size_t>();
  }
  DType dtype() const {
    const std::string d =
        fork ? meta.at("load").at("weights_dtype").get<std::string>() : meta.at("saved_checkpoint").at("dtypes").at(0).get<std::string>();
    if (d == "bfloat16" || d == "torch.bfloat16") return DType::BF16;
    if (d == "float32" || d == "torch.float32") return DType::F32;
    throw std::runtime_error(dir.string() + ": meta.json dtype " + d);
  }
};

std::vector<RunCase> run_cases() {
  std::vector<RunCase> out;
  for (const char* family : {"fork_runs", "inplace_runs"}) {
    const fs::path root = test::source_dir() / "tests" / "data" / family;
    if (!fs::is_directory(root)) continue;
    for (const auto& e : fs::directory_iterator(root))
      if (fs::is_regular_file(e.path() / "meta.json"))
        out.push_back({e.path(), std::string(family) == "fork_runs", read_json(e.path() / "meta.json")});
  }
  std::sort(out.begin(), out.end(), [](const RunCase& a, const RunCase& b) { return a.dir < b.dir; });
  return out;
}

const RunCase& find_case(const std::vector<RunCase>& cs, const std::string& name) {
  for (const auto& c : cs)
    if (c.dir.filename() == name) return c;
  throw std::runtime_error("no case " + name);
}

std::vector<double> values(const TensorView& v) {
  std::vector<double> out(v.numel());
  for (size_t i = 0; i < out.size(); ++i) out[i] = element_as_double(v.data, v.dtype(), i);
  return out;
}

bool same_bytes(const TensorView& a, const TensorView& b) {
  return a.dtype() == b.dtype() && a.shape() == b.shape() && a.nbytes() == b.nbytes() &&
         std::memcmp(a.data, b.data, a.nbytes()) == 0;
}

std::string ttt_key(int layer, const std::string& rest) {
  return "transformer.layers." + std::to_string(layer) + ".seq_modeling_block." + rest;
}

}  // namespace forkdata

TEST(CheckpointForkRuns, TheCommittedRunDirsAreHere) {
  // Nine cases (five fork, four In-Place): without them every test below would pass vacuously.
  EXPECT_EQ(forkdata::run_cases().size(), 9u);
}

TEST(CheckpointForkRuns, NewestStepKeysDtypesAndConfigAsTheForkLoadedThem) {
  for (const auto& c : forkdata::run_cases()) {
    SCOPED_TRACE(c.name());
    auto ck = Checkpoint::open(c.run().string());
    EXPECT_EQ(ck.kind(), CheckpointKind::RunDir);
    EXPECT_EQ(ck.step(), 3);  // max_steps 3, one save at the end (README)
    EXPECT_EQ(ck.available_steps(), (std::vector<int64_t>{3}));
    EXPECT_EQ(ck.size(), c.keys_in_file());
    ASSERT_EQ(ck.files().size(), 1u);
    EXPECT_EQ(ck.files()[0]->path(), (c.run() / c.weights_file()).string());
    for (const auto& k : ck.keys()) EXPECT_EQ(ck.get(k).dtype(), c.dtype()) << k;
    // consolidated/config.json: the base config.json plus the LoRA keys the fork adds.
    ASSERT_TRUE(ck.has_config());
    const auto base_cfg = forkdata::read_json(c.dir.parent_path() / "base" / "config.json");
    for (const char* k : {"dim", "num_layers", "card", "text_card", "n_q", "dep_q", "context", "delays"})
      EXPECT_EQ(ck.config().at(k), base_cfg.at(k)) << k;
    EXPECT_TRUE(ck.config().contains("lora"));
    if (c.fork) {
      EXPECT_FALSE(ck.config().contains("ttt"));  // README: "no ttt key"
      const auto lora = c.meta.at("settings").at("train_config_yaml").value("lora", nlohmann::json::object());
      EXPECT_EQ(ck.config().at("lora").get<bool>(), lora.value("enable", false));
    } else {
      EXPECT_EQ(ck.config().at("ttt_config"), c.meta.at("ttt_config.config.json"));
    }
    // The same checkpoint through its checkpoint_000003/ and consolidated/ folders.
    const fs::path cons = c.run() / "checkpoints" / "checkpoint_000003" / "consolidated";
    auto by_cons = Checkpoint::open(cons.string());
    EXPECT_EQ(by_cons.kind(), CheckpointKind::ConsolidatedDir);
    EXPECT_EQ(by_cons.keys(), ck.keys());
    EXPECT_EQ(Checkpoint::open(cons.parent_path().string()).keys(), ck.keys());
  }
}

TEST(CheckpointForkRuns, TttTensorShapesAsTheForkWritesThem) {
  // tests/data/fork_runs/README.md "What the files hold": dim 64, 4 heads of 16, TTT-MLP hidden 64.
  using V = std::vector<int64_t>;
  for (const auto& c : forkdata::run_cases()) {
    if (!c.fork) continue;
    SCOPED_TRACE(c.name());
    auto ck = Checkpoint::open(c.run().string());
    const bool mlp3 = c.dir.filename() == "ttt_mlp3";
    for (int l : c.meta.at("ttt_layers").get<std::vector<int>>()) {
      auto shape = [&](const std::string& rest) { return ck.get(forkdata::ttt_key(l, rest)).shape(); };
      EXPECT_EQ(shape("forward_ssm_gating.gating_alpha"), V{64});
      EXPECT_EQ(shape("backward_ssm_gating.gating_alpha"), V{64});
      for (const char* p : {"wq", "wk", "wv", "wo"}) {
        EXPECT_EQ(shape(std::string("ttt_layer.ttt.") + p + ".weight"), (V{64, 64}));
        EXPECT_EQ(shape(std::string("ttt_layer.ttt.") + p + ".bias"), V{64});
      }
      EXPECT_EQ(shape("ttt_layer.ttt.ttt_norm_weight"), (V{4, 16}));
      EXPECT_EQ(shape("ttt_layer.ttt.learnable_ttt_lr_weight"), (V{4, 1, 64}));
      EXPECT_EQ(shape("ttt_layer.ttt.learnable_ttt_lr_bias"), (V{4, 1}));
      EXPECT_EQ(shape("ttt_layer.ttt.post_norm.weight"), V{64});
      if (mlp3) {  // TTTMLPMultiLayer, dims 16-64-64-16
        EXPECT_EQ(shape("ttt_layer.ttt.weights.0"), (V{4, 16, 64}));
        EXPECT_EQ(shape("ttt_layer.ttt.weights.1"), (V{4, 64, 64}));
        EXPECT_EQ(shape("ttt_layer.ttt.weights.2"), (V{4, 64, 16}));
        EXPECT_EQ(shape("ttt_layer.ttt.biases.2"), (V{4, 1, 16}));
        EXPECT_FALSE(ck.contains(forkdata::ttt_key(l, "ttt_layer.ttt.W1")));
      } else {
        EXPECT_EQ(shape("ttt_layer.ttt.W1"), (V{4, 16, 64}));
        EXPECT_EQ(shape("ttt_layer.ttt.b1"), (V{4, 1, 64}));
        EXPECT_EQ(shape("ttt_layer.ttt.W2"), (V{4, 64, 16}));
        EXPECT_EQ(shape("ttt_layer.ttt.b2"), (V{4, 1, 16}));
      }
    }
  }
  // LoRA rank 4 (lora_ttt's args): lora_A [4, in], lora_B [out, 4], TTT layers' under original_layer.
  const auto cs = forkdata::run_cases();
  auto ck = Checkpoint::open(forkdata::find_case(cs, "lora_ttt").run().string());
  EXPECT_EQ(ck.get("transformer.layers.1.original_layer.self_attn.in_projs.0.lora_A.weight").shape(), (V{4, 64}));
  EXPECT_EQ(ck.get("transformer.layers.1.original_layer.self_attn.in_projs.0.lora_B.weight").shape(), (V{192, 4}));
  EXPECT_EQ(ck.get("transformer.layers.0.self_attn.out_projs.0.lora_B.weight").shape(), (V{64, 4}));
  EXPECT_FALSE(ck.contains("transformer.layers.1.self_attn.in_projs.0.lora_A.weight"));
}

TEST(CheckpointForkRuns, GateValuesEqualWhatTheForkLoaded) {
  // meta.json gates_loaded: mean / min / max of every gating_alpha after the fork's CheckpointLoader.
  for (const auto& c : forkdata::run_cases()) {
    if (!c.fork) continue;
    auto ck = Checkpoint::open(c.run().string());
    const auto& gates = c.meta.at("gates_loaded");
    ASSERT_EQ(gates.size(), 2 * c.meta.at("ttt_layers").size()) << c.name();
    for (const auto& [name, stats] : gates.items()) {
      SCOPED_TRACE(c.name() + " " + name);
      const auto dot = name.find('.');
      const int layer = std::stoi(name.substr(5, dot - 5));  // "layer1.forward_ssm_gating"
      const auto v = forkdata::values(ck.get(forkdata::ttt_key(layer, name.substr(dot + 1) + ".gating_alpha")));
      double sum = 0;
      for (double x : v) sum += x;
      EXPECT_EQ(*std::min_element(v.begin(), v.end()), stats.at("min").get<double>());
      EXPECT_EQ(*std::max_element(v.begin(), v.end()), stats.at("max").get<double>());
      EXPECT_NEAR(sum / v.size(), stats.at("mean").get<double>(), 1e-7);  // torch's float32 mean
    }
  }
}

TEST(CheckpointForkRuns, OneRunSavedTwoWaysHoldsTheSameTensors) {
  // ttt_adapters and ttt_merged are one training run (README): each adapter tensor is in the merged
  // file with the same bytes, and the merged file holds a TTT layer's base weights twice, equal.
  const auto cs = forkdata::run_cases();
  auto a = Checkpoint::open(forkdata::find_case(cs, "ttt_adapters").run().string());
  auto m = Checkpoint::open(forkdata::find_case(cs, "ttt_merged").run().string());
  for (const auto& k : a.keys()) {
    ASSERT_TRUE(m.contains(k)) << k;
    EXPECT_TRUE(forkdata::same_bytes(a.get(k), m.get(k))) << k;
  }
  size_t twice = 0;
  const std::string dup = "seq_modeling_block.original_layer.";
  for (const auto& k : m.keys())
    if (auto at = k.find(dup); at != std::string::npos) {
      std::string single = k;
      single.replace(at, dup.size(), "original_layer.");
      EXPECT_TRUE(forkdata::same_bytes(m.get(k), m.get(single))) << k;
      ++twice;
    }
  EXPECT_GT(twice, 0u);
  // The fork's model (state_dict with the duplicated names) has 82 keys the adapter file lacks
  // (meta.json model_keys_not_in_file of ttt_adapters): all of them are in the merged file.
  EXPECT_EQ(m.size() - a.size(),
            forkdata::find_case(cs, "ttt_adapters").meta.at("load").at("model_keys_not_in_file").get<size_t>());
}

TEST(CheckpointForkRuns, InPlaceRunsHoldWhatThePortSaved) {
  const auto cs = forkdata::run_cases();
  // inplace_adapters: lora.safetensors holds exactly the target generators (meta.json lists them),
  // bitwise equal to inplace_default's (same training, meta vs_inplace_default).
  const auto& ad = forkdata::find_case(cs, "inplace_adapters");
  auto a = Checkpoint::open(ad.run().string());
  EXPECT_EQ(a.keys(), ad.meta.at("saved_checkpoint").at("keys").get<std::vector<std::string>>());
  auto d = Checkpoint::open(forkdata::find_case(cs, "inplace_default").run().string());
  for (const auto& [k, equal] : ad.meta.at("vs_inplace_default").at("adapter_tensors_equal_default_consolidated").items())
    EXPECT_EQ(forkdata::same_bytes(a.get(k), d.get(k)), equal.get<bool>()) << k;
  // Merged runs: the keys the port added to the base (meta keys_not_in_base) and the trained w_down's
  // distance from linear_out, as the port measured it on the file.
  for (const char* name : {"inplace_default", "inplace_zero", "inplace_big_lr"}) {
    const auto& c = forkdata::find_case(cs, name);
    SCOPED_TRACE(c.name());
    auto ck = Checkpoint::open(c.run().string());
    for (const auto& k : c.meta.at("saved_checkpoint").at("keys_not_in_base")) EXPECT_TRUE(ck.contains(k.get<std::string>())) << k;
    for (const auto& [layer, m] : c.meta.at("loader").at("per_layer").items()) {
      const std::string pre = "transformer.layers." + layer.substr(5) + ".gating.";
      const auto w = forkdata::values(ck.get(pre + "w_down"));
      const auto lo = forkdata::values(ck.get(pre + "linear_out.weight"));
      ASSERT_EQ(w.size(), lo.size());
      double mx = 0;
      for (size_t i = 0; i < w.size(); ++i) mx = std::max(mx, std::abs(static_cast<double>(static_cast<float>(w[i] - lo[i]))));
      EXPECT_NEAR(mx, m.at("file.w_down_minus_file_linear_out_maxabs").get<double>(), 1e-9) << layer;
    }
  }
  // inplace_zero: the target generator started at zero and stays exactly zero (README).
  const auto& z = forkdata::find_case(cs, "inplace_zero");
  auto zk = Checkpoint::open(z.run().string());
  for (const auto& k : z.meta.at("zero_init_from").at("zero_tensors"))
    for (double x : forkdata::values(zk.get(k.get<std::string>()))) ASSERT_EQ(x, 0.0) << k;
}

}  // namespace
}  // namespace mtt::io
