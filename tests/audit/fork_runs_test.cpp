// The audit on run dirs written by the forks' own code (tests/data/fork_runs: the moshi-finetune TTT
// fork; tests/data/inplace_runs: the In-Place TTT port). The fixtures of audit_fixtures.h come
// from our own initialisers; these are users' files, and every finding asserted here is a fact
// the generators measured on the forks' models (meta.json) or state in the folders' README.md:
// - fork: `ttt.wo.*`, `ttt.post_norm.*` and `backward_ssm_gating.gating_alpha` are saved but never
//   read (perturbing them changes the logits by exactly 0, fork_behaviours.unused_saved_tensors);
//   nothing else is unused, LoRA adapters included; the tensors without a gradient stay at their
//   init (backward gate = initial_gating_alpha in the file's dtype, post_norm 1 / 0); the gates'
//   statistics are those of gates_loaded;
// - In-Place: linear_out.weight of a TTT layer is never read by the TTT path and w_down_pretrained
//   is overwritten by the port's loader; a zero target generator stays exactly zero through
//   training (a dead path); an adapter-only save loses the trained w_down.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

#include "audit/audit.h"
#include "test_util.h"

namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using namespace mtt::audit;

json read_json(const fs::path& p) {
  std::ifstream f(p);
  return json::parse(f);
}

fs::path data_dir(const char* family) { return mtt::test::source_dir() / "tests" / "data" / family; }

std::vector<std::string> case_names(const char* family) {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(data_dir(family)))
    if (fs::is_regular_file(e.path() / "meta.json")) out.push_back(e.path().filename().string());
  std::sort(out.begin(), out.end());
  return out;
}

Report audit_run(const char* family, const std::string& name) {
  AuditOptions o;
  o.checkpoint = (data_dir(family) / name / "run").string();
  o.threads = 1;
  return run_audit(o);
}

std::string ttt_key(int layer, const std::string& rest) {
  return "transformer.layers." + std::to_string(layer) + ".seq_modeling_block." + rest;
}

std::set<std::string> unused_names(const Report& r) {
  std::set<std::string> s;
  for (const auto& e : r.unused.entries) s.insert(e.name);
  return s;
}

TEST(AuditForkRuns, TheCommittedRunDirsAreHere) {
  EXPECT_EQ(case_names("fork_runs").size(), 5u);
  EXPECT_EQ(case_names("inplace_runs").size(), 4u);
}

TEST(AuditForkRuns, InventoryIsWhatTheForkLoaded) {
  for (const auto& name : case_names("fork_runs")) {
    SCOPED_TRACE(name);
    const json meta = read_json(data_dir("fork_runs") / name / "meta.json");
    const json& load = meta.at("load");
    const Report r = audit_run("fork_runs", name);
    const auto& inv = r.inventory;
    EXPECT_EQ(inv.tensors, load.at("keys_in_file").get<uint64_t>());
    // The fork's model has every key of the file (file_keys_not_in_model empty) and lacks
    // model_keys_not_in_file of them: what the model declares beyond the file.
    ASSERT_TRUE(load.at("file_keys_not_in_model").empty());
    EXPECT_TRUE(inv.undeclared.empty());
    EXPECT_TRUE(inv.shape_mismatches.empty());
    EXPECT_EQ(inv.missing, load.at("model_keys_not_in_file").get<uint64_t>());
    EXPECT_EQ(inv.partial, load.at("weights_file").get<std::string>().find("lora.safetensors") != std::string::npos);
    const std::string dt = load.at("weights_dtype") == "bfloat16" ? "BF16" : "F32";
    EXPECT_EQ(inv.dtypes, (std::map<std::string, uint64_t>{{dt, inv.tensors}}));
    EXPECT_EQ(inv.nan + inv.inf, 0u);
    // The merged file holds a TTT layer's base weights twice, equal (README).
    EXPECT_TRUE(inv.duplicate_mismatches.empty());
    EXPECT_EQ(inv.duplicate_tensors > 0, name == "ttt_merged");
    // Configuration: the TTT layers and LoRA rank of the run.
    EXPECT_EQ(inv.config.ttt.variant, mtt::moshi::TTTVariant::fork_hybrid);
    EXPECT_EQ(inv.config.ttt.layers, meta.at("ttt_layers").get<std::vector<int>>());
    const json lora = meta.at("settings").at("train_config_yaml").value("lora", json::object());
    EXPECT_EQ(inv.config.ttt.lora_rank, lora.value("enable", false) ? lora.at("rank").get<int>() : 0);
  }
}

TEST(AuditForkRuns, UnusedAreExactlyTheTensorsTheForkNeverReads) {
  for (const auto& name : case_names("fork_runs")) {
    SCOPED_TRACE(name);
    const json meta = read_json(data_dir("fork_runs") / name / "meta.json");
    // The generator's probe: perturbing each of these changed the fork's logits by exactly 0.
    const json& probe = meta.at("fork_behaviours").at("unused_saved_tensors");
    // Keys read "ttt.wo.*: logits max change when perturbed by N(0, 0.25)", values the change.
    for (const std::string k : {"ttt.wo.*", "ttt.post_norm.*", "backward_ssm_gating.gating_alpha"}) {
      int probed = 0;
      for (const auto& [key, v] : probe.items())
        if (key.rfind(k + ":", 0) == 0) {
          ++probed;
          ASSERT_EQ(v.get<double>(), 0.0) << key;
        }
      ASSERT_EQ(probed, 1) << k;
    }
    std::set<std::string> expected;
    for (int l : meta.at("ttt_layers").get<std::vector<int>>())
      for (const char* rest : {"backward_ssm_gating.gating_alpha", "ttt_layer.ttt.wo.weight", "ttt_layer.ttt.wo.bias",
                               "ttt_layer.ttt.post_norm.weight", "ttt_layer.ttt.post_norm.bias"})
        expected.insert(ttt_key(l, rest));
    const Report r = audit_run("fork_runs", name);
    // Exactly these: in lora_ttt no lora_A / lora_B (they are read: W = frozen_W + s * B @ A).
    EXPECT_EQ(unused_names(r), expected);
    for (const auto& e : r.unused.entries) EXPECT_EQ(e.name.find("lora_"), std::string::npos) << e.name;
  }
}

