// PLplot renderer for plot::Figure. One PLplot stream per call (plmkstrm / plend1), so figures
// can be rendered one after another in one process. Inputs are validated before PLplot is
// touched: PLplot's own fatal errors end the process (plexit), ours must not reach it.
#include <plplot.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <limits>
#include <string>
#include <vector>

#include "core/atomic_file.h"
#include "core/error.h"
#include "plot/figure.h"

namespace mtt::plot {

namespace fs = std::filesystem;

Format format_from_path(const std::string& path) {
  std::string ext = fs::path(path).extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return std::tolower(c); });
  if (ext == ".png") return Format::Png;
  if (ext == ".svg") return Format::Svg;
  if (ext == ".pdf") return Format::Pdf;
  throw Error(path, "", "unknown output format '" + ext + "' (use .png, .svg or .pdf)", ErrorKind::Usage);
}

const char* format_name(Format f) {
  switch (f) {
    case Format::Png: return "png";
    case Format::Svg: return "svg";
    case Format::Pdf: return "pdf";
  }
  return "?";
}

bool finite_range(const std::vector<Series>& series, bool positive_only, double& lo, double& hi) {
  lo = std::numeric_limits<double>::infinity();
  hi = -lo;
  auto take = [&](double v) {
    if (!std::isfinite(v) || (positive_only && v <= 0)) return;
    lo = std::min(lo, v);
    hi = std::max(hi, v);
  };
  for (const auto& s : series) {
    for (double v : s.y) take(v);
    for (double v : s.lo) take(v);
    for (double v : s.hi) take(v);
  }
  return lo <= hi;
}

void validate(const Figure& fig, const std::string& source) {
  if (fig.panels.empty()) throw Error(source, "", "nothing to plot (no panels)");
  for (std::size_t p = 0; p < fig.panels.size(); ++p) {
    const Panel& pn = fig.panels[p];
    const std::string pk = "panel '" + (pn.title.empty() ? std::to_string(p) : pn.title) + "'";
    if (pn.series.empty()) throw Error(source, pk, "nothing to plot (no series)");
    bool any = false;
    for (const auto& s : pn.series) {
      const std::string sk = pk + " series '" + s.label + "'";
      const std::size_t n = pn.categories.empty() ? s.x.size() : pn.categories.size();
      if (s.y.size() != n) throw Error(source, sk, "x and y lengths differ", ErrorKind::Internal);
      if ((!s.lo.empty() && s.lo.size() != n) || (!s.hi.empty() && s.hi.size() != n) || s.lo.size() != s.hi.size())
        throw Error(source, sk, "band lengths differ from x", ErrorKind::Internal);
      for (std::size_t i = 0; i < n; ++i) {
        const bool xok = !pn.categories.empty() || (std::isfinite(s.x[i]) && (!pn.logx || s.x[i] > 0));
        const bool yok = std::isfinite(s.y[i]) && (!pn.logy || s.y[i] > 0);
        any = any || (xok && yok);
      }
    }
    if (!any)
      throw Error(source, pk,
                  std::string("nothing to plot (no finite") + (pn.logx || pn.logy ? ", positive" : "") + " points)");
  }
}

