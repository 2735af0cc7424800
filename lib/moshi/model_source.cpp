#include "moshi/model_source.h"

#include <yaml-cpp/yaml.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <cctype>
#include <cstdlib>

#include "core/error.h"
#include "io/strict_json.h"
#include "io/strict_yaml.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace mtt::moshi {

const char* run_writer_name(RunWriter w) {
  switch (w) {
    case RunWriter::file: return "checkpoint file";
    case RunWriter::model_folder: return "model folder";
    case RunWriter::moshi_finetune: return "moshi-finetune";
    case RunWriter::ttt_fork: return "moshi-finetune TTT fork";
    case RunWriter::inplace_port: return "In-Place TTT port";
    case RunWriter::ours: return "moshi-ttt";
  }
  return "?";
}

namespace {

std::string read_text(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw Error(path, "", "cannot open");
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

json read_json(const std::string& path) { return io::parse_json_strict(read_text(path), path); }

YAML::Node read_yaml(const std::string& path) {
  YAML::Node n = io::load_yaml_strict(read_text(path), path);
  if (!n.IsMap()) throw Error(path, "", "expected a YAML mapping");
  return n;
}

bool is_dir(const std::string& p) {
  std::error_code ec;
  return fs::is_directory(p, ec);
}
bool is_file(const std::string& p) {
  std::error_code ec;
  return !p.empty() && fs::is_regular_file(p, ec);
}

std::string yaml_scalar(const YAML::Node& n, const char* key) {
  const YAML::Node v = n[key];
  return v && v.IsScalar() ? v.Scalar() : std::string();
}

// A key of the fork's FSDP / activation-checkpointing wrappers as the plain module name.
std::string strip_wrappers(std::string k) {
  for (const std::string w : {"_fsdp_wrapped_module.", "_checkpoint_wrapped_module.", "_orig_mod."}) {
    for (auto pos = k.find(w); pos != std::string::npos; pos = k.find(w)) k.erase(pos, w.size());
  }
  return k;
}

// "transformer.layers.N.REST" -> N (or -1).
int layer_of(const std::string& k, std::string* rest) {
  static const std::string pre = "transformer.layers.";
  if (k.rfind(pre, 0) != 0) return -1;
  const auto dot = k.find('.', pre.size());
  if (dot == std::string::npos) return -1;
  try {
    const int n = std::stoi(k.substr(pre.size(), dot - pre.size()));
    if (rest) *rest = k.substr(dot + 1);
    return n;
  } catch (...) {
    return -1;
  }
}

bool has_lm_weights(const io::Checkpoint& c) { return c.contains("text_emb.weight") || c.contains("emb.0.weight"); }

bool has_key_with(const io::Checkpoint& c, const std::string& part) {
  for (const auto& k : c.keys())
    if (k.find(part) != std::string::npos) return true;
  return false;
}

}  // namespace

std::string find_run_root(const std::string& path) {
  std::error_code ec;
  fs::path p = fs::absolute(path, ec);
  if (!is_dir(p.string())) p = p.parent_path();
  for (int up = 0; up < 4 && !p.empty(); ++up, p = p.parent_path()) {
    if (is_file((p / "args.yaml").string())) return p.string();
    if (p == p.root_path()) break;
  }
  return "";
}

std::string ModelSource::describe() const {
  std::string s = std::string(run_writer_name(writer)) + " " + path;
  if (run_ckpt && run_ckpt->step()) s += ", step " + std::to_string(*run_ckpt->step());
  if (adapters_only) s += ", adapters over " + (base_path.empty() ? std::string("(no base)") : base_path);
  if (!config_files.empty()) {
    s += "; config from ";
    for (size_t i = 0; i < config_files.size(); ++i) s += (i ? " + " : "") + config_files[i];
  }
  return s;
}

bool is_hf_repo_id(const std::string& s) {
  const auto slash = s.find('/');
  if (slash == std::string::npos || slash == 0 || slash + 1 == s.size() || s.find('/', slash + 1) != std::string::npos)
    return false;
  for (const std::string& part : {s.substr(0, slash), s.substr(slash + 1)}) {
    if (part.front() == '.' || part.front() == '-' || part.find("..") != std::string::npos) return false;
    for (char c : part)
      if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '_' && c != '.') return false;
  }
  return true;
}