TEST(AuditForkRuns, FrozenAreTheGradientlessTensorsAtTheirInit) {
  for (const auto& name : case_names("fork_runs")) {
    SCOPED_TRACE(name);
    const json meta = read_json(data_dir("fork_runs") / name / "meta.json");
    const Report r = audit_run("fork_runs", name);
    std::map<std::string, double> expected;
    for (int l : meta.at("ttt_layers").get<std::vector<int>>()) {
      // The backward gate the fork loaded: constant (min == max), the initial alpha in the file's dtype.
      const json& g = meta.at("gates_loaded").at("layer" + std::to_string(l) + ".backward_ssm_gating");
      ASSERT_EQ(g.at("min"), g.at("max"));
      expected[ttt_key(l, "backward_ssm_gating.gating_alpha")] = g.at("min").get<double>();
      expected[ttt_key(l, "ttt_layer.ttt.post_norm.weight")] = 1.0;  // README: post_norm weight 1 / bias 0
      expected[ttt_key(l, "ttt_layer.ttt.post_norm.bias")] = 0.0;
    }
    std::map<std::string, double> found;
    for (const auto& e : r.frozen.entries) found[e.name] = e.value;
    EXPECT_EQ(found, expected);
  }
}

TEST(AuditForkRuns, GateStatisticsAreThoseTheForkLoaded) {
  for (const auto& name : case_names("fork_runs")) {
    SCOPED_TRACE(name);
    const json meta = read_json(data_dir("fork_runs") / name / "meta.json");
    const json& gates = meta.at("gates_loaded");
    const Report r = audit_run("fork_runs", name);
    ASSERT_EQ(r.gating.rows.size(), gates.size());
    for (const auto& row : r.gating.rows) {
      const std::string k = "layer" + std::to_string(row.layer) + "." + row.direction + "_ssm_gating";
      SCOPED_TRACE(k);
      ASSERT_TRUE(gates.contains(k));
      const json& g = gates.at(k);
      EXPECT_EQ(row.alpha.min, g.at("min").get<double>());
      EXPECT_EQ(row.alpha.max, g.at("max").get<double>());
      EXPECT_NEAR(row.alpha.mean, g.at("mean").get<double>(), 1e-7);  // torch's float32 mean
      EXPECT_EQ(row.consumed, row.direction == "forward");  // only forward_ssm_gating gates the output
      EXPECT_EQ(row.numel, 64u);
      EXPECT_EQ(row.nonfinite, 0u);
    }
    EXPECT_EQ(r.dead_paths.dead, 0u);
  }
}

TEST(AuditForkRuns, InPlaceRunsFindingsMatchThePortsBehaviour) {
  const std::vector<int> layers = {1, 3};  // ttt_layer_settings of every case
  for (const auto& name : case_names("inplace_runs")) {
    SCOPED_TRACE(name);
    const json meta = read_json(data_dir("inplace_runs") / name / "meta.json");
    ASSERT_EQ(meta.at("ttt_layer_settings (read from the built TTTGating)").at("ttt_layers").get<std::vector<int>>(), layers);
    const json& saved = meta.at("saved_checkpoint");
    const Report r = audit_run("inplace_runs", name);
    EXPECT_EQ(r.inventory.config.ttt.variant, mtt::moshi::TTTVariant::inplace);
    EXPECT_EQ(r.inventory.config.ttt.layers, layers);
    EXPECT_EQ(r.inventory.tensors, saved.at("n_tensors").get<uint64_t>());
    EXPECT_TRUE(r.inventory.undeclared.empty());
    EXPECT_TRUE(r.gating.rows.empty());  // no SSM gates in In-Place TTT
    const bool adapters = name == "inplace_adapters";
    std::set<std::string> expected_unused;
    if (!adapters)
      for (int l : layers)
        for (const char* k : {"linear_out.weight", "w_down_pretrained"})
          expected_unused.insert("transformer.layers." + std::to_string(l) + ".gating." + k);
    EXPECT_EQ(unused_names(r), expected_unused);
    // Dead paths: the zero-initialised target generator stays exactly zero through the port's
    // training (meta zero_init_from); the others trained from N(0, 1e-2).
    const bool zero = meta.contains("zero_init_from");
    EXPECT_EQ(r.dead_paths.dead, zero ? 2u : 0u);
    ASSERT_EQ(r.dead_paths.paths.size(), 2u);
    for (const auto& p : r.dead_paths.paths) {
      EXPECT_NE(p.name.find(".gating.target_generator"), std::string::npos) << p.name;
      EXPECT_EQ(p.status, zero ? "dead" : "live") << p.name;
    }
    // The adapter-only save lost the trained w_down (README, meta vs_inplace_default).
    bool lost = false;
    for (const auto& line : r.problems) lost = lost || line.find("w_down is lost") != std::string::npos;
    EXPECT_EQ(lost, adapters);
  }
}

}  // namespace
