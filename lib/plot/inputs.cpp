// Readers for ttt-plot's inputs (docs/formats.md). Strict: a malformed or empty input is an
// mtt::Error naming the file and the key (JSON) or line (CSV, JSONL), never a silent gap.
#include "plot/inputs.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <limits>
#include <nlohmann/json.hpp>
#include <regex>
#include <sstream>
#include <unordered_set>

#include "core/atomic_file.h"
#include "core/error.h"
#include "core/parse_number.h"
#include "io/checkpoint.h"
#include "io/strict_json.h"

namespace mtt::plot {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

std::string read_input(const std::string& path) {
  std::error_code ec;
  if (!fs::exists(path, ec)) throw Error(path, "", "no such file or directory");
  if (fs::is_directory(path, ec)) throw Error(path, "", "is a directory, expected a file");
  try {
    return read_file(path);
  } catch (const Error&) {
    throw;
  } catch (const std::exception& e) {
    throw Error(path, "", std::string("cannot read: ") + e.what());
  }
}

// JSON syntax errors with the line they are on.
json parse_json(const std::string& text, const std::string& path, int line_offset = 0) {
  try {
    return json::parse(text);
  } catch (const json::parse_error& e) {
    const std::size_t at = std::min<std::size_t>(e.byte > 0 ? e.byte - 1 : 0, text.size());
    const int line = line_offset + 1 + static_cast<int>(std::count(text.begin(), text.begin() + at, '\n'));
    throw Error(path, "line " + std::to_string(line), "invalid JSON: " + io::json_error_text(e));
  } catch (const json::exception& e) {  // e.g. out_of_range 406: a number like 1e999 overflows a double
    throw Error(path, "", "invalid JSON: " + io::json_error_text(e));
  }
}

std::vector<double> number_list(const json& v, const std::string& path, const std::string& key) {
  if (!v.is_array()) throw Error(path, key, "expected a list of numbers, got " + std::string(v.type_name()));
  std::vector<double> out;
  out.reserve(v.size());
  for (std::size_t i = 0; i < v.size(); ++i) {
    if (v[i].is_null()) out.push_back(kNaN);  // NaN/inf are written as null by JSON writers
    else if (v[i].is_number()) out.push_back(v[i].get<double>());
    else throw Error(path, key + "[" + std::to_string(i) + "]", "expected a number, got " + v[i].dump());
  }
  return out;
}

const json& need(const json& obj, const char* name, const std::string& path, const std::string& key) {
  auto it = obj.find(name);
  if (it == obj.end()) throw Error(path, key + "." + name, "missing");
  return *it;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// inner-loop log

InnerLoopData parse_inner_loop(const std::string& text, const std::string& path) {
  if (text.find_first_not_of(" \t\r\n") == std::string::npos) throw Error(path, "", "empty file");
  json j = parse_json(text, path);
  if (!j.is_object()) throw Error(path, "", "expected a JSON object");
  auto f = j.find("format");
  if (f == j.end() || !f->is_string()) throw Error(path, "format", "missing (expected \"moshi-ttt/inner-loop/1\")");
  if (*f != "moshi-ttt/inner-loop/1")
    throw Error(path, "format", "unsupported format " + f->dump() + " (expected \"moshi-ttt/inner-loop/1\")");
  auto ls = j.find("layers");
  if (ls == j.end() || !ls->is_array()) throw Error(path, "layers", "missing or not a list");
  if (ls->empty()) throw Error(path, "layers", "no layers recorded (was inner-loop logging on?)");
  InnerLoopData d;
  d.path = path;
  for (std::size_t i = 0; i < ls->size(); ++i) {
    const std::string k = "layers[" + std::to_string(i) + "]";
    const json& l = (*ls)[i];
    if (!l.is_object()) throw Error(path, k, "expected an object");
    InnerLoopLayer r;
    const json& layer = need(l, "layer", path, k);
    if (!layer.is_number_integer()) throw Error(path, k + ".layer", "expected an integer");
    r.layer = layer.get<int>();
    if (auto n = l.find("name"); n != l.end() && n->is_string()) r.name = n->get<std::string>();
    if (auto m = l.find("mini_batch_size"); m != l.end()) {
      if (!m->is_number_integer() || m->get<int64_t>() <= 0)
        throw Error(path, k + ".mini_batch_size", "expected a positive integer");
      r.mini_batch_size = m->get<int64_t>();
    }
    r.positions = number_list(need(l, "positions", path, k), path, k + ".positions");
    if (r.positions.empty()) throw Error(path, k + ".positions", "empty: no token recorded");
    for (std::size_t p = 0; p < r.positions.size(); ++p)
      if (!std::isfinite(r.positions[p])) throw Error(path, k + ".positions[" + std::to_string(p) + "]", "not a number");
    const std::size_t n = r.positions.size();
    struct {
      const char* name;
      std::vector<double>* dst;
      std::vector<std::vector<double>>* heads;
    } cols[] = {{"loss_w0", &r.loss_w0, &r.head_w0},
                {"loss_before", &r.loss_before, &r.head_before},
                {"loss_after", &r.loss_after, &r.head_after}};
    for (auto& c : cols) {
      *c.dst = number_list(need(l, c.name, path, k), path, k + "." + c.name);
      if (c.dst->size() != n)
        throw Error(path, k + "." + c.name,
                    std::to_string(c.dst->size()) + " values for " + std::to_string(n) + " positions");
    }
    if (auto ph = l.find("per_head"); ph != l.end() && !ph->is_null()) {
      if (!ph->is_object()) throw Error(path, k + ".per_head", "expected an object");
      std::size_t heads = 0;
      for (auto& c : cols) {
        const std::string hk = k + ".per_head." + c.name;
        const json& a = need(*ph, c.name, path, k + ".per_head");
        if (!a.is_array() || a.empty()) throw Error(path, hk, "expected a non-empty list (one list per head)");
        if (heads == 0) heads = a.size();
        if (a.size() != heads)
          throw Error(path, hk, std::to_string(a.size()) + " heads, other per_head lists have " + std::to_string(heads));
        for (std::size_t h = 0; h < a.size(); ++h) {
          const std::string kk = hk + "[" + std::to_string(h) + "]";
          c.heads->push_back(number_list(a[h], path, kk));
          if (c.heads->back().size() != n)
            throw Error(path, kk, std::to_string(c.heads->back().size()) + " values for " + std::to_string(n) + " positions");
        }
      }
    }
    for (const auto& prev : d.layers)
      if (prev.layer == r.layer) throw Error(path, k + ".layer", "layer " + std::to_string(r.layer) + " listed twice");
    d.layers.push_back(std::move(r));
  }
  return d;
}

InnerLoopData read_inner_loop(const std::string& path) {
  std::error_code ec;
  std::string file = path;
  if (fs::is_directory(path, ec)) {
    file = (fs::path(path) / "inner_loop.json").string();
    if (!fs::exists(file, ec)) throw Error(path, "", "no inner_loop.json in this run dir");
  }
  return parse_inner_loop(read_input(file), file);
}

// ---------------------------------------------------------------------------------------------
// sweep summary

int Table::column(const std::string& name) const {
  for (std::size_t i = 0; i < columns.size(); ++i)
    if (columns[i] == name) return static_cast<int>(i);
  return -1;
}

namespace {

Cell cell_from_text(const std::string& t) {
  Cell c;
  c.text = t;
  if (t.empty()) return c;
  c.null = false;
  // A number when strtod consumes all of it (so "1e-3" and "nan" parse, "3 layers" does not).
  const char* b = t.c_str();
  char* e = nullptr;
  const double v = std::strtod(b, &e);
  if (e != b && *e == '\0') {
    c.numeric = true;
    c.num = v;
  }
  return c;
}

Cell cell_from_json(const json& v) {
  Cell c;
  if (v.is_null()) return c;
  c.null = false;
  if (v.is_number()) {
    c.numeric = true;
    c.num = v.get<double>();
    c.text = v.dump();
  } else if (v.is_string()) {
    c.text = v.get<std::string>();
  } else {
    c.text = v.dump();  // bools, lists: categorical
  }
  return c;
}

}  // namespace

Table parse_summary_csv(const std::string& text, const std::string& path, const std::vector<std::string>& keep) {
  // RFC 4180: fields separated by commas, optionally quoted with "" escaping a quote; quoted
  // fields may hold commas and newlines. Records become rows as they are read (no copy of the
  // whole file as strings), holding only the kept columns.
  Table t;
  t.path = path;
  std::vector<int> take;  // file column -> index in the row, -1: dropped
  std::vector<std::string> rec;
  std::string field;
  bool in_quotes = false, field_started = false, header = true;
  int line = 1, rec_line = 1;
  auto end_record = [&] {
    rec.push_back(field);
    if (header) {
      t.file_columns = rec;
      std::unordered_set<std::string> seen;  // a header of 10^5 columns is checked in linear time
      for (std::size_t c = 0; c < rec.size(); ++c) {
        if (rec[c].empty()) throw Error(path, "line 1", "column " + std::to_string(c + 1) + " has no name");
        if (!seen.insert(rec[c]).second) throw Error(path, "line 1", "column '" + rec[c] + "' appears twice");
        const bool kept = keep.empty() || std::find(keep.begin(), keep.end(), rec[c]) != keep.end();
        take.push_back(kept ? static_cast<int>(t.columns.size()) : -1);
        if (kept) t.columns.push_back(rec[c]);
      }
      header = false;
    } else {
      if (rec.size() != t.file_columns.size())
        throw Error(path, "line " + std::to_string(rec_line),
                    std::to_string(rec.size()) + " fields, the header has " + std::to_string(t.file_columns.size()));
      std::vector<Cell> row(t.columns.size());
      for (std::size_t c = 0; c < rec.size(); ++c)
        if (take[c] >= 0) row[static_cast<std::size_t>(take[c])] = cell_from_text(rec[c]);
      t.rows.push_back(std::move(row));
      t.lines.push_back(rec_line);
    }
    rec.clear();
  };
  for (std::size_t i = 0; i < text.size(); ++i) {
    const char ch = text[i];
    if (in_quotes) {
      if (ch == '"') {
        if (i + 1 < text.size() && text[i + 1] == '"') {
          field += '"';
          ++i;
        } else {
          in_quotes = false;
        }
      } else {
        if (ch == '\n') ++line;
        field += ch;
      }
      continue;
    }
    if (ch == '"') {
      if (!field.empty()) throw Error(path, "line " + std::to_string(line), "quote inside an unquoted field");
      in_quotes = true;
      field_started = true;
    } else if (ch == ',') {
      rec.push_back(field);
      field.clear();
      field_started = true;
    } else if (ch == '\n' || ch == '\r') {
      if (ch == '\r' && i + 1 < text.size() && text[i + 1] == '\n') ++i;
      if (field_started || !field.empty() || !rec.empty()) end_record();
      field.clear();
      field_started = false;
      ++line;
      rec_line = line;
    } else {
      field += ch;
      field_started = true;
    }
  }
  if (in_quotes) throw Error(path, "line " + std::to_string(rec_line), "unterminated quoted field");
  if (field_started || !field.empty() || !rec.empty()) end_record();
  if (header) throw Error(path, "", "empty file (expected a header row)");
  if (t.rows.empty()) throw Error(path, "", "no rows (the sweep has no finished points yet?)");
  if (keep.empty()) t.file_columns.clear();  // every column is held
  return t;
}

Table parse_summary_json(const std::string& text, const std::string& path, const std::vector<std::string>& keep) {
  if (text.find_first_not_of(" \t\r\n") == std::string::npos) throw Error(path, "", "empty file");
  json j = parse_json(text, path);
  if (!j.is_object()) throw Error(path, "", "expected a JSON object with axes, metrics, rows");
  Table t;
  t.path = path;
  for (const char* k : {"axes", "metrics"}) {
    auto it = j.find(k);
    if (it == j.end() || !it->is_array()) throw Error(path, k, "missing or not a list of names");
    for (std::size_t i = 0; i < it->size(); ++i) {
      if (!(*it)[i].is_string()) throw Error(path, std::string(k) + "[" + std::to_string(i) + "]", "expected a name");
      (std::string(k) == "axes" ? t.axes : t.metrics).push_back((*it)[i].get<std::string>());
    }
  }
  auto rows = j.find("rows");
  if (rows == j.end() || !rows->is_array()) throw Error(path, "rows", "missing or not a list");
  if (rows->empty()) throw Error(path, "rows", "no rows (the sweep has no finished points yet?)");
  // Columns: id (when rows have it), axes, metrics, then any other key in first-seen order.
  if (!rows->empty() && (*rows)[0].is_object() && (*rows)[0].contains("id")) t.columns.push_back("id");
  for (const auto& a : t.axes) t.columns.push_back(a);
  for (const auto& m : t.metrics) t.columns.push_back(m);
  std::unordered_set<std::string> known(t.columns.begin(), t.columns.end());
  for (std::size_t r = 0; r < rows->size(); ++r) {
    const json& row = (*rows)[r];
    if (!row.is_object()) throw Error(path, "rows[" + std::to_string(r) + "]", "expected an object");
    for (auto it = row.begin(); it != row.end(); ++it)
      if (known.insert(it.key()).second) t.columns.push_back(it.key());
  }
  if (!keep.empty()) {
    t.file_columns = t.columns;
    std::vector<std::string> kept;
    for (const auto& c : t.columns)
      if (std::find(keep.begin(), keep.end(), c) != keep.end()) kept.push_back(c);
    t.columns = kept;
  }
  for (std::size_t r = 0; r < rows->size(); ++r) {
    const json& row = (*rows)[r];
    std::vector<Cell> cells;
    for (const auto& c : t.columns) {
      auto it = row.find(c);
      cells.push_back(it == row.end() ? Cell{} : cell_from_json(*it));
    }
    t.rows.push_back(std::move(cells));
    t.lines.push_back(0);
  }
  return t;
}

Table read_summary(const std::string& path, const std::vector<std::string>& keep) {
  std::error_code ec;
  std::string file = path;
  if (fs::is_directory(path, ec)) {
    const fs::path js = fs::path(path) / "summary.json", csv = fs::path(path) / "summary.csv";
    if (fs::exists(js, ec)) file = js.string();
    else if (fs::exists(csv, ec)) file = csv.string();
    else throw Error(path, "", "no summary.json or summary.csv in this sweep dir");
  }
  const std::string text = read_input(file);
  std::string ext = fs::path(file).extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return std::tolower(c); });
  if (ext == ".json") return parse_summary_json(text, file, keep);
  if (ext == ".csv") return parse_summary_csv(text, file, keep);
  throw Error(file, "", "unknown summary format (expected .csv or .json)");
}

