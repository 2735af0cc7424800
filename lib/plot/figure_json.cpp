#include "plot/figure_json.h"

#include <cmath>

namespace mtt::plot {

namespace {

nlohmann::json numbers(const std::vector<double>& v) {
  nlohmann::json a = nlohmann::json::array();
  for (double d : v) a.push_back(std::isfinite(d) ? nlohmann::json(d) : nlohmann::json(nullptr));
  return a;
}

const char* line_name(LineStyle l) {
  switch (l) {
    case LineStyle::Solid: return "solid";
    case LineStyle::Dashed: return "dashed";
    case LineStyle::Dotted: return "dotted";
  }
  return "solid";
}

}  // namespace

nlohmann::json figure_json(const Figure& f, const std::string& output) {
  nlohmann::json panels = nlohmann::json::array();
  for (const auto& p : f.panels) {
    nlohmann::json series = nlohmann::json::array();
    for (const auto& s : p.series) {
      nlohmann::json j = {{"label", s.label},  {"x", numbers(s.x)},          {"y", numbers(s.y)},
                          {"line", s.draw_line ? line_name(s.line) : "none"}, {"markers", s.markers}};
      if (!s.lo.empty()) j["lo"] = numbers(s.lo);
      if (!s.hi.empty()) j["hi"] = numbers(s.hi);
      series.push_back(std::move(j));
    }
    nlohmann::json pj = {{"title", p.title}, {"xlabel", p.xlabel}, {"ylabel", p.ylabel},
                         {"logx", p.logx},   {"logy", p.logy},     {"series", series}};
    if (!p.note.empty()) pj["note"] = p.note;
    if (!p.categories.empty()) pj["categories"] = p.categories;
    if (p.fixed_y) pj["ylim"] = {p.ymin, p.ymax};
    panels.push_back(std::move(pj));
  }
  nlohmann::json j = {{"title", f.title}, {"panels", panels}};
  if (!output.empty()) {
    j["output"] = output;
    j["format"] = format_name(format_from_path(output));
  }
  return j;
}

}  // namespace mtt::plot
