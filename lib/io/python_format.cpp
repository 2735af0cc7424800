#include "io/python_format.h"

#include <charconv>
#include <cmath>
#include <cstdio>
#include <regex>
#include <vector>

#include "core/error.h"

namespace mtt::io {

using nlohmann::json;
using nlohmann::ordered_json;

std::string python_float_repr(double v) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  if (v == 0) return std::signbit(v) ? "-0.0" : "0.0";
  // Shortest round-trip digits (what Python's repr picks too), then Python's layout rule
  // (float_repr_style 'short', format code 'r'): exponent form when decpt <= -4 or decpt > 16.
  char buf[64];
  const auto r = std::to_chars(buf, buf + sizeof buf, v, std::chars_format::scientific);
  std::string s(buf, r.ptr);
  const bool neg = s[0] == '-';
  if (neg) s.erase(0, 1);
  const auto e = s.find('e');
  std::string digits;
  for (char c : s.substr(0, e))
    if (c != '.') digits += c;
  while (digits.size() > 1 && digits.back() == '0') digits.pop_back();
  const int decpt = std::stoi(s.substr(e + 1)) + 1;
  const int nd = static_cast<int>(digits.size());
  std::string out;
  if (decpt <= -4 || decpt > 16) {
    out = digits.substr(0, 1);
    if (nd > 1) out += "." + digits.substr(1);
    const int x = decpt - 1;
    char eb[16];
    std::snprintf(eb, sizeof eb, "e%c%02d", x < 0 ? '-' : '+', std::abs(x));
    out += eb;
  } else if (decpt <= 0) {
    out = "0." + std::string(static_cast<size_t>(-decpt), '0') + digits;
  } else if (decpt >= nd) {
    out = digits + std::string(static_cast<size_t>(decpt - nd), '0') + ".0";
  } else {
    out = digits.substr(0, static_cast<size_t>(decpt)) + "." + digits.substr(static_cast<size_t>(decpt));
  }
  return neg ? "-" + out : out;
}

namespace {

// UTF-8 -> code points (invalid bytes become U+FFFD, as a lenient decoder would).
std::u32string decode_utf8(const std::string& s) {
  std::u32string out;
  for (size_t i = 0; i < s.size();) {
    const auto c = static_cast<unsigned char>(s[i]);
    int n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    if (n == 0 || i + n > s.size()) {
      out.push_back(0xFFFD);
      ++i;
      continue;
    }
    char32_t cp = n == 1 ? c : n == 2 ? (c & 0x1F) : n == 3 ? (c & 0x0F) : (c & 0x07);
    bool ok = true;
    for (int k = 1; k < n; ++k) {
      const auto cc = static_cast<unsigned char>(s[i + k]);
      if ((cc >> 6) != 2) ok = false;
      cp = (cp << 6) | (cc & 0x3F);
    }
    out.push_back(ok ? cp : 0xFFFD);
    i += ok ? n : 1;
  }
  return out;
}

void append_utf8(std::string& out, char32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

std::string encode_utf8(const std::u32string& s) {
  std::string out;
  for (char32_t c : s) append_utf8(out, c);
  return out;
}

void json_string(std::string& out, const std::string& s) {
  out += '"';
  auto u16 = [&](unsigned v) {
    char b[16];
    std::snprintf(b, sizeof b, "\\u%04x", v & 0xFFFFu);
    out += b;
  };
  for (char32_t c : decode_utf8(s)) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      default:
        if (c < 0x20) {
          u16(static_cast<unsigned>(c));
        } else if (c <= 0x7F) {
          out += static_cast<char>(c);
        } else if (c < 0x10000) {
          u16(static_cast<unsigned>(c));
        } else {  // ensure_ascii: a surrogate pair
          const unsigned v = static_cast<unsigned>(c) - 0x10000;
          u16(0xD800 + (v >> 10));
          u16(0xDC00 + (v & 0x3FF));
        }
    }
  }
  out += '"';
}

