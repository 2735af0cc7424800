#pragma once
// The built-in experiment kinds. Each kind runs one grid point and, over all points, states a
// verdict with its evidence. The list is explicit (make_builtin_experiments in builtin.cpp), not
// static registration, so a static link never drops a kind.
#include <filesystem>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "experiments/grid.h"
#include "io/config_rules.h"

namespace mtt::experiments {

struct RunContext {
  const GridPoint& point;
  std::filesystem::path run_dir;  // exists and is empty when run() starts
  bool progress = true;
  std::string device = "cpu";     // `--device`: only kinds with device_aware get another one
};

struct RunResult {
  nlohmann::json metrics = nlohmann::json::object();  // name -> number (summary columns)
  nlohmann::json evidence = nlohmann::json::object();  // anything the verdict needs
};

struct PointOutcome {
  GridPoint point;
  RunResult result;
};

struct Verdict {
  std::string status;  // "confirmed", "refuted", "inconclusive"
  std::string text;    // one or a few sentences a researcher reads
  nlohmann::json evidence = nlohmann::json::object();
};

struct ExperimentKind {
  std::string name;
  std::string description;
  std::function<RunResult(const RunContext&)> run;
  std::function<Verdict(const std::vector<PointOutcome>&)> verdict;
  bool device_aware = false;  // trains on RunContext::device (else the CPU only)
  // Every key run() reads from a point's config, with its type and range (experiments/
  // config_keys.h). A sweep checks each point against it before running any; a kind that declares
  // no key (one made in code by a test) is not checked.
  io::ConfigRules config;
};

const std::vector<ExperimentKind>& builtin_experiments();
const ExperimentKind& find_experiment(const std::string& name, const std::string& spec_file);

}  // namespace mtt::experiments
