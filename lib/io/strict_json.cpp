#include "io/strict_json.h"

#include <cstring>
#include <filesystem>
#include <set>
#include <string_view>
#include <vector>

#include "core/atomic_file.h"
#include "core/error.h"
#include "core/utf8.h"

namespace mtt::io {

namespace {

using json = nlohmann::json;

// Builds the DOM through nlohmann's own SAX DOM builder and adds the checks; returning false
// from an event stops the parse (sax_parse then returns false).
class StrictSax {
 public:
  StrictSax(json& root, int max_depth) : dom_(root, /*allow_exceptions=*/false), max_depth_(max_depth) {}

  bool null() { return dom_.null(); }
  bool boolean(bool v) { return dom_.boolean(v); }
  bool number_integer(json::number_integer_t v) { return dom_.number_integer(v); }
  bool number_unsigned(json::number_unsigned_t v) { return dom_.number_unsigned(v); }
  bool number_float(json::number_float_t v, const json::string_t& s) { return dom_.number_float(v, s); }
  bool string(json::string_t& v) { return dom_.string(v); }
  bool binary(json::binary_t& v) { return dom_.binary(v); }
  bool start_object(std::size_t n) {
    if (!enter()) return false;
    keys_.emplace_back();
    return dom_.start_object(n);
  }
  bool key(json::string_t& k) {
    if (keys_.size() == 1) top_key_ = k;
    if (!keys_.back().insert(k).second) {
      has_duplicate_ = true;
      duplicate_ = k;
      nested_duplicate_ = keys_.size() > 1;
      return false;
    }
    return dom_.key(k);
  }
  bool end_object() {
    keys_.pop_back();
    --depth_;
    return dom_.end_object();
  }
  bool start_array(std::size_t n) { return enter() && dom_.start_array(n); }
  bool end_array() {
    --depth_;
    return dom_.end_array();
  }
  bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception& e) {
    syntax_error_ = json_error_text(e);
    return false;
  }

  std::string syntax_error_, duplicate_, top_key_;
  bool has_duplicate_ = false, nested_duplicate_ = false, too_deep_ = false;

 private:
  bool enter() {
    if (++depth_ > max_depth_) {
      too_deep_ = true;
      return false;
    }
    return true;
  }
  nlohmann::detail::json_sax_dom_parser<json> dom_;
  std::vector<std::set<std::string, std::less<>>> keys_;
  int depth_ = 0;
  const int max_depth_;
};

}  // namespace

std::string json_error_text(const std::exception& e) {
  std::string w = e.what();
  // "[json.exception.parse_error.101] parse error at line 1, column 5: ..." -> "parse error at ..."
  if (w.rfind("[json.exception.", 0) == 0)
    if (const auto close = w.find("] "); close != std::string::npos) w = w.substr(close + 2);
  // The excerpt of what was read may hold the very bytes that are not UTF-8: shown as '?'.
  std::size_t bad = 0;
  while (!valid_utf8(w, &bad) && bad < w.size()) w[bad] = '?';
  return w;
}

json parse_json_strict(const char* begin, const char* end, const std::string& file, const std::string& subject,
                       int max_depth) {
  const std::string is = subject.empty() ? "" : subject + " is ";
  if (const void* z = std::memchr(begin, 0, static_cast<std::size_t>(end - begin)))
    throw Error(file, "", is + "not valid JSON: NUL byte at offset " +
                              std::to_string(static_cast<const char*>(z) - begin));
  json root;
  StrictSax sax(root, max_depth);
  bool ok = json::sax_parse(begin, end, &sax, json::input_format_t::json, /*strict=*/true, /*ignore_comments=*/false);
  if (ok) return root;
  if (sax.has_duplicate_) {
    const std::string& d = sax.duplicate_;
    if (!sax.nested_duplicate_)
      throw Error(file, d, "duplicate key \"" + d + "\" in " + (subject.empty() ? "JSON" : subject));
    throw Error(file, sax.top_key_,
                "duplicate key \"" + d + "\" in " + (subject == "header" ? "the entry" : "the object under it"));
  }
  if (sax.too_deep_)
    throw Error(file, "", is + "not valid JSON here: nested deeper than " + std::to_string(max_depth) + " levels");
  throw Error(file, "", is + "not valid JSON: " + sax.syntax_error_);
}

json parse_json_strict(const std::string& text, const std::string& file, const std::string& subject, int max_depth) {
  return parse_json_strict(text.data(), text.data() + text.size(), file, subject, max_depth);
}

json read_json_file_strict(const std::string& path, int max_depth) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) throw Error(path, "", "is a directory, expected a JSON file");
  if (!std::filesystem::exists(path, ec)) throw Error(path, "", "no such file");
  return parse_json_strict(read_file(path), path, "", max_depth);
}

}  // namespace mtt::io