void json_dumps(std::string& out, const ordered_json& v) {
  switch (v.type()) {
    case ordered_json::value_t::null: out += "null"; break;
    case ordered_json::value_t::boolean: out += v.get<bool>() ? "true" : "false"; break;
    case ordered_json::value_t::number_integer: out += std::to_string(v.get<int64_t>()); break;
    case ordered_json::value_t::number_unsigned: out += std::to_string(v.get<uint64_t>()); break;
    case ordered_json::value_t::number_float: {
      const double d = v.get<double>();
      if (std::isnan(d)) out += "NaN";
      else if (std::isinf(d)) out += d > 0 ? "Infinity" : "-Infinity";
      else out += python_float_repr(d);
      break;
    }
    case ordered_json::value_t::string: json_string(out, v.get_ref<const std::string&>()); break;
    case ordered_json::value_t::array: {
      out += '[';
      bool first = true;
      for (const auto& e : v) {
        if (!first) out += ", ";
        first = false;
        json_dumps(out, e);
      }
      out += ']';
      break;
    }
    case ordered_json::value_t::object: {
      out += '{';
      bool first = true;
      for (auto it = v.begin(); it != v.end(); ++it) {
        if (!first) out += ", ";
        first = false;
        json_string(out, it.key());
        out += ": ";
        json_dumps(out, it.value());
      }
      out += '}';
      break;
    }
    default: throw Error("", "", "python_json_dumps: unsupported JSON value (binary)", ErrorKind::Internal);
  }
}

// ---------------------------------------------------------------------------------------------
// PyYAML 6's emitter (yaml/emitter.py) for the events yaml.dump produces from dicts, lists and
// scalars, ported state for state: the column / indent / whitespace / indention bookkeeping decides
// where scalars wrap at width 80, and analyze_scalar + the implicit resolvers decide plain, '...'
// or "..." exactly as there.

bool is_break(char32_t c) { return c == '\n' || c == 0x85 || c == 0x2028 || c == 0x2029; }
bool is_space_or_end(char32_t c) { return c == 0 || c == ' ' || c == '\t' || c == '\r' || is_break(c); }

struct Analysis {
  bool empty = false, multiline = false;
  bool allow_flow_plain = true, allow_block_plain = true, allow_single_quoted = true, allow_double_quoted = true;
};

Analysis analyze_scalar(const std::u32string& s) {
  Analysis a;
  if (s.empty()) {
    a.empty = true;
    a.allow_flow_plain = false;
    return a;
  }
  bool block_ind = false, flow_ind = false, line_breaks = false, special = false;
  bool leading_space = false, leading_break = false, trailing_space = false, trailing_break = false;
  bool break_space = false, space_break = false;
  const std::u32string head = s.substr(0, 3);
  if (head == U"---" || head == U"...") block_ind = flow_ind = true;
  bool preceded_by_ws = true;
  bool followed_by_ws = s.size() == 1 || is_space_or_end(s[1]);
  bool prev_space = false, prev_break = false;
  const std::u32string lead_special = U"#,[]{}&*!|>'\"%@`";
  for (size_t i = 0; i < s.size(); ++i) {
    const char32_t ch = s[i];
    if (i == 0) {
      if (lead_special.find(ch) != std::u32string::npos) flow_ind = block_ind = true;
      if (ch == '?' || ch == ':') {
        flow_ind = true;
        if (followed_by_ws) block_ind = true;
      }
      if (ch == '-' && followed_by_ws) flow_ind = block_ind = true;
    } else {
      if (ch == ',' || ch == '?' || ch == '[' || ch == ']' || ch == '{' || ch == '}') flow_ind = true;
      if (ch == ':') {
        flow_ind = true;
        if (followed_by_ws) block_ind = true;
      }
      if (ch == '#' && preceded_by_ws) flow_ind = block_ind = true;
    }
    if (is_break(ch)) line_breaks = true;
    if (!(ch == '\n' || (ch >= 0x20 && ch <= 0x7E))) special = true;  // allow_unicode is False
    if (ch == ' ') {
      if (i == 0) leading_space = true;
      if (i == s.size() - 1) trailing_space = true;
      if (prev_break) break_space = true;
      prev_space = true;
      prev_break = false;
    } else if (is_break(ch)) {
      if (i == 0) leading_break = true;
      if (i == s.size() - 1) trailing_break = true;
      if (prev_space) space_break = true;
      prev_space = false;
      prev_break = true;
    } else {
      prev_space = prev_break = false;
    }
    preceded_by_ws = is_space_or_end(ch);
    followed_by_ws = i + 2 >= s.size() || is_space_or_end(s[i + 2]);
  }
  if (leading_space || leading_break || trailing_space || trailing_break) a.allow_flow_plain = a.allow_block_plain = false;
  if (break_space) a.allow_flow_plain = a.allow_block_plain = a.allow_single_quoted = false;
  if (space_break || special) a.allow_flow_plain = a.allow_block_plain = a.allow_single_quoted = false;
  if (line_breaks) a.allow_flow_plain = a.allow_block_plain = false;
  if (flow_ind) a.allow_flow_plain = false;
  if (block_ind) a.allow_block_plain = false;
  a.multiline = line_breaks;
  return a;
}

