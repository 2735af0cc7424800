// Decimation of dense line series to the pixel width of their panel (figure.h).
#include <algorithm>
#include <cmath>
#include <limits>
#include <string>

#include "plot/figure.h"

namespace mtt::plot {

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

double tx(double v, bool log) { return log ? std::log10(v) : v; }
bool ok(double v, bool log) { return std::isfinite(v) && (!log || v > 0); }

std::string grouped(std::size_t n) {
  std::string s = std::to_string(n), o;
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (i && (s.size() - i) % 3 == 0) o += ',';
    o += s[i];
  }
  return o;
}

// Runs of consecutive drawable points in one pixel column, reduced to at most 4 points each.
class Reducer {
 public:
  Reducer(double xlo, double xhi, int columns, bool logx) : xlo_(xlo), span_(xhi - xlo), cols_(columns), logx_(logx) {}
  long column(double x) const {
    const double f = (tx(x, logx_) - xlo_) / span_;
    return std::clamp(static_cast<long>(std::floor(f * cols_)), 0L, static_cast<long>(cols_) - 1);
  }

 private:
  double xlo_, span_;
  int cols_;
  bool logx_;
};

}  // namespace

Panel decimate_for_width(const Panel& in, int columns) {
  if (!in.categories.empty() || columns <= 0) return in;
  const bool logx = in.logx, logy = in.logy;
  double xlo = std::numeric_limits<double>::infinity(), xhi = -xlo;
  std::size_t largest = 0;
  for (const auto& s : in.series) {
    largest = std::max(largest, s.x.size());
    for (std::size_t i = 0; i < s.x.size(); ++i)
      if (ok(s.x[i], logx) && ok(s.y[i], logy)) {
        xlo = std::min(xlo, tx(s.x[i], logx));
        xhi = std::max(xhi, tx(s.x[i], logx));
      }
  }
  const std::size_t limit = 4 * static_cast<std::size_t>(columns);
  if (largest <= limit || !(xlo < xhi)) return in;
  const Reducer red(xlo, xhi, columns, logx);

  Panel out;  // every field but the series (copying those would copy the 10^6 points)
  out.title = in.title;
  out.note = in.note;
  out.xlabel = in.xlabel;
  out.ylabel = in.ylabel;
  out.logx = in.logx;
  out.logy = in.logy;
  out.legend = in.legend;
  out.fixed_y = in.fixed_y;
  out.ymin = in.ymin;
  out.ymax = in.ymax;
  int next = 0;  // colours as draw_panel would assign them, fixed before series are added
  std::size_t n_in = 0, n_out = 0;
  for (const Series& s : in.series) {
    const int color = s.color >= 0 ? s.color : next++;
    if (s.x.size() <= limit) {
      Series t = s;
      t.color = color;
      out.series.push_back(std::move(t));
      continue;
    }
    n_in += s.x.size();
    Series line;
    line.label = s.label;
    line.color = color;
    line.line = s.line;
    line.draw_line = s.draw_line;
    line.markers = !s.draw_line && s.markers;  // a marker-only series keeps markers on the kept points
    auto push_break = [&](Series& t, bool band) {
      if (!t.x.empty() && !std::isnan(t.x.back())) {
        t.x.push_back(kNaN);
        t.y.push_back(kNaN);
        if (band) t.lo.push_back(kNaN), t.hi.push_back(kNaN);
      }
    };
    // The line: first, lowest, highest, last point of each run, in their original order.
    {
      long run_col = -1;
      std::size_t first = 0, lo = 0, hi = 0, last = 0;
      auto flush = [&] {
        if (run_col < 0) return;
        std::size_t idx[4] = {first, lo, hi, last};
        std::sort(idx, idx + 4);
        for (int k = 0; k < 4; ++k) {
          if (k && idx[k] == idx[k - 1]) continue;
          line.x.push_back(s.x[idx[k]]);
          line.y.push_back(s.y[idx[k]]);
        }
        run_col = -1;
      };
      for (std::size_t i = 0; i < s.x.size(); ++i) {
        if (!(ok(s.x[i], logx) && ok(s.y[i], logy))) {
          flush();
          push_break(line, false);
          continue;
        }
        const long c = red.column(s.x[i]);
        if (c != run_col) {
          flush();
          run_col = c;
          first = lo = hi = last = i;
          continue;
        }
        if (s.y[i] < s.y[lo]) lo = i;
        if (s.y[i] > s.y[hi]) hi = i;
        last = i;
      }
      flush();
    }
    n_out += line.x.size();
    // The band: per run, its envelope at the run's first and last x.
    if (!s.lo.empty()) {
      Series band;
      band.color = color;
      band.draw_line = false;
      long run_col = -1;
      std::size_t first = 0, last = 0;
      double blo = 0, bhi = 0;
      auto flush = [&] {
        if (run_col < 0) return;
        for (std::size_t i : {first, last}) {
          band.x.push_back(s.x[i]);
          band.y.push_back(kNaN);
          band.lo.push_back(blo);
          band.hi.push_back(bhi);
          if (first == last) break;
        }
        run_col = -1;
      };
      for (std::size_t i = 0; i < s.x.size(); ++i) {
        if (!(ok(s.x[i], logx) && ok(s.lo[i], logy) && ok(s.hi[i], logy))) {
          flush();
          push_break(band, true);
          continue;
        }
        const long c = red.column(s.x[i]);
        if (c != run_col) {
          flush();
          run_col = c;
          first = last = i;
          blo = s.lo[i];
          bhi = s.hi[i];
          continue;
        }
        blo = std::min(blo, s.lo[i]);
        bhi = std::max(bhi, s.hi[i]);
        last = i;
      }
      flush();
      n_out += band.x.size();
      out.series.push_back(std::move(band));
    }
    out.series.push_back(std::move(line));
  }
  const std::string note = grouped(n_in) + " points drawn as " + grouped(n_out) +
                           " (first, min, max, last per pixel column)";
  out.note = out.note.empty() ? note : out.note + "; " + note;
  return out;
}

}  // namespace mtt::plot