std::string hf_hub_cache_dir() {
  auto env = [](const char* k) -> std::string {
    const char* v = std::getenv(k);
    return v && *v ? v : "";
  };
  if (auto v = env("HF_HUB_CACHE"); !v.empty()) return v;
  if (auto v = env("HUGGINGFACE_HUB_CACHE"); !v.empty()) return v;
  if (auto v = env("HF_HOME"); !v.empty()) return (fs::path(v) / "hub").string();
  if (auto v = env("XDG_CACHE_HOME"); !v.empty()) return (fs::path(v) / "huggingface" / "hub").string();
  return (fs::path(env("HOME").empty() ? "/" : env("HOME")) / ".cache" / "huggingface" / "hub").string();
}

std::string resolve_local_model_path(const std::string& p) {
  std::error_code ec;
  if (p.empty() || fs::exists(p, ec) || !is_hf_repo_id(p)) return p;
  const std::string org = p.substr(0, p.find('/')), name = p.substr(p.find('/') + 1);
  const fs::path repo = fs::path(hf_hub_cache_dir()) / ("models--" + org + "--" + name);
  const fs::path ref = repo / "refs" / "main";
  const std::string fetch = " (no such local path either; nothing is downloaded: fetch it with `huggingface-cli download " +
                            p + "`, or set HF_HOME)";
  if (!fs::is_directory(repo, ec)) throw Error(p, "", "not in the local Hugging Face cache: no " + repo.string() + fetch);
  if (!fs::is_regular_file(ref, ec))
    throw Error(p, "", "incomplete in the local Hugging Face cache: no " + ref.string() + fetch);
  std::string commit = read_text(ref.string());
  while (!commit.empty() && std::isspace(static_cast<unsigned char>(commit.back()))) commit.pop_back();
  if (commit.empty() || commit.find_first_of("/\\") != std::string::npos || commit == "." || commit == "..")
    throw Error(ref.string(), "", "expected a commit hash, got '" + commit + "'");
  const fs::path snap = repo / "snapshots" / commit;
  if (!fs::is_directory(snap, ec))
    throw Error(p, "", "incomplete in the local Hugging Face cache: refs/main names " + commit + ", but " + snap.string() +
                           " does not exist" + fetch);
  return snap.string();
}