// ---------------------------------------------------------------------------------------------
// training metrics

MetricsLog parse_metrics_jsonl(const std::string& text, const std::string& path) {
  MetricsLog m;
  m.path = path;
  std::istringstream in(text);
  std::string line;
  int ln = 0;
  std::size_t n = 0;
  while (std::getline(in, line)) {
    ++ln;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t") == std::string::npos) continue;
    json j = parse_json(line, path, ln - 1);
    if (!j.is_object()) throw Error(path, "line " + std::to_string(ln), "expected a JSON object");
    auto st = j.find("step");
    if (st == j.end() || !st->is_number()) throw Error(path, "line " + std::to_string(ln), "no numeric \"step\"");
    m.step.push_back(st->get<double>());
    for (auto it = j.begin(); it != j.end(); ++it) {
      if (it.key() == "step" || !it->is_number()) continue;
      auto& col = m.fields[it.key()];
      col.resize(n, kNaN);  // a field first seen on a later line: NaN before it
      col.push_back(it->get<double>());
    }
    ++n;
    for (auto& [k, col] : m.fields) col.resize(n, kNaN);
  }
  if (n == 0) throw Error(path, "", "no records (empty metrics log)");
  return m;
}

MetricsRun read_metrics(const std::string& path) {
  std::error_code ec;
  MetricsRun r;
  if (fs::is_directory(path, ec)) {
    r.dir = path;
    const fs::path tr = fs::path(path) / "metrics.train.jsonl", ev = fs::path(path) / "metrics.eval.jsonl";
    if (!fs::exists(tr, ec)) throw Error(path, "", "no metrics.train.jsonl in this run dir");
    r.train = parse_metrics_jsonl(read_input(tr.string()), tr.string());
    if (fs::exists(ev, ec)) r.eval = parse_metrics_jsonl(read_input(ev.string()), ev.string());
  } else {
    r.dir = fs::path(path).parent_path().string();
    r.train = parse_metrics_jsonl(read_input(path), path);
  }
  return r;
}