// yaml.resolver.Resolver's implicit resolvers (YAML 1.1): the tag a plain scalar reads back as.
// Python's `$` also matches before one trailing "\n"; such scalars are multiline and never plain.
bool plain_reads_as_string(const std::string& v) {
  struct R {
    std::string first;
    std::regex re;
  };
  static const std::vector<R> rs = [] {
    std::vector<R> r;
    auto add = [&](std::string first, const char* re) { r.push_back({std::move(first), std::regex(re)}); };
    add("yYnNtTfFoO", "^(?:yes|Yes|YES|no|No|NO|true|True|TRUE|false|False|FALSE|on|On|ON|off|Off|OFF)$");
    add("-+0123456789.",
        "^(?:[-+]?(?:[0-9][0-9_]*)\\.[0-9_]*(?:[eE][-+][0-9]+)?|\\.[0-9][0-9_]*(?:[eE][-+][0-9]+)?"
        "|[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\\.[0-9_]*|[-+]?\\.(?:inf|Inf|INF)|\\.(?:nan|NaN|NAN))$");
    add("-+0123456789",
        "^(?:[-+]?0b[0-1_]+|[-+]?0[0-7_]+|[-+]?(?:0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+"
        "|[-+]?[1-9][0-9_]*(?::[0-5]?[0-9])+)$");
    add("<", "^(?:<<)$");
    add("~nN", "^(?:~|null|Null|NULL|)$");
    add("0123456789",
        "^(?:[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]|[0-9][0-9][0-9][0-9]-[0-9][0-9]?-[0-9][0-9]?"
        "(?:[Tt]|[ \\t]+)[0-9][0-9]?:[0-9][0-9]:[0-9][0-9](?:\\.[0-9]*)?(?:[ \\t]*(?:Z|[-+][0-9][0-9]?(?::[0-9][0-9])?))?)$");
    add("=", "^(?:=)$");
    add("!&*", "^(?:!|&|\\*)$");
    return r;
  }();
  if (v.empty()) return false;  // the null resolver's '' entry
  for (const auto& r : rs)
    if (r.first.find(v[0]) != std::string::npos && std::regex_match(v, r.re)) return false;
  return true;
}

class YamlEmitter {
 public:
  std::string out;

  void document(const json& root) {
    node(root, /*root=*/true, false, false, false);
    write_indent();  // document end
  }

 private:
  int column_ = 0;
  int indent_ = -1;  // None
  std::vector<int> indents_;
  bool whitespace_ = true, indention_ = true;
  int flow_level_ = 0;
  bool simple_key_ = false;
  static constexpr int kBestIndent = 2, kBestWidth = 80;

  void increase_indent(bool flow, bool indentless = false) {
    indents_.push_back(indent_);
    if (indent_ < 0) indent_ = flow ? kBestIndent : 0;
    else if (!indentless) indent_ += kBestIndent;
  }
  void pop_indent() {
    indent_ = indents_.back();
    indents_.pop_back();
  }
  void write(const std::u32string& s) {
    column_ += static_cast<int>(s.size());
    out += encode_utf8(s);
  }
  void write_indicator(const std::u32string& ind, bool need_ws, bool ws = false, bool indention = false) {
    std::u32string data = (whitespace_ || !need_ws) ? ind : U" " + ind;
    whitespace_ = ws;
    indention_ = indention_ && indention;
    write(data);
  }
  void write_line_break() {
    whitespace_ = indention_ = true;
    column_ = 0;
    out += '\n';
  }
  void write_indent() {
    const int indent = indent_ < 0 ? 0 : indent_;
    if (!indention_ || column_ > indent || (column_ == indent && !whitespace_)) write_line_break();
    if (column_ < indent) {
      whitespace_ = true;
      write(std::u32string(static_cast<size_t>(indent - column_), U' '));
    }
  }

