#pragma once
// UTF-8 validation for text inputs (YAML specs, JSON lines): strings from them end up in JSON
// outputs, whose writer refuses invalid UTF-8 with an exception far from the input's name.
#include <cstddef>
#include <string_view>

namespace mtt {

// True when `s` is well-formed UTF-8 (no overlong forms, no surrogates, at most U+10FFFF).
// Otherwise false, with the byte offset of the first bad sequence in *bad_at.
bool valid_utf8(std::string_view s, std::size_t* bad_at = nullptr);

}  // namespace mtt