// ---------------------------------------------------------------------------------------------
// gates

namespace {

const std::regex& gate_key_re() {
  // transformer.layers.<i>.seq_modeling_block.{forward,backward}_ssm_gating.gating_alpha
  // (docs/checkpoint-keys.md §1.2); any prefix before "layers.".
  static const std::regex re(R"(^(?:.*\.)?layers\.(\d+)\.seq_modeling_block\.(forward|backward)_ssm_gating\.gating_alpha$)");
  return re;
}

std::optional<int64_t> step_from_path(const std::string& p) {
  static const std::regex re(R"(checkpoint_(\d+))");
  std::smatch m;
  std::optional<int64_t> s;
  std::string rest = p;
  while (std::regex_search(rest, m, re)) {  // the last one in the path
    s = parse_int64(m[1].str());  // nothing for a number beyond int64
    rest = m.suffix().str();
  }
  return s;
}

GateCheckpoint gates_of(const io::Checkpoint& ck, const std::string& source) {
  GateCheckpoint g;
  g.source = source;
  for (const auto& key : ck.keys()) {
    std::smatch m;
    if (!std::regex_match(key, m, gate_key_re())) continue;
    const io::TensorView v = ck.get(key);
    if (!dtype_is_float(v.dtype()))
      throw Error(ck.file_of(key), key, std::string("gating_alpha has dtype ") + dtype_name(v.dtype()) + ", expected a float");
    if (v.numel() == 0) throw Error(ck.file_of(key), key, "gating_alpha is empty");
    GateValues gv;
    gv.alpha.resize(v.numel());
    for (uint64_t i = 0; i < v.numel(); ++i) gv.alpha[i] = static_cast<float>(element_as_double(v.data, v.dtype(), i));
    const auto layer = parse_int64(m[1].str());
    if (!layer || *layer > 100000) throw Error(ck.file_of(key), key, "the layer index of this key is not a layer number");
    g.gates[{static_cast<int>(*layer), m[2].str()}] = std::move(gv);
  }
  if (g.gates.empty())
    throw Error(source, "", "no *_ssm_gating.gating_alpha tensors (not a TTT checkpoint?); " + ck.describe());
  return g;
}

}  // namespace

