// ttt-plot at scale (issue 15): dense series are drawn from O(pixel columns) points that keep
// every column's extremes, sweep summaries are grouped in O(n log n) and hold only the plotted
// columns, and the limits on lines and categories are usage errors. (Speed itself is measured by
// bench/plot_bench, not here.)
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <random>
#include <sstream>
#include <tuple>

#include "core/atomic_file.h"
#include "core/error.h"
#include "plot/figures.h"
#include "plot/inputs.h"
#include "svg_probe.h"
#include "test_util.h"

namespace {

namespace pl = mtt::plot;
using mtt::test::TempDir;

long column_of(double x, double lo, double hi, int cols) {
  return std::clamp(static_cast<long>(std::floor((x - lo) / (hi - lo) * cols)), 0L, static_cast<long>(cols) - 1);
}

// Runs of drawable points separated by undrawable ones.
int drawable_runs(const std::vector<double>& x, const std::vector<double>& y) {
  int runs = 0;
  bool in = false;
  for (std::size_t i = 0; i < x.size(); ++i) {
    const bool ok = std::isfinite(x[i]) && std::isfinite(y[i]);
    if (ok && !in) ++runs;
    in = ok;
  }
  return runs;
}

pl::Panel random_walk_panel(std::size_t n, bool band) {
  std::mt19937_64 rng(5);
  std::normal_distribution<double> nd(0, 1);
  pl::Series s;
  s.label = "walk";
  double y = 0;
  for (std::size_t i = 0; i < n; ++i) {
    y += nd(rng);
    s.x.push_back(static_cast<double>(i) * 0.5);
    s.y.push_back((i / 7919) % 5 == 3 && i % 7919 < 20 ? NAN : y);  // a few gaps
    if (band) {
      s.lo.push_back(y - 1 - std::abs(nd(rng)));
      s.hi.push_back(y + 1 + std::abs(nd(rng)));
    }
  }
  s.markers = true;
  pl::Panel p;
  p.title = "walk";
  p.series.push_back(s);
  return p;
}

}  // namespace

TEST(PlotScale, DecimationKeepsEveryColumnsExtremesEndsAndGaps) {
  const std::size_t n = 200000;
  const int cols = 500;
  const pl::Panel in = random_walk_panel(n, true);
  const pl::Panel out = pl::decimate_for_width(in, cols);
  ASSERT_EQ(out.series.size(), 2u);  // the band on its own, then the line
  const pl::Series& band = out.series[0];
  const pl::Series& line = out.series[1];
  const pl::Series& s = in.series[0];
  EXPECT_EQ(line.label, "walk");
  EXPECT_TRUE(band.label.empty());
  EXPECT_FALSE(band.draw_line);
  EXPECT_EQ(line.color, 0);  // the colour the full series would have had, on both
  EXPECT_EQ(band.color, 0);
  EXPECT_FALSE(line.markers);
  EXPECT_LE(line.x.size(), 4u * cols + 200);
  EXPECT_NE(out.note.find("200,000 points drawn as"), std::string::npos) << out.note;

  const double lo = s.x.front(), hi = s.x.back();
  std::map<long, std::pair<double, double>> full, kept, full_band, kept_band;
  auto widen = [](std::map<long, std::pair<double, double>>& m, long c, double a, double b) {
    auto it = m.find(c);
    if (it == m.end()) m[c] = {a, b};
    else it->second = {std::min(it->second.first, a), std::max(it->second.second, b)};
  };
  for (std::size_t i = 0; i < n; ++i) {
    if (std::isfinite(s.y[i])) widen(full, column_of(s.x[i], lo, hi, cols), s.y[i], s.y[i]);
    widen(full_band, column_of(s.x[i], lo, hi, cols), s.lo[i], s.hi[i]);  // the band has no gaps
  }
  for (std::size_t i = 0; i < line.x.size(); ++i)
    if (std::isfinite(line.y[i])) widen(kept, column_of(line.x[i], lo, hi, cols), line.y[i], line.y[i]);
  for (std::size_t i = 0; i < band.x.size(); ++i)
    if (std::isfinite(band.lo[i])) widen(kept_band, column_of(band.x[i], lo, hi, cols), band.lo[i], band.hi[i]);
  EXPECT_EQ(kept, full);  // exact: every column's lowest and highest point is drawn
  EXPECT_EQ(kept_band, full_band);
  EXPECT_EQ(line.x.front(), s.x.front());
  EXPECT_EQ(line.x.back(), s.x.back());
  EXPECT_EQ(drawable_runs(line.x, line.y), drawable_runs(s.x, s.y));  // the gaps stay gaps
}

TEST(PlotScale, SmallOrBarPanelsAreLeftAsTheyAre) {
  const pl::Panel small = random_walk_panel(1000, false);
  const pl::Panel same = pl::decimate_for_width(small, 500);
  ASSERT_EQ(same.series.size(), 1u);
  EXPECT_EQ(same.series[0].x, small.series[0].x);
  EXPECT_TRUE(same.series[0].markers);
  EXPECT_EQ(same.note, small.note);
  pl::Panel bars;
  bars.categories = {"a", "b"};
  pl::Series b;
  b.y = {1, 2};
  bars.series.push_back(b);
  EXPECT_EQ(pl::decimate_for_width(bars, 1).series[0].y, b.y);
}