  void node(const json& v, bool root, bool sequence, bool mapping, bool simple_key) {
    simple_key_ = simple_key;
    if (v.is_array()) {
      if (v.empty()) {
        empty_flow(U"[", U"]");
        return;
      }
      const bool indentless = mapping && !indention_;
      increase_indent(false, indentless);
      for (const auto& e : v) {
        write_indent();
        write_indicator(U"-", true, false, true);
        node(e, false, true, false, false);
      }
      pop_indent();
    } else if (v.is_object()) {
      if (v.empty()) {
        empty_flow(U"{", U"}");
        return;
      }
      increase_indent(false);
      for (auto it = v.begin(); it != v.end(); ++it) {
        write_indent();
        const std::u32string key = decode_utf8(it.key());
        const Analysis a = analyze_scalar(key);
        if (key.size() >= 128 || a.empty || a.multiline)
          throw Error("", it.key(), "pyyaml_dump: complex mapping keys are not supported", ErrorKind::Internal);
        scalar(it.key(), plain_reads_as_string(it.key()), /*simple_key=*/true);
        write_indicator(U":", false);
        node(it.value(), false, false, true, false);
      }
      pop_indent();
    } else {
      std::string text;
      bool is_str = false;
      switch (v.type()) {
        case json::value_t::null: text = "null"; break;
        case json::value_t::boolean: text = v.get<bool>() ? "true" : "false"; break;
        case json::value_t::number_integer: text = std::to_string(v.get<int64_t>()); break;
        case json::value_t::number_unsigned: text = std::to_string(v.get<uint64_t>()); break;
        case json::value_t::number_float: {
          const double d = v.get<double>();
          if (std::isnan(d)) text = ".nan";
          else if (std::isinf(d)) text = d > 0 ? ".inf" : "-.inf";
          else {
            text = python_float_repr(d);  // represent_float: repr().lower(), '.0' before a bare 'e'
            if (text.find('.') == std::string::npos && text.find('e') != std::string::npos)
              text.replace(text.find('e'), 1, ".0e");
          }
          break;
        }
        case json::value_t::string: text = v.get<std::string>(); is_str = true; break;
        default: throw Error("", "", "pyyaml_dump: unsupported value", ErrorKind::Internal);
      }
      (void)root;
      scalar(text, is_str ? plain_reads_as_string(text) : true, simple_key);
    }
  }

  void empty_flow(const std::u32string& open, const std::u32string& close) {
    write_indicator(open, true, true);
    ++flow_level_;
    increase_indent(true);
    pop_indent();
    --flow_level_;
    write_indicator(close, false);
  }

  // expect_scalar: increase_indent(flow=True), process_scalar, pop. `implicit_plain`: the plain
  // text reads back as the value's own type (event.implicit[0]).
  void scalar(const std::string& text, bool implicit_plain, bool simple_key) {
    simple_key_ = simple_key;
    increase_indent(true);
    const std::u32string s = decode_utf8(text);
    const Analysis a = analyze_scalar(s);
    char style = '"';
    if (implicit_plain && !(simple_key && (a.empty || a.multiline)) &&
        ((flow_level_ && a.allow_flow_plain) || (!flow_level_ && a.allow_block_plain)))
      style = 0;
    else if (a.allow_single_quoted && !(simple_key && a.multiline))
      style = '\'';
    const bool split = !simple_key;
    if (style == 0) write_plain(s, split);
    else if (style == '\'') write_single_quoted(s, split);
    else write_double_quoted(s, split);
    pop_indent();
  }

  void write_breaks(const std::u32string& text, size_t start, size_t end) {
    if (text[start] == '\n') write_line_break();
    for (size_t k = start; k < end; ++k) {
      if (text[k] == '\n') {
        write_line_break();
      } else {
        whitespace_ = indention_ = true;
        column_ = 0;
        append_utf8(out, text[k]);
      }
    }
    write_indent();
  }

