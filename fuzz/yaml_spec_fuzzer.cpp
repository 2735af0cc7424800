// libFuzzer target for the experiment spec reader (experiments::parse_spec and yaml_to_json, the
// YAML that ttt-sweep run and ttt-sweep train read). Built and run by scripts/fuzz.sh under ASan +
// UBSan; seeded with experiments/*.yaml and the test specs, dictionary fuzz/yaml.dict.
//
// Contract: any bytes give a spec or an mtt::Error of kind Input naming the file; no crash, no
// hang (alias bombs, self-referencing aliases), no other exception (those reach users as exit 70).
#include <cstddef>
#include <cstdint>
#include <string>

#include "core/error.h"
#include "experiments/spec.h"

namespace {

void expect_input_error(const mtt::Error& e) {
  if (e.kind() != mtt::ErrorKind::Input) __builtin_trap();
  if (e.file() != "fuzz.yaml") __builtin_trap();
  const std::string w = e.what();
  if (w.find('\n') != std::string::npos) __builtin_trap();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  try {
    const auto spec = mtt::experiments::parse_spec(text, "fuzz.yaml");
    // What the grid expansion relies on.
    if (spec.name.empty() || spec.experiment.empty()) __builtin_trap();
    for (const auto& a : spec.axes)
      if (a.values.empty()) __builtin_trap();
    (void)spec.base.dump();
  } catch (const mtt::Error& e) {
    expect_input_error(e);
  }
  try {
    (void)mtt::experiments::yaml_to_json(text, "fuzz.yaml").dump();
  } catch (const mtt::Error& e) {
    expect_input_error(e);
  }
  return 0;
}