std::vector<GateCheckpoint> read_gates(const std::vector<std::string>& inputs) {
  if (inputs.empty()) throw Error("", "", "no checkpoints given", ErrorKind::Usage);
  std::vector<GateCheckpoint> out;
  for (const auto& in : inputs) {
    std::error_code ec;
    if (!fs::exists(in, ec)) throw Error(in, "", "no such file or directory");
    std::vector<int64_t> steps;
    if (fs::is_directory(in, ec)) steps = io::Checkpoint::list_steps(in);
    if (steps.size() > 0) {
      // A run dir: every checkpoint step, in order.
      std::string run = fs::path(in).lexically_normal().filename().string();
      if (run.empty() || run == "." || run == "checkpoints")
        run = fs::path(in).lexically_normal().parent_path().filename().string();
      for (int64_t s : steps) {
        io::CheckpointOptions o;
        o.step = s;
        auto ck = io::Checkpoint::open(in, o);
        auto g = gates_of(ck, in + " step " + std::to_string(s));
        g.run = run;
        g.step = s;
        out.push_back(std::move(g));
      }
    } else {
      auto ck = io::Checkpoint::open(in);
      auto g = gates_of(ck, in);
      g.step = ck.step() ? ck.step() : step_from_path(in);
      out.push_back(std::move(g));
    }
  }
  return out;
}

}  // namespace mtt::plot