  void write_plain(const std::u32string& text, bool split) {
    if (text.empty()) return;
    if (!whitespace_) write(U" ");
    whitespace_ = indention_ = false;
    bool spaces = false, breaks = false;
    size_t start = 0;
    for (size_t end = 0; end <= text.size(); ++end) {
      const char32_t ch = end < text.size() ? text[end] : 0;
      const bool none = end == text.size();
      if (spaces) {
        if (ch != ' ' || none) {
          if (start + 1 == end && column_ > kBestWidth && split) {
            write_indent();
            whitespace_ = indention_ = false;
          } else {
            write(text.substr(start, end - start));
          }
          start = end;
        }
      } else if (breaks) {
        if (none || !is_break(ch)) {
          write_breaks(text, start, end);
          whitespace_ = indention_ = false;
          start = end;
        }
      } else {
        if (none || ch == ' ' || is_break(ch)) {
          write(text.substr(start, end - start));
          start = end;
        }
      }
      if (!none) {
        spaces = ch == ' ';
        breaks = is_break(ch);
      }
    }
  }

  void write_single_quoted(const std::u32string& text, bool split) {
    write_indicator(U"'", true);
    bool spaces = false, breaks = false;
    size_t start = 0;
    for (size_t end = 0; end <= text.size(); ++end) {
      const bool none = end == text.size();
      const char32_t ch = none ? 0 : text[end];
      if (spaces) {
        if (none || ch != ' ') {
          if (start + 1 == end && column_ > kBestWidth && split && start != 0 && end != text.size())
            write_indent();
          else
            write(text.substr(start, end - start));
          start = end;
        }
      } else if (breaks) {
        if (none || !is_break(ch)) {
          write_breaks(text, start, end);
          start = end;
        }
      } else {
        if (none || ch == ' ' || is_break(ch) || ch == '\'') {
          if (start < end) {
            write(text.substr(start, end - start));
            start = end;
          }
        }
      }
      if (!none && ch == '\'') {
        write(U"''");
        start = end + 1;
      }
      if (!none) {
        spaces = ch == ' ';
        breaks = is_break(ch);
      }
    }
    write_indicator(U"'", false);
  }

  void write_double_quoted(const std::u32string& text, bool split) {
    write_indicator(U"\"", true);
    size_t start = 0;
    auto escape = [](char32_t ch) -> std::u32string {
      switch (ch) {
        case 0: return U"\\0";
        case 0x07: return U"\\a";
        case 0x08: return U"\\b";
        case 0x09: return U"\\t";
        case 0x0A: return U"\\n";
        case 0x0B: return U"\\v";
        case 0x0C: return U"\\f";
        case 0x0D: return U"\\r";
        case 0x1B: return U"\\e";
        case '"': return U"\\\"";
        case '\\': return U"\\\\";
        case 0x85: return U"\\N";
        case 0xA0: return U"\\_";
        case 0x2028: return U"\\L";
        case 0x2029: return U"\\P";
        default: break;
      }
      char b[16];
      if (ch <= 0xFF) std::snprintf(b, sizeof b, "\\x%02X", static_cast<unsigned>(ch));
      else if (ch <= 0xFFFF) std::snprintf(b, sizeof b, "\\u%04X", static_cast<unsigned>(ch));
      else std::snprintf(b, sizeof b, "\\U%08X", static_cast<unsigned>(ch));
      return decode_utf8(b);
    };
    for (size_t end = 0; end <= text.size(); ++end) {
      const bool none = end == text.size();
      const char32_t ch = none ? 0 : text[end];
      if (none || ch == '"' || ch == '\\' || ch == 0x85 || ch == 0x2028 || ch == 0x2029 || ch == 0xFEFF ||
          !(ch >= 0x20 && ch <= 0x7E)) {
        if (start < end) {
          write(text.substr(start, end - start));
          start = end;
        }
        if (!none) {
          write(escape(ch));
          start = end + 1;
        }
      }
      if (0 < end && end + 1 < text.size() && (ch == ' ' || start >= end) &&
          column_ + static_cast<int>(end - start) > kBestWidth && split) {
        std::u32string data = (start < end ? text.substr(start, end - start) : std::u32string()) + U"\\";
        if (start < end) start = end;
        write(data);
        write_indent();
        whitespace_ = indention_ = false;
        if (text[start] == ' ') write(U"\\");
      }
    }
    write_indicator(U"\"", false);
  }
};

}  // namespace

std::string python_json_dumps(const ordered_json& v) {
  std::string out;
  json_dumps(out, v);
  return out;
}

std::string pyyaml_dump(const json& v) {
  YamlEmitter e;
  e.document(v);
  return e.out;
}

}  // namespace mtt::io
