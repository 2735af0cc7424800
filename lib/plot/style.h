#pragma once
// Figure style (colours, fonts, sizes). Defaults come from plots/style.h, the one place the house
// style is defined; a JSON file can override any field (docs/formats.md "Plot style").
#include <string>
#include <vector>

namespace mtt::plot {

struct Rgb {
  unsigned char r = 0, g = 0, b = 0;
  static Rgb from_hex(unsigned v) { return {static_cast<unsigned char>(v >> 16), static_cast<unsigned char>(v >> 8),
                                            static_cast<unsigned char>(v)}; }
  std::string hex() const;  // "#RRGGBB"
};

struct Style {
  std::vector<Rgb> palette;
  Rgb background, foreground, grid;
  int panel_width = 0, panel_height = 0, max_columns = 0;
  std::string font_family;
  double char_height_mm = 0;  // PLplot character height at scale 1 (pages are 72 px per inch)
  double text_scale = 0, label_scale = 0, title_scale = 0, suptitle_scale = 0;
  double line_width = 0, axis_width = 0, marker_size_mm = 0, band_alpha = 0, bar_width = 0;
};

Style default_style();
// Reads a JSON object whose keys are the field names above (colours as "#RRGGBB", palette as a
// list); missing keys keep their default. Throws mtt::Error(path, key, reason).
Style load_style(const std::string& path);
std::string style_to_json(const Style& s);

}  // namespace mtt::plot
