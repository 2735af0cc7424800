#include "io/checkpoint.h"

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <iterator>
#include <set>
#include <system_error>

#include "core/atomic_file.h"
#include "core/error.h"
#include "io/strict_json.h"

namespace mtt::io {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

constexpr const char* kRunDirLayout =
    "expected a .safetensors file, a *.safetensors.index.json, a folder with model.safetensors, "
    "consolidated.safetensors/lora.safetensors, or a moshi-finetune run dir "
    "(checkpoints/checkpoint_NNNNNN/consolidated/)";

std::string read_text(const std::string& path);

json parse_json_file(const std::string& path) {
  std::string text = read_text(path);
  return parse_json_strict(text.data(), text.data() + text.size(), path);
}

std::string read_text(const std::string& path) {
  try {
    return read_file(path);
  } catch (const Error&) {
    throw;
  } catch (const std::exception& e) {
    throw Error(path, "", std::string("cannot read: ") + e.what());
  }
}

bool is_dir(const fs::path& p) {
  std::error_code ec;
  return fs::is_directory(p, ec);
}
bool is_file(const fs::path& p) {
  std::error_code ec;
  return fs::is_regular_file(p, ec);
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// "checkpoint_000300" -> 300; nullopt for anything else (or more than 18 digits).
std::optional<int64_t> step_of(const std::string& name) {
  const std::string prefix = "checkpoint_";
  if (name.rfind(prefix, 0) != 0) return std::nullopt;
  std::string digits = name.substr(prefix.size());
  if (digits.empty() || digits.size() > 18) return std::nullopt;
  for (char c : digits)
    if (c < '0' || c > '9') return std::nullopt;
  return std::stoll(digits);
}

// Where the checkpoint_NNNNNN folders of a run live: <run>/checkpoints, or `dir` itself when it
// is that checkpoints folder. Steps -> folder; two folders for one step is an error.
std::map<int64_t, fs::path> step_dirs(const fs::path& dir) {
  std::map<int64_t, fs::path> out;
  fs::path base = is_dir(dir / "checkpoints") ? dir / "checkpoints" : dir;
  std::error_code ec;
  for (fs::directory_iterator it(base, ec), end; !ec && it != end; it.increment(ec)) {
    if (!is_dir(it->path())) continue;
    auto s = step_of(it->path().filename().string());
    if (!s) continue;
    auto [pos, fresh] = out.emplace(*s, it->path());
    if (!fresh)
      throw Error(base.string(), it->path().filename().string(),
                  "two checkpoint folders for step " + std::to_string(*s) + " (also " +
                      pos->second.filename().string() + ")");
  }
  return out;
}

std::string human_bytes(uint64_t n) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(n);
  int u = 0;
  while (v >= 1024 && u < 4) {
    v /= 1024;
    ++u;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, u == 0 ? "%.0f %s" : "%.1f %s", v, units[u]);
  return buf;
}

}  // namespace

const char* checkpoint_kind_name(CheckpointKind k) {
  switch (k) {
    case CheckpointKind::File: return "file";
    case CheckpointKind::ShardIndex: return "sharded checkpoint";
    case CheckpointKind::ModelDir: return "model dir";
    case CheckpointKind::ConsolidatedDir: return "consolidated dir";
    case CheckpointKind::RunDir: return "run dir";
  }
  return "?";
}

std::vector<int64_t> Checkpoint::list_steps(const std::string& run_dir) {
  std::vector<int64_t> out;
  for (const auto& [s, p] : step_dirs(run_dir)) out.push_back(s);
  return out;
}

void Checkpoint::add_file(const std::string& file_path) {
  auto f = SafetensorsFile::open(file_path);
  const std::size_t idx = files_.size();
  for (const auto& t : f->tensors()) {
    auto [it, fresh] = index_.emplace(t.name, std::make_pair(idx, &t));
    if (!fresh)
      throw Error(file_path, t.name,
                  "tensor also in " + files_[it->second.first]->path() + ": key duplicated across checkpoint files");
    total_bytes_ += t.nbytes();
  }
  for (const auto& [k, v] : f->metadata()) metadata_.emplace(k, v);
  files_.push_back(std::move(f));
}

void Checkpoint::finish() {
  keys_.clear();
  keys_.reserve(index_.size());
  for (const auto& [k, v] : index_) keys_.push_back(k);  // std::map: already sorted
}

