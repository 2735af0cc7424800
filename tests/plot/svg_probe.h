#pragma once
// Structural reading of the SVG that PLplot's native svg driver writes: <text> elements (with
// character references decoded, nested <tspan>s joined) and <polyline> elements (stroke, fill,
// opacity, points). Enough to count series, find legend labels and axis titles, and map drawn
// coordinates back to data.
#include <cstdint>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

namespace mtt::plot::test {

struct SvgPolyline {
  std::string stroke, fill;
  double fill_opacity = 1;
  std::vector<std::pair<double, double>> pts;
};

struct SvgProbe {
  std::vector<std::string> texts;
  std::vector<SvgPolyline> lines;
  double width = 0, height = 0;

  static std::string decode(const std::string& s) {
    std::string out;
    for (std::size_t i = 0; i < s.size();) {
      if (s[i] == '<') {  // drop nested tags
        i = s.find('>', i);
        i = i == std::string::npos ? s.size() : i + 1;
        continue;
      }
      if (s[i] == '&') {
        const std::size_t e = s.find(';', i);
        const std::string ent = s.substr(i + 1, e - i - 1);
        uint32_t cp = 0;
        if (ent.size() > 1 && ent[0] == '#') cp = ent[1] == 'x' ? std::stoul(ent.substr(2), nullptr, 16) : std::stoul(ent.substr(1));
        else if (ent == "amp") cp = '&';
        else if (ent == "lt") cp = '<';
        else if (ent == "gt") cp = '>';
        else if (ent == "quot") cp = '"';
        else if (ent == "apos") cp = '\'';
        if (cp < 0x80) out += static_cast<char>(cp);
        else if (cp < 0x800) { out += static_cast<char>(0xC0 | (cp >> 6)); out += static_cast<char>(0x80 | (cp & 0x3F)); }
        else { out += static_cast<char>(0xE0 | (cp >> 12)); out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F)); out += static_cast<char>(0x80 | (cp & 0x3F)); }
        i = e + 1;
        continue;
      }
      out += s[i++];
    }
    return out;
  }

  static std::string attr(const std::string& el, const std::string& name) {
    std::smatch m;
    const std::regex re("\\s" + name + "=\"([^\"]*)\"");
    return std::regex_search(el, m, re) ? m[1].str() : "";
  }

  explicit SvgProbe(const std::string& svg) {
    std::smatch m;
    if (std::regex_search(svg, m, std::regex(R"(viewBox="0 0 ([0-9.]+) ([0-9.]+)\")"))) {
      width = std::stod(m[1].str());
      height = std::stod(m[2].str());
    }
    for (std::size_t p = svg.find("<text"); p != std::string::npos; p = svg.find("<text", p + 1)) {
      const std::size_t open_end = svg.find('>', p), close = svg.find("</text>", p);
      if (open_end == std::string::npos || close == std::string::npos) break;
      texts.push_back(decode(svg.substr(open_end + 1, close - open_end - 1)));
    }
    for (std::size_t p = svg.find("<polyline"); p != std::string::npos; p = svg.find("<polyline", p + 1)) {
      const std::size_t e = svg.find("/>", p);
      const std::string el = svg.substr(p, e - p);
      SvgPolyline l;
      l.stroke = attr(el, "stroke");
      l.fill = attr(el, "fill");
      const std::string fo = attr(el, "fill-opacity");
      if (!fo.empty()) l.fill_opacity = std::stod(fo);
      std::string pts = attr(el, "points");
      for (char& c : pts)
        if (c == ',') c = ' ';
      std::istringstream in(pts);
      double x, y;
      while (in >> x >> y) l.pts.push_back({x, y});
      lines.push_back(std::move(l));
    }
  }

  int count_text(const std::string& t) const {
    int n = 0;
    for (const auto& s : texts) n += s == t;
    return n;
  }
  // Stroked lines (fill none) of `stroke` colour with exactly n points.
  int lines_with(const std::string& stroke, std::size_t n) const {
    int k = 0;
    for (const auto& l : lines) k += l.fill == "none" && l.stroke == stroke && l.pts.size() == n;
    return k;
  }
  int data_lines(std::size_t n) const {
    int k = 0;
    for (const auto& l : lines) k += l.fill == "none" && l.pts.size() == n;
    return k;
  }
  // Filled shapes of `fill` colour with n points (closed: first point repeated).
  int fills_with(const std::string& fill, std::size_t n) const {
    int k = 0;
    for (const auto& l : lines) k += l.fill == fill && l.pts.size() == n;
    return k;
  }
};

}  // namespace mtt::plot::test