namespace {

// PLplot treats '#' as the start of an escape sequence in text.
std::string esc(const std::string& s) {
  std::string o;
  for (char c : s) {
    if (c == '#') o += "##";
    else if (c == '\n' || c == '\r') o += ' ';
    else o += c;
  }
  return o;
}

// cmap0 layout: 0 background, 1 foreground, 2 grid, then the palette, then the palette again
// with the band alpha.
constexpr int kBg = 0, kFg = 1, kGridCol = 2, kPal0 = 3;

struct Ctx {
  const Style& st;
  int npal;
  int pal(int i) const { return kPal0 + ((i % npal) + npal) % npal; }
  int band(int i) const { return kPal0 + npal + ((i % npal) + npal) % npal; }
};

int line_style_code(LineStyle l) {
  switch (l) {
    case LineStyle::Solid: return 1;
    case LineStyle::Dashed: return 3;
    case LineStyle::Dotted: return 2;
  }
  return 1;
}

double tx(double v, bool log) { return log ? std::log10(v) : v; }
bool ok(double v, bool log) { return std::isfinite(v) && (!log || v > 0); }

// Lines are broken at points that cannot be drawn (non-finite, or non-positive on a log axis).
void draw_polyline(const std::vector<double>& x, const std::vector<double>& y, bool logx, bool logy) {
  std::vector<PLFLT> px, py;
  auto flush = [&] {
    if (px.size() >= 2) plline(static_cast<PLINT>(px.size()), px.data(), py.data());
    px.clear();
    py.clear();
  };
  for (std::size_t i = 0; i < x.size(); ++i) {
    if (ok(x[i], logx) && ok(y[i], logy)) {
      px.push_back(tx(x[i], logx));
      py.push_back(tx(y[i], logy));
    } else {
      flush();
    }
  }
  flush();
}

void draw_band(const std::vector<double>& x, const std::vector<double>& lo, const std::vector<double>& hi, bool logx,
               bool logy) {
  // One polygon per run of drawable points: along hi, back along lo.
  std::size_t i = 0;
  while (i < x.size()) {
    std::vector<PLFLT> px, py;
    std::size_t j = i;
    while (j < x.size() && ok(x[j], logx) && ok(lo[j], logy) && ok(hi[j], logy)) ++j;
    if (j - i >= 2) {
      for (std::size_t k = i; k < j; ++k) {
        px.push_back(tx(x[k], logx));
        py.push_back(tx(hi[k], logy));
      }
      for (std::size_t k = j; k-- > i;) {
        px.push_back(tx(x[k], logx));
        py.push_back(tx(lo[k], logy));
      }
      plfill(static_cast<PLINT>(px.size()), px.data(), py.data());
    }
    i = std::max(j, i + 1);
  }
}

// Nice padded range in plotting coordinates.
void pad_range(double& lo, double& hi, double frac) {
  if (!(lo < hi)) {
    const double m = std::abs(lo) > 0 ? std::abs(lo) * 0.1 : 0.5;
    lo -= m;
    hi += m;
    return;
  }
  const double d = (hi - lo) * frac;
  lo -= d;
  hi += d;
}

// Ticks for a log axis spanning under two decades ([lo, hi] in log10 units), where PLplot would
// label one decade or none: the data's own values when there are few (a sweep's 8, 16, 32, 64),
// else a 1-2-5 (or 1..9) sequence.
std::vector<double> short_log_ticks(double lo, double hi, std::vector<double> data) {
  std::vector<double> t;
  std::sort(data.begin(), data.end());
  data.erase(std::unique(data.begin(), data.end()), data.end());
  if (!data.empty() && data.size() <= 10) return data;
  for (const std::vector<int>& mant : {std::vector<int>{1, 2, 5}, std::vector<int>{1, 2, 3, 4, 5, 6, 7, 8, 9}}) {
    t.clear();
    for (int e = static_cast<int>(std::floor(lo)) - 1; e <= static_cast<int>(std::ceil(hi)) + 1; ++e)
      for (int m : mant) {
        const double v = m * std::pow(10.0, e);
        if (std::log10(v) >= lo && std::log10(v) <= hi) t.push_back(v);
      }
    if (t.size() >= 3) return t;
  }
  // Under a factor of ~3: evenly spaced "nice" values of the data range.
  const double a = std::pow(10.0, lo), b = std::pow(10.0, hi);
  const double raw = (b - a) / 5, mag = std::pow(10.0, std::floor(std::log10(raw)));
  const double step = raw / mag < 1.5 ? mag : raw / mag < 3.5 ? 2 * mag : raw / mag < 7.5 ? 5 * mag : 10 * mag;
  t.clear();
  for (double v = std::ceil(a / step) * step; v <= b * (1 + 1e-12); v += step)
    if (v > 0) t.push_back(v);
  return t;
}

std::string tick_text(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", v);
  return buf;
}

struct Box {
  double x0, x1, y0, y1;  // normalized page coordinates of the viewport
};

void draw_panel(const Panel& pn, const Box& vp, const Ctx& c, double page_w_mm, double page_h_mm) {
  const Style& st = c.st;
  const bool bars = !pn.categories.empty();
  const bool logx = pn.logx && !bars;

  // x range (plotting coordinates).
  double xlo = std::numeric_limits<double>::infinity(), xhi = -xlo;
  if (bars) {
    xlo = -0.5;
    xhi = static_cast<double>(pn.categories.size()) - 0.5;
  } else {
    for (const auto& s : pn.series)
      for (std::size_t i = 0; i < s.x.size(); ++i)
        if (ok(s.x[i], logx) && ok(s.y[i], pn.logy)) {
          xlo = std::min(xlo, tx(s.x[i], logx));
          xhi = std::max(xhi, tx(s.x[i], logx));
        }
    pad_range(xlo, xhi, 0.02);
  }
  // y range.
  double ylo, yhi;
  if (pn.fixed_y) {
    ylo = pn.ymin;
    yhi = pn.ymax;
  } else {
    finite_range(pn.series, pn.logy, ylo, yhi);
  }
  ylo = tx(ylo, pn.logy);
  yhi = tx(yhi, pn.logy);
  if (bars && !pn.logy) {
    ylo = std::min(ylo, 0.0);
    yhi = std::max(yhi, 0.0);
    pad_range(ylo, yhi, 0.05);
    if (pn.legend != LegendPos::None && pn.series.size() > 1 && !pn.fixed_y) yhi += 0.12 * (yhi - ylo);  // legend room
    if (std::min(pn.fixed_y ? pn.ymin : 0.0, 0.0) == 0.0 && ylo < 0 && yhi > 0 && !pn.fixed_y) {
      // Bars of non-negative values start at the axis, not below it.
      bool any_negative = false;
      for (const auto& s : pn.series)
        for (double v : s.y) any_negative = any_negative || (std::isfinite(v) && v < 0);
      if (!any_negative) ylo = 0;
    }
  } else {
    pad_range(ylo, yhi, 0.05);
  }

  // Legend corner, chosen before the window is set: when every corner would cover data, the
  // y range grows so the legend fits above the data in the top right.
  std::vector<std::string> ltexts;
  for (const auto& s : pn.series)
    if (!s.label.empty()) ltexts.push_back(esc(s.label));
  LegendPos where = pn.legend;
  std::size_t best = 0;
  double lh_f_est = 0;
  if (where == LegendPos::Auto && !ltexts.empty()) {
    // Estimated legend box in viewport fractions; pick the corner covering the fewest drawn
    // points (lines, band edges), top right first on ties.
    std::size_t chars = 0;
    for (const auto& t : ltexts) chars = std::max(chars, t.size());
    const double px_per_mm = 72.0 / 25.4;
    const double ch_px = st.char_height_mm * st.text_scale * px_per_mm;
    const double vw_px = (vp.x1 - vp.x0) * page_w_mm * px_per_mm, vh_px = (vp.y1 - vp.y0) * page_h_mm * px_per_mm;
    const double lw_f = std::min(1.0, (0.07 * vw_px + ch_px * (1.6 + 0.62 * static_cast<double>(chars))) / vw_px + 0.03);
    const double lh_f = std::min(1.0, (ch_px * (1.8 * static_cast<double>(ltexts.size()) + 1.0)) / vh_px + 0.04);
    const LegendPos order[] = {LegendPos::TopRight, LegendPos::TopLeft, LegendPos::BottomRight, LegendPos::BottomLeft};
    best = std::numeric_limits<std::size_t>::max();
    lh_f_est = lh_f;
    for (LegendPos cand : order) {
      const bool right = cand == LegendPos::TopRight || cand == LegendPos::BottomRight;
      const bool topc = cand == LegendPos::TopRight || cand == LegendPos::TopLeft;
      std::size_t hits = 0;
      auto count = [&](double x, double y) {
        if (!ok(x, logx) || !ok(y, pn.logy)) return;
        const double fx = (tx(x, logx) - xlo) / (xhi - xlo), fy = (tx(y, pn.logy) - ylo) / (yhi - ylo);
        const bool inx = right ? fx >= 1 - lw_f : fx <= lw_f;
        const bool iny = topc ? fy >= 1 - lh_f : fy <= lh_f;
        hits += inx && iny;
      };
      for (const auto& s : pn.series) {
        if (bars) {
          for (std::size_t i = 0; i < s.y.size(); ++i)
            if (ok(s.y[i], pn.logy))  // a bar covers everything below its top
              for (double f = 0; f <= 1.0; f += 0.1) count(static_cast<double>(i), pn.logy ? std::pow(10, ylo + f * (tx(s.y[i], true) - ylo)) : f * s.y[i]);
          continue;
        }
        for (std::size_t i = 0; i < s.x.size(); ++i) {
          count(s.x[i], s.y[i]);
          if (!s.lo.empty()) {
            count(s.x[i], s.lo[i]);
            count(s.x[i], s.hi[i]);
          }
        }
      }
      if (hits < best) {
        best = hits;
        where = cand;
      }
    }
  }
  if (pn.legend == LegendPos::Auto && !ltexts.empty() && best > 0 && !pn.fixed_y) {
    yhi = ylo + (yhi - ylo) / (1 - std::min(0.6, lh_f_est));
    where = LegendPos::TopRight;
  }

  plvpor(vp.x0, vp.x1, vp.y0, vp.y1);
  plwind(xlo, xhi, ylo, yhi);

  // Grid under the data, then the frame, ticks and numbers on top.
  const bool custom_x = logx && xhi - xlo < 2, custom_y = pn.logy && yhi - ylo < 2;
  std::vector<double> xticks, yticks;
  if (custom_x) {
    std::vector<double> xs;
    for (const auto& s : pn.series)
      for (double v : s.x)
        if (ok(v, true)) xs.push_back(v);
    xticks = short_log_ticks(xlo, xhi, xs);
  }
  if (custom_y) yticks = short_log_ticks(ylo, yhi, {});
  std::string xo = bars || custom_x ? "" : "g", yo = custom_y ? "" : "g";
  if (logx && !custom_x) xo += "l";
  if (pn.logy && !custom_y) yo += "l";
  plcol0(kGridCol);
  plwidth(0.5 * st.axis_width);
  pllsty(1);
  plbox(xo.c_str(), 0, 0, yo.c_str(), 0, 0);
  for (double v : xticks) {
    PLFLT gx[2] = {std::log10(v), std::log10(v)}, gy[2] = {ylo, yhi};
    plline(2, gx, gy);
  }
  for (double v : yticks) {
    PLFLT gx[2] = {xlo, xhi}, gy[2] = {std::log10(v), std::log10(v)};
    plline(2, gx, gy);
  }

  // Bands first (translucent), then bars, lines, markers.
  int next = 0;
  std::vector<int> colors;
  for (const auto& s : pn.series) colors.push_back(s.color >= 0 ? s.color : next++);
  for (std::size_t k = 0; k < pn.series.size(); ++k) {
    const Series& s = pn.series[k];
    if (!bars && !s.lo.empty()) {
      plcol0(c.band(colors[k]));
      draw_band(s.x, s.lo, s.hi, logx, pn.logy);
    }
  }
  if (bars) {
    const std::size_t ns = pn.series.size();
    const double slot = st.bar_width / static_cast<double>(ns);
    for (std::size_t k = 0; k < ns; ++k) {
      const Series& s = pn.series[k];
      plcol0(c.pal(colors[k]));
      for (std::size_t i = 0; i < pn.categories.size(); ++i) {
        if (!ok(s.y[i], pn.logy)) continue;
        const double x0 = static_cast<double>(i) - st.bar_width / 2 + slot * static_cast<double>(k);
        const double base = pn.logy ? ylo : 0.0;
        PLFLT bx[4] = {x0 + 0.05 * slot, x0 + 0.95 * slot, x0 + 0.95 * slot, x0 + 0.05 * slot};
        PLFLT by[4] = {base, base, tx(s.y[i], pn.logy), tx(s.y[i], pn.logy)};
        plfill(4, bx, by);
      }
      if (!s.lo.empty()) {  // min-max whiskers
        plcol0(kFg);
        plwidth(st.axis_width);
        for (std::size_t i = 0; i < pn.categories.size(); ++i) {
          if (!ok(s.lo[i], pn.logy) || !ok(s.hi[i], pn.logy)) continue;
          const double xm = static_cast<double>(i) - st.bar_width / 2 + slot * (static_cast<double>(k) + 0.5);
          PLFLT wx[2] = {xm, xm}, wy[2] = {tx(s.lo[i], pn.logy), tx(s.hi[i], pn.logy)};
          plline(2, wx, wy);
        }
      }
    }
  } else {
    for (std::size_t k = 0; k < pn.series.size(); ++k) {
      const Series& s = pn.series[k];
      plcol0(c.pal(colors[k]));
      if (s.draw_line) {
        plwidth(st.line_width);
        pllsty(line_style_code(s.line));
        draw_polyline(s.x, s.y, logx, pn.logy);
        pllsty(1);
      }
      if (s.markers) {
        // Filled 12-gons of radius marker_size_mm, converted to world units per axis.
        const double wx_per_mm = (xhi - xlo) / ((vp.x1 - vp.x0) * page_w_mm);
        const double wy_per_mm = (yhi - ylo) / ((vp.y1 - vp.y0) * page_h_mm);
        for (std::size_t i = 0; i < s.x.size(); ++i) {
          if (!ok(s.x[i], logx) || !ok(s.y[i], pn.logy)) continue;
          PLFLT mx[12], my[12];
          for (int t = 0; t < 12; ++t) {
            const double a = 2 * M_PI * t / 12;
            mx[t] = tx(s.x[i], logx) + st.marker_size_mm * wx_per_mm * std::cos(a);
            my[t] = tx(s.y[i], pn.logy) + st.marker_size_mm * wy_per_mm * std::sin(a);
          }
          plfill(12, mx, my);
        }
      }
    }
  }

  // Frame, ticks, numbers.
  plcol0(kFg);
  plwidth(st.axis_width);
  plschr(st.char_height_mm, st.text_scale);
  std::string xb = bars || custom_x ? "bc" : "bcnst", yb = custom_y ? "bc" : "bcnstv";
  if (logx && !custom_x) xb += "l";
  if (pn.logy && !custom_y) yb += "l";
  plbox(xb.c_str(), 0, 0, yb.c_str(), 0, 0);
  {
    // Custom log ticks: a short inward tick on each frame side and the value as the label.
    const double tick_mm = 2.0;
    const double ty = tick_mm * (yhi - ylo) / ((vp.y1 - vp.y0) * page_h_mm);
    const double txw = tick_mm * (xhi - xlo) / ((vp.x1 - vp.x0) * page_w_mm);
    for (double v : xticks) {
      const double lx = std::log10(v);
      PLFLT a[2] = {lx, lx}, b0[2] = {ylo, ylo + ty}, b1[2] = {yhi, yhi - ty};
      plline(2, a, b0);
      plline(2, a, b1);
      plmtex("b", 1.5, (lx - xlo) / (xhi - xlo), 0.5, tick_text(v).c_str());
    }
    for (double v : yticks) {
      const double ly = std::log10(v);
      PLFLT a0[2] = {xlo, xlo + txw}, a1[2] = {xhi, xhi - txw}, b[2] = {ly, ly};
      plline(2, a0, b);
      plline(2, a1, b);
      plmtex("lv", 0.6, (ly - ylo) / (yhi - ylo), 1.0, tick_text(v).c_str());
    }
  }
  if (bars) {
    const double n = static_cast<double>(pn.categories.size());
    for (std::size_t i = 0; i < pn.categories.size(); ++i)
      plmtex("b", 1.3, (static_cast<double>(i) + 0.5) / n, 0.5, esc(pn.categories[i]).c_str());
  }

  // Axis titles and panel title.
  plschr(st.char_height_mm, st.label_scale);
  if (!pn.xlabel.empty()) plmtex("b", bars ? 3.0 : 2.8, 0.5, 0.5, esc(pn.xlabel).c_str());
  if (!pn.ylabel.empty()) plmtex("l", 4.2, 0.5, 0.5, esc(pn.ylabel).c_str());
  if (!pn.note.empty()) {
    plschr(st.char_height_mm, st.text_scale * 0.9);
    plmtex("t", 0.9, 0.5, 0.5, esc(pn.note).c_str());
  }
  if (!pn.title.empty()) {
    plschr(st.char_height_mm, st.title_scale);
    plmtex("t", pn.note.empty() ? 1.0 : 2.3, 0.5, 0.5, esc(pn.title).c_str());
  }

  // Legend.
  std::vector<std::string> texts;
  std::vector<const char*> text_ptrs;
  std::vector<PLINT> opts, tcol, bcol, bpat, lcol, lsty, scol, snum;
  std::vector<PLFLT> bscale, bwidth, lwidth, sscale;
  std::vector<const char*> syms;
  for (std::size_t k = 0; k < pn.series.size(); ++k) {
    const Series& s = pn.series[k];
    if (s.label.empty()) continue;
    texts.push_back(esc(s.label));
    opts.push_back(bars ? PL_LEGEND_COLOR_BOX : PL_LEGEND_LINE);
    tcol.push_back(kFg);
    bcol.push_back(c.pal(colors[k]));
    bpat.push_back(0);
    bscale.push_back(0.8);
    bwidth.push_back(1);
    lcol.push_back(c.pal(colors[k]));
    lsty.push_back(line_style_code(s.line));
    lwidth.push_back(st.line_width);
    scol.push_back(c.pal(colors[k]));
    sscale.push_back(1);
    snum.push_back(1);
    syms.push_back("");
  }
  if (pn.legend != LegendPos::None && !texts.empty()) {
    for (const auto& t : texts) text_ptrs.push_back(t.c_str());
    PLINT pos = PL_POSITION_INSIDE;
    switch (where) {
      case LegendPos::TopRight: pos |= PL_POSITION_TOP | PL_POSITION_RIGHT; break;
      case LegendPos::TopLeft: pos |= PL_POSITION_TOP | PL_POSITION_LEFT; break;
      case LegendPos::BottomRight: pos |= PL_POSITION_BOTTOM | PL_POSITION_RIGHT; break;
      case LegendPos::BottomLeft: pos |= PL_POSITION_BOTTOM | PL_POSITION_LEFT; break;
      case LegendPos::None:
      case LegendPos::Auto: break;
    }
    PLFLT lw = 0, lh = 0;
    plschr(st.char_height_mm, st.text_scale);
    plwidth(st.axis_width);
    pllegend(&lw, &lh, PL_LEGEND_BACKGROUND | PL_LEGEND_BOUNDING_BOX, pos, 0.02, 0.03, 0.07, kBg, kGridCol, 1, 0, 0,
             static_cast<PLINT>(texts.size()), opts.data(), 0.8, 0.85, 1.8, 0.0, tcol.data(), text_ptrs.data(),
             bcol.data(), bpat.data(), bscale.data(), bwidth.data(), lcol.data(), lsty.data(), lwidth.data(),
             scol.data(), sscale.data(), snum.data(), syms.data());
  }
}

// A private file in $TMPDIR, removed with this object.
struct ScratchFile {
  std::string path;
  std::string create(Format fmt) {
    const char* t = std::getenv("TMPDIR");
    std::string tmpl = std::string(t && *t ? t : "/tmp") + "/ttt-plot-XXXXXX." + format_name(fmt);
    const int fd = ::mkstemps(tmpl.data(), 4);
    if (fd < 0) throw Error(tmpl, "", std::string("cannot create a scratch file: ") + std::strerror(errno));
    ::close(fd);
    path = tmpl;
    return path;
  }
  ~ScratchFile() {
    if (!path.empty()) ::unlink(path.c_str());
  }
};

// PLplot's drivers do not report write errors: a full disk (or a file-size limit) leaves a file
// that is empty or cut short. Each format has a fixed ending to check for.
void check_complete(const std::string& file, Format fmt, const std::string& path) {
  std::string tail;
  std::error_code ec;
  const auto size = fs::file_size(file, ec);
  if (!ec && size > 0) {
    std::FILE* f = std::fopen(file.c_str(), "rb");
    if (f) {
      const long n = static_cast<long>(std::min<std::uintmax_t>(size, 2048));
      tail.resize(static_cast<std::size_t>(n));
      if (std::fseek(f, -n, SEEK_END) != 0 || std::fread(tail.data(), 1, tail.size(), f) != tail.size()) tail.clear();
      std::fclose(f);
    }
  }
  bool ok = false;
  if (fmt == Format::Png) {
    static const char kIend[] = "\0\0\0\0IEND\xAE\x42\x60\x82";
    ok = tail.size() >= 12 && tail.compare(tail.size() - 12, 12, std::string(kIend, 12)) == 0;
  } else if (fmt == Format::Svg) {
    const auto end = tail.find_last_not_of(" \t\r\n");
    ok = end != std::string::npos && end >= 5 && tail.compare(end - 5, 6, "</svg>") == 0;
  } else {
    ok = tail.find("%%EOF") != std::string::npos;
  }
  if (ok) return;
  const auto space = fs::space(fs::path(file).parent_path(), ec);
  throw Error(path, "", std::string("the ") + format_name(fmt) + " driver's output is " +
                            (tail.empty() ? "empty" : "cut short") + ": disk full or file too large? (" +
                            (ec ? std::string("free space unknown") : std::to_string(space.available) + " bytes free") +
                            ")");
}

// Ends the PLplot stream on every path out of render().
struct Stream {
  PLINT id = -1;
  bool inited = false;
  ~Stream() {
    if (inited) {
      plsstrm(id);
      plend1();
    }
  }
};

}  // namespace