void Checkpoint::load_config(const std::string& path) {
  config_ = parse_json_file(path);
  if (!config_.is_object()) throw Error(path, "", "config.json is not a JSON object");
  config_path_ = path;
}

Checkpoint Checkpoint::open(const std::string& path, const CheckpointOptions& options) {
  Checkpoint c;
  c.path_ = path;
  fs::path p = fs::path(path).lexically_normal();
  if (!p.has_filename() && p.has_parent_path()) p = p.parent_path();  // "run/" -> "run"
  std::error_code ec;
  auto st = fs::status(p, ec);
  if (ec || !fs::exists(st)) throw Error(path, "", "no such file or directory");

  // A sharded set: the index maps every key to its shard; the shards must agree with it.
  auto open_index = [&c](const fs::path& index_path) {
    const std::string ip = index_path.string();
    json idx = parse_json_file(ip);
    if (!idx.is_object()) throw Error(ip, "", "index is not a JSON object");
    auto wm = idx.find("weight_map");
    if (wm == idx.end() || !wm->is_object()) throw Error(ip, "weight_map", "missing or not a JSON object");
    if (wm->empty()) throw Error(ip, "weight_map", "empty: the index names no tensors");
    std::map<std::string, std::vector<std::string>> shard_keys;  // shard file -> keys, in order
    for (auto it = wm->begin(); it != wm->end(); ++it) {
      if (!it->is_string() || it->get_ref<const std::string&>().empty())
        throw Error(ip, it.key(), "weight_map value is not a shard file name");
      shard_keys[it->get<std::string>()].push_back(it.key());
    }
    const fs::path dir = index_path.parent_path();
    for (const auto& [shard, keys] : shard_keys) {
      fs::path sp = dir / shard;
      if (!is_file(sp))
        throw Error(ip, shard,
                    "shard named for " + std::to_string(keys.size()) + " tensors (e.g. \"" + keys.front() +
                        "\") is missing: " + sp.string());
      c.add_file(sp.string());
    }
    for (auto it = wm->begin(); it != wm->end(); ++it) {
      auto f = c.index_.find(it.key());
      const std::string want = (dir / it->get<std::string>()).string();
      if (f == c.index_.end()) throw Error(want, it.key(), "tensor named by " + ip + " is not in this shard");
      if (c.files_[f->second.first]->path() != want)
        throw Error(ip, it.key(),
                    "weight_map names shard " + it->get<std::string>() + " but the tensor is in " +
                        c.files_[f->second.first]->path());
    }
    if (auto m = idx.find("metadata"); m != idx.end() && m->is_object())
      for (auto it = m->begin(); it != m->end(); ++it)
        c.metadata_.emplace(it.key(), it->is_string() ? it->get<std::string>() : it->dump());
  };

  // consolidated/ of a moshi-finetune checkpoint (or any folder laid out like it).
  auto open_consolidated = [&c, &options](const fs::path& dir) {
    const fs::path full = dir / "consolidated.safetensors", lora = dir / "lora.safetensors";
    bool has_full = is_file(full), has_lora = is_file(lora);
    if (!has_full && !has_lora)
      throw Error(dir.string(), "", "no consolidated.safetensors or lora.safetensors (incomplete save?)");
    bool any = false;
    if (has_full && options.consolidated) {
      c.add_file(full.string());
      any = true;
    }
    if (has_lora && options.lora) {
      c.add_file(lora.string());
      any = true;
    }
    if (!any)
      throw Error(dir.string(), "",
                  std::string("the selected part is absent (has ") + (has_full ? "consolidated.safetensors" : "") +
                      (has_full && has_lora ? ", " : "") + (has_lora ? "lora.safetensors" : "") + ")");
    for (const fs::path& cfg : {dir / "config.json", dir.parent_path() / "config.json"})
      if (is_file(cfg)) {
        c.load_config(cfg.string());
        break;
      }
  };

  if (fs::is_regular_file(st)) {
    if (ends_with(p.filename().string(), ".index.json")) {
      c.kind_ = CheckpointKind::ShardIndex;
      open_index(p);
    } else {
      c.kind_ = CheckpointKind::File;
      c.add_file(path);
    }
  } else if (fs::is_directory(st)) {
    if (is_file(p / "model.safetensors") || is_file(p / "model.safetensors.index.json")) {
      c.kind_ = CheckpointKind::ModelDir;
      if (is_file(p / "model.safetensors"))
        c.add_file((p / "model.safetensors").string());
      else
        open_index(p / "model.safetensors.index.json");
      if (is_file(p / "config.json")) c.load_config((p / "config.json").string());
    } else if (is_file(p / "consolidated.safetensors") || is_file(p / "lora.safetensors")) {
      c.kind_ = CheckpointKind::ConsolidatedDir;
      open_consolidated(p);
    } else if (is_dir(p / "consolidated")) {  // one checkpoint_NNNNNN folder
      c.kind_ = CheckpointKind::RunDir;
      c.step_ = step_of(fs::absolute(p).lexically_normal().filename().string());
      if (options.step && c.step_ && *options.step != *c.step_)
        throw Error(path, "", "is the checkpoint of step " + std::to_string(*c.step_) + ", not the requested " +
                                  std::to_string(*options.step));
      open_consolidated(p / "consolidated");
    } else {
      auto steps = step_dirs(p);
      if (steps.empty()) {
        if (is_dir(p / "checkpoints"))
          throw Error(path, "", "run dir without checkpoints: checkpoints/ holds no checkpoint_NNNNNN folder");
        throw Error(path, "", std::string("no checkpoint found: ") + kRunDirLayout);
      }
      c.kind_ = CheckpointKind::RunDir;
      for (const auto& [s, d] : steps) c.steps_.push_back(s);
      auto chosen = std::prev(steps.end());
      if (options.step) {
        chosen = steps.find(*options.step);
        if (chosen == steps.end()) {
          std::string avail;
          for (auto s : c.steps_) avail += (avail.empty() ? "" : ", ") + std::to_string(s);
          throw Error(path, "", "no checkpoint for step " + std::to_string(*options.step) + " (available: " + avail + ")");
        }
      }
      c.step_ = chosen->first;
      if (!is_dir(chosen->second / "consolidated"))
        throw Error(chosen->second.string(), "", "checkpoint folder has no consolidated/ (incomplete save?)");
      open_consolidated(chosen->second / "consolidated");
    }
  } else {
    throw Error(path, "", "neither a file nor a directory");
  }
  c.finish();
  return c;
}