TEST(PlotScale, SweepOfManyRowsGroupsLikeABruteForceMean) {
  std::ostringstream csv;
  csv << "id,x,h,y,unused\n";
  const int n = 120000;
  for (int i = 0; i < n; ++i)
    csv << "p" << i << "," << (i % 4000) * 0.25 << ",h" << i % 3 << "," << std::sin(i * 0.001) + (i % 11) << ",zz\n";
  const auto t = pl::parse_summary_csv(csv.str(), "big.csv", {"x", "y", "h"});
  EXPECT_EQ(t.columns, (std::vector<std::string>{"x", "h", "y"}));  // file order, only those kept
  EXPECT_EQ(t.file_columns.size(), 5u);
  ASSERT_EQ(t.rows.size(), static_cast<std::size_t>(n));
  const auto f = pl::sweep_figure(t, {"x", "y", "h", false, false, false, ""});
  const auto& p = f.panels[0];
  ASSERT_EQ(p.series.size(), 3u);
  // The same means, straight from the table's cells.
  std::map<std::pair<std::string, double>, std::pair<double, int>> brute;
  for (const auto& row : t.rows) {
    auto& b = brute[{row[1].text, row[0].num}];
    b.first += row[2].num;
    b.second += 1;
  }
  for (int h = 0; h < 3; ++h) {
    const auto& s = p.series[h];
    EXPECT_EQ(s.label, "h=h" + std::to_string(h));
    ASSERT_EQ(s.x.size(), 4000u);
    for (std::size_t k = 0; k < s.x.size(); ++k) {
      if (k) ASSERT_LT(s.x[k - 1], s.x[k]);
      const auto& b = brute.at({"h" + std::to_string(h), s.x[k]});
      EXPECT_NEAR(s.y[k], b.first / b.second, 1e-9);
    }
  }
  // A missing column names every column of the file, not only the kept ones.
  try {
    pl::sweep_figure(t, {"nope", "y", "", false, false, false, ""});
    ADD_FAILURE();
  } catch (const mtt::Error& e) {
    EXPECT_NE(std::string(e.what()).find("unused"), std::string::npos) << e.what();
    EXPECT_EQ(e.exit_status(), mtt::kExitUsage);
  }
}

TEST(PlotScale, TooManyLinesOrCategoriesAreUsageErrors) {
  std::ostringstream a, b;
  a << "id,x,h,y\n";
  for (std::size_t i = 0; i <= pl::kMaxHues; ++i) a << "p" << i << ",1,seed" << i << ",2\n";
  b << "id,x,y\n";
  for (std::size_t i = 0; i <= pl::kMaxCategories; ++i) b << "p" << i << ",name" << i << ",2\n";
  const auto ta = pl::parse_summary_csv(a.str(), "a.csv"), tb = pl::parse_summary_csv(b.str(), "b.csv");
  for (auto [t, o, frag] : {std::tuple{&ta, pl::SweepPlotOptions{"x", "y", "h", false, false, false, ""}, "--hue h"},
                            std::tuple{&tb, pl::SweepPlotOptions{"x", "y", "", false, false, false, ""}, "--x x"}}) {
    try {
      pl::sweep_figure(*t, o);
      ADD_FAILURE() << frag;
    } catch (const mtt::Error& e) {
      EXPECT_NE(std::string(e.what()).find(frag), std::string::npos) << e.what();
      EXPECT_EQ(e.exit_status(), mtt::kExitUsage);
    }
  }
}

TEST(PlotScale, NonFiniteXIsCountedNotSorted) {
  const auto t = pl::parse_summary_csv("id,x,y\np0,1,1\np1,nan,2\np2,inf,3\np3,2,4\n", "n.csv");
  const auto f = pl::sweep_figure(t, {"x", "y", "", false, false, false, ""});
  EXPECT_EQ(f.panels[0].series[0].x, (std::vector<double>{1, 2}));
  EXPECT_NE(f.panels[0].note.find("2 with a non-finite x"), std::string::npos) << f.panels[0].note;
}

TEST(PlotScale, JsonNumberOverflowIsAnInputError) {
  try {
    pl::parse_summary_json(R"({"axes":["a"],"metrics":["m"],"rows":[{"a":1,"m":1e999}]})", "s.json");
    ADD_FAILURE();
  } catch (const mtt::Error& e) {
    EXPECT_NE(std::string(e.what()).find("s.json"), std::string::npos) << e.what();
    EXPECT_EQ(e.exit_status(), mtt::kExitInput);
  }
}

TEST(PlotScale, WideMovingAverageAgreesWithTheDirectSum) {
  std::vector<double> v(20000);
  for (std::size_t i = 0; i < v.size(); ++i) v[i] = 3.0 + std::sin(0.01 * static_cast<double>(i)) + (i % 97 == 0 ? NAN : 0.0);
  const int w = 1001;  // n * w > 1e7: the linear-time path
  const auto m = pl::moving_average(v, w);
  const long n = static_cast<long>(v.size()), lo = (w - 1) / 2, hi = w / 2;
  for (long i = 0; i < n; i += 37) {
    double s = 0;
    int k = 0;
    for (long j = std::max(0L, i - lo); j <= std::min(n - 1, i + hi); ++j)
      if (std::isfinite(v[j])) s += v[j], ++k;
    EXPECT_NEAR(m[i], s / k, 1e-12) << i;
  }
}

TEST(PlotScale, DenseFigureRendersSmallAndSaysSo) {
  pl::Figure f;
  f.panels.push_back(random_walk_panel(300000, true));
  TempDir d;
  const auto path = (d / "dense.svg").string();
  pl::render(f, path);
  const std::string svg = mtt::read_file(path);
  EXPECT_LT(svg.size(), 2'000'000u);  // 300k points would be ~10 MB of coordinates
  // Text is written as character references; the probe's decoder reads it (its regexes recurse
  // per character and are not meant for a 100 kB polyline).
  const std::string text = mtt::plot::test::SvgProbe::decode(svg);
  EXPECT_NE(text.find("300,000 points drawn as"), std::string::npos);
}