void render(const Figure& fig, const std::string& path, const Style& st) {
  const Format fmt = format_from_path(path);
  validate(fig, path);
  if (st.palette.empty()) throw Error(path, "palette", "the style has no colours", ErrorKind::Usage);

  const int np = static_cast<int>(fig.panels.size());
  const int cols = std::max(1, std::min(np, fig.columns > 0 ? fig.columns : st.max_columns));
  const int rows = (np + cols - 1) / cols;
  const double title_px = fig.title.empty() ? 0 : 46;
  // A lone panel gets a wider page, so its title and note fit.
  const int W = fig.width > 0 ? fig.width : std::max(cols * st.panel_width, cols == 1 ? st.panel_width * 4 / 3 : 0);
  const int H = fig.height > 0 ? fig.height : static_cast<int>(rows * st.panel_height + title_px);

  // PLplot writes the file itself, by name: into the output's temporary, or, for a device or a
  // FIFO (written in place), into a scratch file copied there once complete.
  AtomicFile out(path);
  ScratchFile scratch;
  const std::string draw_to = out.special() ? scratch.create(fmt) : out.temp_path();
  // PLplot reports a drawing it refused (plabort: "Invalid limits", ...) here instead of on stderr,
  // and goes on with a broken figure: a refusal is an error, not a file.
  PLINT pl_errcode = 0;
  char pl_errmsg[1024] = {0};
  {
    Stream s;
    plmkstrm(&s.id);
    plsError(&pl_errcode, pl_errmsg);
    const char* dev = fmt == Format::Png ? "pngcairo" : fmt == Format::Svg ? "svg" : "pdfcairo";
    plsdev(dev);
    plsfnam(draw_to.c_str());
    // Page size: pixels for PNG; for the vector formats the same numbers in points.
    plspage(0, 0, W, H, 0, 0);
    const int npal = static_cast<int>(st.palette.size());
    plscmap0n(kPal0 + 2 * npal);
    plscolbg(st.background.r, st.background.g, st.background.b);
    plscol0(kFg, st.foreground.r, st.foreground.g, st.foreground.b);
    plscol0(kGridCol, st.grid.r, st.grid.g, st.grid.b);
    for (int i = 0; i < npal; ++i) {
      const Rgb& c = st.palette[i];
      plscol0(kPal0 + i, c.r, c.g, c.b);
      plscol0a(kPal0 + npal + i, c.r, c.g, c.b, st.band_alpha);
    }
    plinit();
    s.inited = true;
    const PLINT fam = st.font_family == "serif" ? PL_FCI_SERIF : st.font_family == "mono" ? PL_FCI_MONO : PL_FCI_SANS;
    plsfont(fam, PL_FCI_UPRIGHT, PL_FCI_MEDIUM);
    pladv(0);
    plvpor(0, 1, 0, 1);  // whole page, for the page size in mm and the figure title
    PLFLT mx0, mx1, my0, my1;
    plgspa(&mx0, &mx1, &my0, &my1);
    const double page_w_mm = mx1 - mx0, page_h_mm = my1 - my0;

    if (!fig.title.empty()) {
      plcol0(kFg);
      plschr(st.char_height_mm, st.suptitle_scale);
      plvpor(0, 1, 0, 1 - title_px / H);
      plmtex("t", 1.2, 0.5, 0.5, esc(fig.title).c_str());
    }
    // Grid of cells below the title band; margins in pixels so text fits at any figure size.
    const double top = 1 - title_px / H;
    const double cell_w = 1.0 / cols, cell_h = top / rows;
    for (int p = 0; p < np; ++p) {
      const int r = p / cols, cidx = p % cols;
      const double cx0 = cidx * cell_w, cy1 = top - r * cell_h;
      const double ml = 78.0 / W, mr = 18.0 / W;
      // Dense series reduced to what the panel's pixel columns (twice over) can show.
      const int columns = static_cast<int>(std::ceil(2.0 * (cell_w - ml - mr) * W));
      const Panel pn = decimate_for_width(fig.panels[p], columns);
      const double mb = (pn.categories.empty() ? 58.0 : 70.0) / H, mt = (pn.note.empty() ? 38.0 : 58.0) / H;
      Box vp{cx0 + ml, cx0 + cell_w - mr, cy1 - cell_h + mb, cy1 - mt};
      draw_panel(pn, vp, Ctx{st, npal}, page_w_mm, page_h_mm);
    }
  }  // plend1(): the driver flushes and closes the temporary file

  if (pl_errcode != 0) {
    std::string why(pl_errmsg);
    if (const auto nl = why.find_last_of('\n'); nl != std::string::npos) why = why.substr(nl + 1);
    throw Error(path, "", "PLplot refused the figure: " + why + " (a panel too small for its text? see --style)");
  }
  check_complete(draw_to, fmt, path);
  if (out.special()) out.write(read_file(draw_to));
  out.commit();
}

}  // namespace mtt::plot
