#pragma once
// A golden reference file in the shared/golden format (golden README "File format"): the tensors
// (owning copies, any dtype nn::load_tensors reads) and the string metadata, with the lookups the
// family runners use to take every shape and hyper-parameter from the file itself.
#include <ATen/ATen.h>

#include <map>
#include <optional>
#include <string>
#include <vector>

namespace mtt::golden {

// "key=value" or "'key': value" / "\"key\": value" inside a metadata string ("B=2 H=2 b=8",
// "TTTConfig(model_dim=32, ...)", "ttt_config={'chunk_size': 4, ...}"). The key must start at a
// word boundary; the value runs to the next ',', ' ', ')', '}' or ';'. Quotes around it are dropped.
std::optional<std::string> find_kv(const std::string& text, const std::string& key);
// The number a string starts with ("1e-8 (VDIT ...)" -> 1e-8); nullopt when it starts with none.
std::optional<double> leading_number(const std::string& text);

class GoldenFile {
 public:
  // Reads the whole file; throws mtt::Error(path, key, reason) (kind Input) when unreadable.
  static GoldenFile open(const std::string& path);

  const std::string& path() const { return path_; }
  const std::map<std::string, std::string>& metadata() const { return meta_; }
  const std::map<std::string, at::Tensor>& tensors() const { return tensors_; }
  bool has(const std::string& name) const { return tensors_.count(name) != 0; }
  // Throws mtt::Error(path, name, "tensor missing from golden file").
  const at::Tensor& tensor(const std::string& name) const;
  // Metadata value, or `fallback` when absent.
  std::string meta(const std::string& key, const std::string& fallback = "") const;
  bool has_meta(const std::string& key) const { return meta_.count(key) != 0; }
  // The case name: metadata `case`, else the file name without its extension.
  std::string case_name() const;

  // key=value lookup over the metadata strings that describe how the reference was called, in
  // this order: the given keys (default: config, call, shapes).
  std::optional<std::string> setting(const std::string& key,
                                     const std::vector<std::string>& where = {"config", "call", "shapes"}) const;
  // setting() parsed as a number; throws mtt::Error(path, key) when present but not a number.
  std::optional<double> number(const std::string& key,
                               const std::vector<std::string>& where = {"config", "call", "shapes"}) const;
  // A whole metadata value parsed as a leading number ("1e-8 (VDIT ...)"); nullopt when absent.
  std::optional<double> meta_number(const std::string& key) const;
  // The size of dimension `dim` of tensor `name` (negative dims count from the end).
  int64_t dim(const std::string& name, int64_t dim) const;

 private:
  std::string path_;
  std::map<std::string, std::string> meta_;
  std::map<std::string, at::Tensor> tensors_;
};

}  // namespace mtt::golden
