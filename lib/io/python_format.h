#pragma once
// The text formats moshi-finetune's Python writes, byte for byte, so files we write where it writes
// them (a run dir's args.yaml, metrics.*.jsonl) read like its own:
//   - python_float_repr: Python's repr(float) (shortest round-trip digits, exponent form when the
//     decimal exponent is < -4 or >= 16: 0.0001, 1e-05, 1e+16, 10000.0);
//   - python_json_dumps: json.dumps(obj) with its defaults (", " and ": " separators, keys in
//     insertion order, ensure_ascii, NaN / Infinity literals);
//   - pyyaml_dump: yaml.dump(obj) with PyYAML 6's defaults as simple_parsing's Serializable.save
//     calls it (block style, keys sorted, indent 2, width 80, empty collections as {} / [],
//     strings quoted only when a plain scalar would read back as something else).
#include <nlohmann/json.hpp>
#include <string>

namespace mtt::io {

std::string python_float_repr(double v);
std::string python_json_dumps(const nlohmann::ordered_json& v);
// `v` is dumped as PyYAML dumps the equivalent Python object (dict keys sorted; nlohmann::json
// objects already are). Integers stay integers, floats get repr()'s digits.
std::string pyyaml_dump(const nlohmann::json& v);

}  // namespace mtt::io
