#pragma once
// A figure's data as JSON (`ttt-plot ... --json`): what was drawn, panel by panel, with every series'
// points as drawn (before the renderer's decimation), so that a user can restyle it elsewhere
// (matplotlib: ax.plot(s["x"], s["y"], label=s["label"])). Non-finite values are null.
//   {"output": "gating.png", "format": "png", "title": ..., "panels": [{"title", "xlabel", "ylabel",
//    "logx", "logy", ["note"], ["categories"], ["ylim"], "series": [{"label", "x", "y", ["lo", "hi"],
//    "line", "markers"}]}]}
// With "categories" (bar panels), series.y[i] belongs to categories[i] and x is empty.
#include <nlohmann/json.hpp>
#include <string>

#include "plot/figure.h"

namespace mtt::plot {

nlohmann::json figure_json(const Figure& f, const std::string& output = "");

}  // namespace mtt::plot