ModelSource resolve_model_source(const std::string& given, const ModelSourceOptions& given_opt) {
  if (given.empty()) throw Error("", "checkpoint", "no checkpoint given", ErrorKind::Usage);
  const std::string path = resolve_local_model_path(given);
  ModelSourceOptions opt = given_opt;
  opt.model_folder = resolve_local_model_path(opt.model_folder);
  if (path != given) {
    ModelSource src = resolve_model_source(path, opt);
    src.notes.insert(src.notes.begin(), given + ": the local Hugging Face cache's snapshot " + path);
    return src;
  }
  if (!opt.model_folder.empty() && opt.model_folder != path) {
    ModelSourceOptions fo;
    fo.fallback_config = opt.fallback_config;
    const ModelSource folder = resolve_model_source(opt.model_folder, fo);
    ModelSourceOptions o = opt;
    o.model_folder.clear();
    if (o.moshi_weight.empty() && folder.run_ckpt) o.moshi_weight = folder.run_ckpt->files().front()->path();
    if (o.config.empty() && folder.has_config) {
      // Only when the run has no config of its own: resolved below through the fallback.
      o.fallback_config = folder.config;
    }
    ModelSource src = resolve_model_source(path, o);
    if (src.mimi_path.empty()) src.mimi_path = folder.mimi_path;
    if (src.tokenizer_path.empty()) src.tokenizer_path = folder.tokenizer_path;
    if (!src.has_config && folder.has_config) {
      src.has_config = true;
      src.config_files.insert(src.config_files.begin(), folder.config_files.begin(), folder.config_files.end());
    }
    return src;
  }
  ModelSource src;
  src.path = path;

  // --- 1. the checkpoint itself, and the folder that describes it ---------------------------
  std::string config_json;  // the model config.json
  std::string training_config_json;
  if (is_dir(path) && is_file((fs::path(path) / "config.json").string()) &&
      !is_file((fs::path(path) / "consolidated.safetensors").string()) &&
      !is_file((fs::path(path) / "lora.safetensors").string())) {
    // A model folder in moshi's CheckpointInfo layout: config.json names the files.
    const std::string cj = (fs::path(path) / "config.json").string();
    const json j = read_json(cj);
    if (j.contains("moshi_name") && j["moshi_name"].is_string()) {
      const std::string w = (fs::path(path) / j["moshi_name"].get<std::string>()).string();
      if (!is_file(w)) throw Error(cj, "moshi_name", "names '" + w + "', which does not exist");
      src.run_ckpt = std::make_shared<io::Checkpoint>(io::Checkpoint::open(w));
      src.writer = RunWriter::model_folder;
      if (j.contains("mimi_name") && j["mimi_name"].is_string())
        src.mimi_path = (fs::path(path) / j["mimi_name"].get<std::string>()).string();
      if (j.contains("tokenizer_name") && j["tokenizer_name"].is_string())
        src.tokenizer_path = (fs::path(path) / j["tokenizer_name"].get<std::string>()).string();
      config_json = cj;
    }
  }
  if (!src.run_ckpt && is_dir(path) && is_file((fs::path(path) / "model.safetensors").string())) {
    // An older moshi snapshot without moshi_name: the released file names (moshi loaders.py).
    src.writer = RunWriter::model_folder;
    for (const char* m : {"tokenizer-e351c8d8-checkpoint125.safetensors"})
      if (is_file((fs::path(path) / m).string())) src.mimi_path = (fs::path(path) / m).string();
    for (const char* t : {"tokenizer_spm_32k_3.model"})
      if (is_file((fs::path(path) / t).string())) src.tokenizer_path = (fs::path(path) / t).string();
  }
  if (!src.run_ckpt) {
    io::CheckpointOptions co;
    co.step = opt.step;
    src.run_ckpt = std::make_shared<io::Checkpoint>(io::Checkpoint::open(path, co));
  }
  const io::Checkpoint& run = *src.run_ckpt;
  if (config_json.empty() && run.has_config()) config_json = run.config_path();
  if (config_json.empty() && run.kind() == io::CheckpointKind::File) {
    // A file inside a run's consolidated/ folder, or a model file with its config.json beside it.
    const fs::path dir = fs::path(path).parent_path();
    if (is_file((dir / "config.json").string())) config_json = (dir / "config.json").string();
  }
  if (!config_json.empty()) {
    const fs::path tc = fs::path(config_json).parent_path() / "training_config.json";
    if (is_file(tc.string())) training_config_json = tc.string();
  }
  const std::string root = run.kind() == io::CheckpointKind::RunDir || run.kind() == io::CheckpointKind::ConsolidatedDir ||
                                   !config_json.empty()
                               ? find_run_root(config_json.empty() ? path : config_json)
                               : std::string();
  const std::string args_yaml = root.empty() ? std::string() : (fs::path(root) / "args.yaml").string();
  if (!root.empty() && src.writer == RunWriter::file) src.writer = RunWriter::moshi_finetune;
  YAML::Node args;
  if (!args_yaml.empty()) args = read_yaml(args_yaml);

  // --- 2. the LM configuration ------------------------------------------------------------
  json cfg_j;
  if (!opt.config.empty()) {
    src.config = LMConfig::from_json_file(opt.config);
    src.config_files.push_back(opt.config);
    src.has_config = true;
    cfg_j = read_json(opt.config);
  } else if (!config_json.empty()) {
    cfg_j = read_json(config_json);
    if (cfg_j.contains("dim")) {
      src.config = LMConfig::from_json(cfg_j.dump(), config_json);
      src.config_files.push_back(config_json);
      src.has_config = true;
    }
  }
  if (!src.has_config && args) {
    const std::string cp = yaml_scalar(args["moshi_paths"], "config_path");
    if (is_file(cp)) {
      src.config = LMConfig::from_json_file(cp);
      src.config_files.push_back(cp);
      src.has_config = true;
      cfg_j = read_json(cp);
      src.notes.push_back("LM config from args.yaml moshi_paths.config_path " + cp);
    }
  }
  if (!src.has_config) {
    src.config = opt.fallback_config ? *opt.fallback_config : LMConfig::moshiko_7b();
    src.notes.push_back(std::string("no config.json: the ") + (opt.fallback_config ? "built-in" : "moshiko 7B") +
                        " configuration is assumed");
  }
  if (cfg_j.is_object() && cfg_j.contains("ttt_config")) {
    src.writer = RunWriter::inplace_port;
    src.ttt_source = src.config_files.empty() ? "" : src.config_files.back() + " ttt_config";
  } else if (cfg_j.is_object() && cfg_j.contains("ttt")) {
    src.writer = RunWriter::ours;
    src.ttt_source = src.config_files.empty() ? "" : src.config_files.back() + " ttt";
  }

  // --- 3. TTT settings of the fork that wrote the run -------------------------------------
  const bool args_has_ttt = args && args["ttt"] && args["ttt"].IsMap();
  if (src.writer == RunWriter::inplace_port) {
    // The port's loader builds the model from config.json's ttt_config (train.py writes a subset
    // of its TTT arguments there); args.yaml shows what training used.
    if (args_has_ttt) {
      const TTTSettings trained = ttt_settings_from_node(args, args_yaml, TTTDialect::inplace_port);
      if (trained.inplace_delta_clip != src.config.ttt.inplace_delta_clip)
        src.notes.push_back("args.yaml ttt.delta_clip_fro_norm " + std::to_string(trained.inplace_delta_clip) +
                            " is not in config.json ttt_config: the port's loader (and we) use " +
                            std::to_string(src.config.ttt.inplace_delta_clip));
    }
  } else if (src.writer != RunWriter::ours && (!training_config_json.empty() || args_has_ttt)) {
    // The TTT fork: training_config.json (written with the checkpoint) over args.yaml.
    TTTSettings t;
    bool found = false;
    if (!training_config_json.empty()) {
      const json tc = read_json(training_config_json);
      if (tc.contains("ttt") && tc["ttt"].is_object()) {
        t = ttt_settings_from_yaml(json{{"ttt", tc["ttt"]}}.dump(), training_config_json, TTTDialect::ttt_fork);
        src.ttt_source = training_config_json + " ttt";
        found = true;
      }
    }
    if (!found && args_has_ttt) {
      t = ttt_settings_from_node(args, args_yaml, TTTDialect::ttt_fork);
      src.ttt_source = args_yaml + " ttt";
      found = true;
    }
    if (found) {
      src.writer = t.dialect == TTTDialect::inplace_port ? RunWriter::inplace_port : RunWriter::ttt_fork;
      src.config.ttt = t;
      src.config.validate(src.ttt_source);
    }
  }
  if (!src.ttt_source.empty()) src.notes.push_back("TTT settings from " + src.ttt_source);

  // --- 4. LoRA -------------------------------------------------------------------------------
  if (args && args["lora"] && args["lora"].IsMap()) {
    const YAML::Node l = args["lora"];
    try {
      if (l["enable"]) src.lora.enable = l["enable"].as<bool>();
      if (l["rank"]) src.lora.rank = l["rank"].as<int64_t>();
      if (l["scaling"]) src.lora.scaling = l["scaling"].as<double>();
      if (l["ft_embed"]) src.lora.ft_embed = l["ft_embed"].as<bool>();
    } catch (const YAML::Exception& e) {
      throw Error(args_yaml, "lora (line " + std::to_string(e.mark.line + 1) + ")", "bad value");
    }
    src.lora.source = args_yaml;
  } else if (cfg_j.is_object() && cfg_j.contains("lora")) {
    if (cfg_j["lora"].is_boolean()) src.lora.enable = cfg_j["lora"].get<bool>();
    if (cfg_j.contains("lora_rank") && cfg_j["lora_rank"].is_number()) src.lora.rank = cfg_j["lora_rank"].get<int64_t>();
    if (cfg_j.contains("lora_scaling") && cfg_j["lora_scaling"].is_number())
      src.lora.scaling = cfg_j["lora_scaling"].get<double>();
    src.lora.source = config_json;
  }

  // --- 5. run arguments of interest ---------------------------------------------------------
  if (args) {
    for (const char* k : {"save_adapters", "full_finetuning", "param_dtype", "duration_sec", "batch_size",
                          "max_steps", "seed", "run_dir", "text_padding_weight", "first_codebook_weight_multiplier"})
      if (args[k] && args[k].IsScalar()) src.run_args[k] = args[k].Scalar();
    src.moshi_paths_moshi = yaml_scalar(args["moshi_paths"], "moshi_path");
    if (src.mimi_path.empty()) src.mimi_path = yaml_scalar(args["moshi_paths"], "mimi_path");
    if (src.tokenizer_path.empty()) src.tokenizer_path = yaml_scalar(args["moshi_paths"], "tokenizer_path");
    src.config_files.push_back(args_yaml);
  }

  // --- 6. weights: base overlaid with the run (and --lora-weight) ---------------------------
  if (!opt.lora_weight.empty())
    src.lora_ckpt = std::make_shared<io::Checkpoint>(io::Checkpoint::open(opt.lora_weight));
  src.adapters_only = !has_lm_weights(run);
  if (src.adapters_only) {
    std::string base = opt.moshi_weight;
    if (base.empty() && is_file(src.moshi_paths_moshi)) base = src.moshi_paths_moshi;
    if (!base.empty()) {
      src.base_ckpt = std::make_shared<io::Checkpoint>(io::Checkpoint::open(base));
      src.base_path = base;
      src.notes.push_back("adapter-only checkpoint (" + std::to_string(run.size()) + " tensors" +
                          (src.run_args.count("save_adapters") ? ", save_adapters: " + src.run_args["save_adapters"] : "") +
                          "): base weights from " + base + (opt.moshi_weight.empty() ? " (args.yaml moshi_paths.moshi_path)" : ""));
    } else if (opt.require_weights) {
      std::string why = "it holds only adapter tensors (no text_emb / emb.*): pass the base Moshi weights with --moshi-weight";
      if (!src.moshi_paths_moshi.empty()) why += " (args.yaml moshi_paths.moshi_path '" + src.moshi_paths_moshi + "' does not exist here)";
      throw Error(path, "", why, ErrorKind::Usage);
    }
  } else if (!opt.moshi_weight.empty()) {
    src.notes.push_back("--moshi-weight ignored: the checkpoint holds the whole model");
  }

  std::set<int> hybrid;
  if (src.config.ttt.enable && src.config.ttt.variant == TTTVariant::fork_hybrid)
    for (int l : src.config.ttt.resolve_layers(src.config.num_layers)) hybrid.insert(l);
  auto model_key_of_base = [&](const std::string& k) {
    std::string rest;
    const int l = layer_of(k, &rest);
    if (l >= 0 && hybrid.count(l) && rest.rfind("original_layer.", 0) != 0 && rest.rfind("seq_modeling_block.", 0) != 0)
      return "transformer.layers." + std::to_string(l) + ".original_layer." + rest;
    return k;
  };
  if (src.base_ckpt)
    for (const auto& k : src.base_ckpt->keys()) src.weights[model_key_of_base(strip_wrappers(k))] = {src.base_ckpt.get(), k};
  int64_t overridden = 0;
  for (const auto& k : run.keys()) {
    const std::string mk = model_key_of_base(strip_wrappers(k));
    overridden += src.weights.count(mk);
    src.weights[mk] = {src.run_ckpt.get(), k};
  }
  if (src.lora_ckpt)
    for (const auto& k : src.lora_ckpt->keys()) src.weights[model_key_of_base(strip_wrappers(k))] = {src.lora_ckpt.get(), k};
  if (src.base_ckpt && overridden > 0)
    src.notes.push_back(std::to_string(overridden) + " base tensors replaced by the run's");

  // LoRA in effect: the settings say so and low-rank tensors are present (a merged save,
  // save_adapters: false, folds them into the weights).
  const bool lora_tensors = has_key_with(run, ".lora_A.") || (src.lora_ckpt && has_key_with(*src.lora_ckpt, ".lora_A."));
  if (src.lora.enable && !lora_tensors) {
    src.notes.push_back("LoRA (rank " + std::to_string(src.lora.rank) + ") was merged into the weights at save: no lora_A/lora_B tensors");
    src.lora.enable = false;
  } else if (!src.lora.enable && lora_tensors) {
    // The audit takes the rank from the shapes; a model cannot be built without the scaling.
    if (opt.require_weights)
      throw Error(path, "lora_A", "LoRA tensors present but no LoRA settings (args.yaml lora: or config.json lora) give their scaling");
    src.notes.push_back("LoRA tensors present but no LoRA settings: rank from the shapes, scaling unknown");
  }

  // --- 7. numerics --------------------------------------------------------------------------
  TTTSettings& t = src.config.ttt;
  const bool fork_run = src.writer == RunWriter::ttt_fork;
  const bool want_fork = opt.fork_numerics == ForkNumerics::fork || (opt.fork_numerics == ForkNumerics::automatic && fork_run);
  if (t.enable && t.variant == TTTVariant::fork_hybrid) {
    if (want_fork) {
      const char* why = fork_run ? "written by the TTT fork" : "--fork-numerics fork";
      t.multilayer_query = ttt::fork_multilayer_query(t.ttt_mlp_layers);
      t.streaming_state = ttt::fork_streaming_state(t.ttt_mlp_layers);
      if (t.multilayer_query == ttt::MultiLayerQuery::fork_updated)
        src.numerics.push_back(std::string("multi-layer TTT-MLP query pass: fork_updated (the fork's "
                                           "compute_multi_layer_mini_batch queries the already-updated W_k/b_k; ") + why + ")");
      if (t.streaming_state == ttt::StreamingState::fork_restart)
        src.numerics.push_back(std::string("streaming: fork_restart (the fork's ") +
                               (t.ttt_mlp_layers <= 1 ? "TTTLinear" : "2-layer TTTMLP") +
                               ".ttt never writes its state back: every frame restarts from W0 although "
                               "persistent_states is " + (t.persistent_states ? "true" : "false") + "; " + why + ")");
      if (t.streaming_state == ttt::StreamingState::fork_batch0)
        src.numerics.push_back(std::string("streaming: fork_batch0 (the fork's TTTMLPMultiLayer writes batch item 0's "
                                           "state into its weights after every frame: every item continues from it; ") +
                               why + ")");
    }
    if (src.numerics.empty())
      src.numerics.push_back(std::string("TTT numerics: dual-form query pass, persistent streaming state") +
                             (fork_run ? " (--fork-numerics ours)" : ""));
  }
  return src;
}

}  // namespace mtt::moshi