std::optional<TensorView> Checkpoint::find(const std::string& key) const {
  auto it = index_.find(key);
  if (it == index_.end()) return std::nullopt;
  return files_[it->second.first]->view(*it->second.second);
}

TensorView Checkpoint::get(const std::string& key) const {
  if (auto v = find(key)) return *v;
  // A near miss is usually a module prefix ("model.", "_orig_mod.", a wrapper's name):
  // name a key that equals ours up to such a dotted prefix.
  std::string hint;
  for (const auto& k : keys_) {
    if (ends_with(k, "." + key) || ends_with(key, "." + k)) {
      hint = " (did you mean \"" + k + "\"?)";
      break;
    }
  }
  throw Error(path_, key,
              "no such tensor in the checkpoint (" + std::to_string(keys_.size()) + " tensors in " +
                  std::to_string(files_.size()) + (files_.size() == 1 ? " file" : " files") + ")" + hint);
}

const std::string& Checkpoint::file_of(const std::string& key) const {
  auto it = index_.find(key);
  if (it == index_.end()) get(key);  // throws the descriptive error
  return files_[it->second.first]->path();
}

std::string Checkpoint::describe() const {
  std::string s = std::string(checkpoint_kind_name(kind_)) + " " + path_;
  if (step_) {
    s += " step " + std::to_string(*step_);
    if (steps_.size() > 1) {
      s += " (of";
      for (std::size_t i = 0; i < steps_.size(); ++i) s += (i ? ", " : " ") + std::to_string(steps_[i]);
      s += ")";
    }
  }
  s += ":";
  if (files_.size() <= 3) {
    for (std::size_t i = 0; i < files_.size(); ++i)
      s += (i ? " + " : " ") + fs::path(files_[i]->path()).filename().string();
  } else {
    s += " " + std::to_string(files_.size()) + " shards";
  }
  s += ", " + std::to_string(keys_.size()) + " tensors, " + human_bytes(total_bytes_);
  if (has_config()) s += ", config.json";
  return s;
}

}  // namespace mtt::io
