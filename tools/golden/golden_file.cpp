#include "golden/golden_file.h"

#include <cctype>
#include <cstdlib>
#include <filesystem>

#include "core/error.h"
#include "io/safetensors.h"
#include "nn/tensor_io.h"

namespace mtt::golden {

namespace {

bool word_char(char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '.'; }

std::string trim_value(std::string v) {
  while (!v.empty() && std::isspace(static_cast<unsigned char>(v.front()))) v.erase(v.begin());
  while (!v.empty() && std::isspace(static_cast<unsigned char>(v.back()))) v.pop_back();
  if (v.size() >= 2 && (v.front() == '\'' || v.front() == '"') && v.back() == v.front()) v = v.substr(1, v.size() - 2);
  return v;
}

}  // namespace

std::optional<std::string> find_kv(const std::string& text, const std::string& key) {
  // Forms: key=value | 'key': value | "key": value
  const std::string forms[] = {key + "=", "'" + key + "':", "\"" + key + "\":"};
  for (const std::string& f : forms) {
    size_t pos = 0;
    while ((pos = text.find(f, pos)) != std::string::npos) {
      const bool quoted = f[0] == '\'' || f[0] == '"';
      if (!quoted && pos > 0 && word_char(text[pos - 1])) {
        pos += f.size();
        continue;
      }
      size_t b = pos + f.size();
      while (b < text.size() && text[b] == ' ') ++b;
      size_t e = b;
      if (e < text.size() && (text[e] == '\'' || text[e] == '"')) {
        const char q = text[e];
        e = text.find(q, e + 1);
        e = e == std::string::npos ? text.size() : e + 1;
      } else {
        while (e < text.size() && text[e] != ',' && text[e] != ' ' && text[e] != ')' && text[e] != '}' &&
               text[e] != ';')
          ++e;
      }
      return trim_value(text.substr(b, e - b));
    }
  }
  return std::nullopt;
}

std::optional<double> leading_number(const std::string& text) {
  const char* p = text.c_str();
  while (*p && std::isspace(static_cast<unsigned char>(*p))) ++p;
  char* end = nullptr;
  const double v = std::strtod(p, &end);
  if (end == p) return std::nullopt;
  return v;
}

GoldenFile GoldenFile::open(const std::string& path) {
  GoldenFile g;
  g.path_ = path;
  if (!std::filesystem::is_regular_file(path)) throw Error(path, "", "no such golden file");
  auto f = io::SafetensorsFile::open(path);
  g.meta_ = f->metadata();
  g.tensors_ = nn::load_tensors(path);
  return g;
}

const at::Tensor& GoldenFile::tensor(const std::string& name) const {
  auto it = tensors_.find(name);
  if (it == tensors_.end()) throw Error(path_, name, "tensor missing from golden file");
  return it->second;
}

std::string GoldenFile::meta(const std::string& key, const std::string& fallback) const {
  auto it = meta_.find(key);
  return it == meta_.end() ? fallback : it->second;
}

std::string GoldenFile::case_name() const {
  const std::string c = meta("case");
  return c.empty() ? std::filesystem::path(path_).stem().string() : c;
}

std::optional<std::string> GoldenFile::setting(const std::string& key, const std::vector<std::string>& where) const {
  for (const std::string& m : where) {
    auto it = meta_.find(m);
    if (it == meta_.end()) continue;
    if (auto v = find_kv(it->second, key)) return v;
  }
  return std::nullopt;
}

std::optional<double> GoldenFile::number(const std::string& key, const std::vector<std::string>& where) const {
  auto v = setting(key, where);
  if (!v) return std::nullopt;
  auto n = leading_number(*v);
  if (!n) throw Error(path_, key, "metadata value '" + *v + "' is not a number");
  return n;
}

std::optional<double> GoldenFile::meta_number(const std::string& key) const {
  auto it = meta_.find(key);
  if (it == meta_.end()) return std::nullopt;
  auto n = leading_number(it->second);
  if (!n) throw Error(path_, key, "metadata value '" + it->second + "' is not a number");
  return n;
}

int64_t GoldenFile::dim(const std::string& name, int64_t d) const {
  const at::Tensor& t = tensor(name);
  if (d < -t.dim() || d >= t.dim())
    throw Error(path_, name, "tensor has " + std::to_string(t.dim()) + " dimensions, dimension " + std::to_string(d) + " expected");
  return t.size(d);
}

}  // namespace mtt::golden
