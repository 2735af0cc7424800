#pragma once
// JSON for untrusted files (safetensors headers, shard indexes, config.json): nlohmann's parser
// in SAX mode, plus what it does not check. nlohmann::json keeps the last of duplicate keys
// silently, its parse callback API costs O(n^2) on wide objects (it rescans the parent object
// at every object end: 100 ms for a 2000-tensor header), and its lexer stops at a NUL byte.
#include <cstddef>
#include <nlohmann/json.hpp>
#include <string>

namespace mtt::io {

// Parses [begin, end) as one JSON value (only whitespace may follow it) in linear time.
// Throws mtt::Error(file, key, reason) for: invalid JSON or a NUL byte ("<subject> is not valid
// JSON: ..."), a duplicate key in any object (key = the duplicate at the top level, else the
// top-level key enclosing it), nesting deeper than max_depth. `subject` names the text in
// messages ("header"); empty for a whole file.
nlohmann::json parse_json_strict(const char* begin, const char* end, const std::string& file,
                                 const std::string& subject = "", int max_depth = 64);
nlohmann::json parse_json_strict(const std::string& text, const std::string& file, const std::string& subject = "",
                                 int max_depth = 64);
// A whole JSON file (Error naming it when it is missing, a directory or unreadable).
// An exception of nlohmann::json as a message: its "[json.exception.*]" tag dropped and bytes that
// are not UTF-8 (the excerpt of a bad input) shown as '?'.
std::string json_error_text(const std::exception& e);

nlohmann::json read_json_file_strict(const std::string& path, int max_depth = 64);

}  // namespace mtt::io
