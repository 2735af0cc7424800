#pragma once
// A figure as data: panels of line series (with optional min-max bands and markers) or grouped
// bars, axis titles, log scales, legends. render() draws it with PLplot (Debian libplplot) in the
// format named by the output's extension and writes it atomically.
#include <string>
#include <vector>

#include "plot/style.h"

namespace mtt::plot {

enum class Format { Png, Svg, Pdf };
// ".png" -> pngcairo, ".svg" -> PLplot's native SVG driver (text stays <text>, so titles and
// legend labels are searchable and editable), ".pdf" -> pdfcairo. Throws a usage Error otherwise.
Format format_from_path(const std::string& path);
const char* format_name(Format f);

enum class LineStyle { Solid, Dashed, Dotted };
// Auto: the corner where the legend covers the fewest data points.
enum class LegendPos { Auto, TopRight, TopLeft, BottomRight, BottomLeft, None };

struct Series {
  std::string label;             // legend text; empty: not in the legend
  std::vector<double> x, y;      // same length; non-finite y breaks the line
  std::vector<double> lo, hi;    // optional band (same length as x), drawn translucent
  int color = -1;                // palette index; -1: the next free one in the panel
  LineStyle line = LineStyle::Solid;
  bool markers = false;          // a filled dot at every finite point
  bool draw_line = true;
};

struct Panel {
  std::string title, note;       // note: a smaller line under the title
  std::string xlabel, ylabel;
  bool logx = false, logy = false;
  std::vector<std::string> categories;  // non-empty: grouped bars, series.y[i] per category
  std::vector<Series> series;
  LegendPos legend = LegendPos::Auto;
  // Optional fixed y range (in data units); used to share a scale between panels.
  bool fixed_y = false;
  double ymin = 0, ymax = 0;
};

struct Figure {
  std::string title;
  std::vector<Panel> panels;
  int columns = 0;               // 0: style.max_columns
  int width = 0, height = 0;     // 0: from the style's panel size and the grid
};

// Checks that every panel has something finite to draw and that the sizes agree; throws
// mtt::Error(source, key, reason) naming the panel/series otherwise.
void validate(const Figure& fig, const std::string& source);

// Renders to `path` (temporary file in the same directory, renamed when complete: no partial
// file on any error).
void render(const Figure& fig, const std::string& path, const Style& style = default_style());

// What a panel `columns` pixel columns wide can show, from O(columns) points (issue 15: 10^6
// points drawn in seconds). A line series with more than 4 points per column keeps, of each run
// of consecutive points that fall in one column, the first, the lowest, the highest and the last
// (M4 aggregation: the polyline covers the same pixels as the full one); its min-max band becomes
// a band-only series holding the band's envelope per run; markers are dropped (they would merge
// into a line). The panel's note says so. Bar panels and panels with fewer points come back as
// they are. render() applies it at twice the pixel width of each panel.
Panel decimate_for_width(const Panel& p, int columns);

// Data range helper shared with the figure builders: [min, max] of the finite values of the
// series' y (and bands), only positive values when `positive_only`.
bool finite_range(const std::vector<Series>& series, bool positive_only, double& lo, double& hi);

}  // namespace mtt::plot
