// Plot style: plots/style.h defaults, JSON overrides.
#include "plot/style.h"

#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "core/atomic_file.h"
#include "core/error.h"
#include "io/strict_json.h"
#include "plots/style.h"

namespace mtt::plot {

using nlohmann::json;

std::string Rgb::hex() const {
  char buf[8];
  std::snprintf(buf, sizeof buf, "#%02X%02X%02X", r, g, b);
  return buf;
}

Style default_style() {
  namespace h = house;
  Style s;
  for (unsigned c : h::kPalette) s.palette.push_back(Rgb::from_hex(c));
  s.background = Rgb::from_hex(h::kBackground);
  s.foreground = Rgb::from_hex(h::kForeground);
  s.grid = Rgb::from_hex(h::kGrid);
  s.panel_width = h::kPanelWidth;
  s.panel_height = h::kPanelHeight;
  s.max_columns = h::kMaxColumns;
  s.font_family = h::kFontFamily;
  s.char_height_mm = h::kCharHeightMm;
  s.text_scale = h::kTextScale;
  s.label_scale = h::kLabelScale;
  s.title_scale = h::kTitleScale;
  s.suptitle_scale = h::kSuptitleScale;
  s.line_width = h::kLineWidth;
  s.axis_width = h::kAxisWidth;
  s.marker_size_mm = h::kMarkerSizeMm;
  s.band_alpha = h::kBandAlpha;
  s.bar_width = h::kBarWidth;
  return s;
}

namespace {

Rgb parse_colour(const json& v, const std::string& path, const std::string& key) {
  if (v.is_string()) {
    const std::string t = v.get<std::string>();
    if (t.size() == 7 && t[0] == '#') {
      unsigned x = 0;
      if (std::sscanf(t.c_str() + 1, "%6x", &x) == 1 && t.find_first_not_of("0123456789abcdefABCDEF", 1) == std::string::npos)
        return Rgb::from_hex(x);
    }
  }
  throw Error(path, key, "expected a colour \"#RRGGBB\", got " + v.dump());
}

double positive(const json& v, const std::string& path, const std::string& key, double max) {
  if (!v.is_number() || !(v.get<double>() > 0) || v.get<double>() > max)
    throw Error(path, key, "expected a number in (0, " + json(max).dump() + "], got " + v.dump());
  return v.get<double>();
}

// An integer in [lo, hi] (a pixel count, a number of columns): 1.5 is not one.
int whole(const json& v, const std::string& path, const std::string& key, int lo, int hi) {
  const double d = v.is_number() ? v.get<double>() : std::nan("");
  if (!(d >= lo && d <= hi && d == std::floor(d)))
    throw Error(path, key, "expected an integer in " + std::to_string(lo) + ".." + std::to_string(hi) + ", got " + v.dump());
  return static_cast<int>(d);
}

}  // namespace

Style load_style(const std::string& path) {
  const json j = io::read_json_file_strict(path);  // syntax, 1e999, duplicate keys: one line naming the file
  if (!j.is_object()) throw Error(path, "", "a style file is a JSON object");
  Style s = default_style();
  for (auto it = j.begin(); it != j.end(); ++it) {
    const std::string& k = it.key();
    const json& v = it.value();
    if (k == "palette") {
      if (!v.is_array() || v.empty()) throw Error(path, k, "expected a non-empty list of \"#RRGGBB\" colours");
      s.palette.clear();
      for (std::size_t i = 0; i < v.size(); ++i) s.palette.push_back(parse_colour(v[i], path, k + "[" + std::to_string(i) + "]"));
    } else if (k == "background") s.background = parse_colour(v, path, k);
    else if (k == "foreground") s.foreground = parse_colour(v, path, k);
    else if (k == "grid") s.grid = parse_colour(v, path, k);
    else if (k == "panel_width") s.panel_width = whole(v, path, k, 200, 10000);  // the axes' margins take ~100 px
    else if (k == "panel_height") s.panel_height = whole(v, path, k, 150, 10000);
    else if (k == "max_columns") s.max_columns = whole(v, path, k, 1, 32);
    else if (k == "font_family") {
      if (!v.is_string() || (v != "sans" && v != "serif" && v != "mono"))
        throw Error(path, k, "expected \"sans\", \"serif\" or \"mono\"");
      s.font_family = v.get<std::string>();
    } else if (k == "char_height_mm") s.char_height_mm = positive(v, path, k, 100);
    else if (k == "text_scale") s.text_scale = positive(v, path, k, 10);
    else if (k == "label_scale") s.label_scale = positive(v, path, k, 10);
    else if (k == "title_scale") s.title_scale = positive(v, path, k, 10);
    else if (k == "suptitle_scale") s.suptitle_scale = positive(v, path, k, 10);
    else if (k == "line_width") s.line_width = positive(v, path, k, 50);
    else if (k == "axis_width") s.axis_width = positive(v, path, k, 50);
    else if (k == "marker_size_mm") s.marker_size_mm = positive(v, path, k, 50);
    else if (k == "band_alpha") s.band_alpha = positive(v, path, k, 1);
    else if (k == "bar_width") s.bar_width = positive(v, path, k, 1);
    else throw Error(path, k, "unknown style key");
  }
  return s;
}

std::string style_to_json(const Style& s) {
  json pal = json::array();
  for (const auto& c : s.palette) pal.push_back(c.hex());
  json j = {{"palette", pal},
            {"background", s.background.hex()},
            {"foreground", s.foreground.hex()},
            {"grid", s.grid.hex()},
            {"panel_width", s.panel_width},
            {"panel_height", s.panel_height},
            {"max_columns", s.max_columns},
            {"font_family", s.font_family},
            {"char_height_mm", s.char_height_mm},
            {"text_scale", s.text_scale},
            {"label_scale", s.label_scale},
            {"title_scale", s.title_scale},
            {"suptitle_scale", s.suptitle_scale},
            {"line_width", s.line_width},
            {"axis_width", s.axis_width},
            {"marker_size_mm", s.marker_size_mm},
            {"band_alpha", s.band_alpha},
            {"bar_width", s.bar_width}};
  return j.dump(2) + "\n";
}

}  // namespace mtt::plot
