#pragma once
// Runs tests/mimi/ref/mimi_ref.py (PyPI moshi, MTT_REF_PYTHON) once per config and script
// version; the outputs are cached under <build>/mimi-ref/<hash>/ because the full-size reference
// takes minutes on a loaded 2-core machine. Skips (returns "") when the venv is missing.
#include <gtest/gtest.h>

#include <filesystem>
#include <functional>
#include <string>

#include "core/atomic_file.h"
#include "test_util.h"

namespace mtt::test {

inline std::string ref_python() {
  if (const char* p = std::getenv("MTT_REF_PYTHON")) return p;
  return MTT_REF_PYTHON;
}

// Directory holding <config>_weights.safetensors and <config>_io.safetensors, or "" with
// `why` set when the reference cannot run.
inline std::string mimi_reference(const std::string& config, std::string& why) {
  const std::string py = ref_python();
  if (py.empty() || !std::filesystem::exists(py)) {
    why = "MTT_REF_PYTHON not set or missing (PyPI moshi reference venv): " + py;
    return "";
  }
  auto probe = run_command(py + " -c 'import moshi, safetensors' 2>&1");
  if (probe.status != 0) {
    why = "the reference venv cannot import moshi: " + probe.out;
    return "";
  }
  const auto script = source_dir() / "tests" / "mimi" / "ref" / "mimi_ref.py";
  const std::string text = mtt::read_file(script.string());
  const auto dir = std::filesystem::path(MTT_BINARY_DIR) / "mimi-ref" /
                   std::to_string(std::hash<std::string>{}(text + config));
  const auto done = dir / (config + ".done");
  if (!std::filesystem::exists(done)) {
    std::filesystem::create_directories(dir);
    auto r = run_command(py + " " + script.string() + " --config " + config + " --out " + dir.string());
    if (r.status != 0) {
      ADD_FAILURE() << "reference script failed (" << r.status << "): " << r.err;
      return "";
    }
    std::printf("  reference: %s", r.out.c_str());
    mtt::write_file_atomic(done.string(), r.out);
  }
  return dir.string();
}

}  // namespace mtt::test
