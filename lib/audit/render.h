#pragma once
// Rendering of an audit Report: an aligned plain-text table (default) and JSON (--json; the
// schema is documented in docs/inspect-json.md, "schema_version": 1).
#include <string>

#include <nlohmann/json.hpp>

#include "audit/report.h"

namespace mtt::audit {

inline constexpr int kReportSchemaVersion = 1;

std::string render_table(const Report& report);
nlohmann::json to_json(const Report& report);
// The JSON printed instead of a report when the input could not be read (exit 2).
nlohmann::json error_json(const std::string& message, int exit_status);

// 1536 -> "1.5 KiB"
std::string human_bytes(uint64_t bytes);

}  // namespace mtt::audit
