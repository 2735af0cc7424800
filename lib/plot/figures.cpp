// Figure builders for ttt-plot: inner-loop (TTT "Figure 5"), gating, sweep, metrics.
#include "plot/figures.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <limits>
#include <map>
#include <set>
#include <sstream>
#include <unordered_map>

#include "core/error.h"

namespace mtt::plot {

namespace fs = std::filesystem;

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// Palette indices (plots/style.h order) with a fixed meaning in the inner-loop figure.
constexpr int kBlue = 0, kVermillion = 1, kBlack = 6;


std::string join(const std::vector<std::string>& v, const std::string& sep) {
  std::string o;
  for (std::size_t i = 0; i < v.size(); ++i) o += (i ? sep : "") + v[i];
  return o;
}

// The first 20 items and a count of the rest: an error naming the columns of a file with 10^5 of
// them stays a readable line.
std::string join_some(const std::vector<std::string>& v, const std::string& sep) {
  std::string o;
  const std::size_t shown = std::min<std::size_t>(v.size(), 20);
  for (std::size_t i = 0; i < shown; ++i) o += (i ? sep : "") + v[i];
  if (v.size() > shown) o += sep + "... " + std::to_string(v.size() - shown) + " more";
  return o;
}

bool wanted(const std::vector<int>& sel, int v) { return sel.empty() || std::find(sel.begin(), sel.end(), v) != sel.end(); }

// Distinct labels in first-seen order, each looked up in a hash map.
struct Index {
  std::unordered_map<std::string, std::size_t> id;
  std::vector<std::string> names;
  std::size_t of(const std::string& s) {
    auto [it, fresh] = id.emplace(s, names.size());
    if (fresh) names.push_back(s);
    return it->second;
  }
  // Reorders names by `less`; returns old id -> new id.
  template <class Less>
  std::vector<std::size_t> sort(Less less) {
    std::vector<std::size_t> order(names.size()), remap(names.size());
    for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
    std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return less(names[a], names[b]); });
    std::vector<std::string> sorted;
    for (std::size_t i = 0; i < order.size(); ++i) {
      remap[order[i]] = i;
      sorted.push_back(names[order[i]]);
    }
    names = std::move(sorted);
    return remap;
  }
};

}  // namespace

std::vector<double> moving_average(const std::vector<double>& v, int w) {
  if (w <= 1) return v;
  std::vector<double> out(v.size(), kNaN);
  const long n = static_cast<long>(v.size()), lo = (w - 1) / 2, hi = w / 2;
  if (static_cast<double>(n) * w > 1e7) {
    // Long series, wide windows: prefix sums (80-bit where the platform has them), linear time.
    std::vector<long double> sum(static_cast<std::size_t>(n) + 1, 0.0L);
    std::vector<long> cnt(static_cast<std::size_t>(n) + 1, 0);
    for (long i = 0; i < n; ++i) {
      const bool f = std::isfinite(v[i]);
      sum[i + 1] = sum[i] + (f ? v[i] : 0.0);
      cnt[i + 1] = cnt[i] + f;
    }
    for (long i = 0; i < n; ++i) {
      const long a = std::max(0L, i - lo), b = std::min(n - 1, i + hi) + 1;
      if (cnt[b] > cnt[a]) out[i] = static_cast<double>((sum[b] - sum[a]) / static_cast<long double>(cnt[b] - cnt[a]));
    }
    return out;
  }
  for (long i = 0; i < n; ++i) {
    double s = 0;
    int k = 0;
    for (long j = std::max(0L, i - lo); j <= std::min(n - 1, i + hi); ++j)
      if (std::isfinite(v[j])) {
        s += v[j];
        ++k;
      }
    if (k) out[i] = s / k;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------

Figure inner_loop_figure(const InnerLoopData& d, const InnerLoopOptions& o) {
  Figure f;
  f.title = o.title.empty() ? "TTT inner-loop reconstruction loss (" + fs::path(d.path).filename().string() + ")" : o.title;
  for (int l : o.layers) {
    bool found = false;
    for (const auto& r : d.layers) found = found || r.layer == l;
    if (!found) {
      std::vector<std::string> have;
      for (const auto& r : d.layers) have.push_back(std::to_string(r.layer));
      throw Error(d.path, "layer " + std::to_string(l), "not in the log (layers: " + join_some(have, ", ") + ")", ErrorKind::Usage);
    }
  }
  auto add_panel = [&](const InnerLoopLayer& r, const std::vector<double>& w0, const std::vector<double>& before,
                       const std::vector<double>& after, const std::string& title) {
    Panel p;
    p.title = title;
    std::string note;
    if (r.mini_batch_size > 0) note = "mini-batch " + std::to_string(r.mini_batch_size) + ", ";
    note += std::to_string(r.positions.size()) + " tokens";
    if (o.smooth > 1) note += ", moving average over " + std::to_string(o.smooth);
    p.note = note;
    p.xlabel = "token position t";
    p.ylabel = "reconstruction loss";
    p.logy = o.logy;
    // TTT paper Fig. 5: l(W0; x_t), l(W_{t-1}; x_t) before the update, l(W_t; x_t) after it.
    Series s0{"W0 (no update)", r.positions, moving_average(w0, o.smooth), {}, {}, kBlack, LineStyle::Solid};
    Series s1{"before update", r.positions, moving_average(before, o.smooth), {}, {}, kVermillion, LineStyle::Solid};
    Series s2{"after update", r.positions, moving_average(after, o.smooth), {}, {}, kBlue, LineStyle::Solid};
    p.series = {s0, s1, s2};
    // One legend for the whole figure (the paper's layout): on the first panel only.
    p.legend = f.panels.empty() ? LegendPos::Auto : LegendPos::None;
    f.panels.push_back(std::move(p));
  };
  for (const auto& r : d.layers) {
    if (!wanted(o.layers, r.layer)) continue;
    std::string title = "layer " + std::to_string(r.layer);
    if (!r.name.empty() && r.name != title) title += " (" + r.name + ")";
    if (!o.per_head) {
      add_panel(r, r.loss_w0, r.loss_before, r.loss_after, title);
      continue;
    }
    if (r.head_w0.empty())
      throw Error(d.path, "layer " + std::to_string(r.layer) + " per_head",
                  "no per-head losses in the log (record with per-head logging on)", ErrorKind::Input);
    for (int h : o.heads)
      if (h < 0 || h >= static_cast<int>(r.head_w0.size()))
        throw Error(d.path, "head " + std::to_string(h),
                    "out of range (layer " + std::to_string(r.layer) + " has " + std::to_string(r.head_w0.size()) + " heads)",
                    ErrorKind::Usage);
    for (std::size_t h = 0; h < r.head_w0.size(); ++h)
      if (wanted(o.heads, static_cast<int>(h)))
        add_panel(r, r.head_w0[h], r.head_before[h], r.head_after[h], "layer " + std::to_string(r.layer) + " head " + std::to_string(h));
  }
  if (f.panels.empty()) throw Error(d.path, "", "no layer selected", ErrorKind::Usage);
  validate(f, d.path);
  return f;
}

// ---------------------------------------------------------------------------------------------

double effective_gate(double alpha) { return std::tanh(std::clamp(alpha, -3.0, 3.0)); }

Figure gating_figure(const std::vector<GateCheckpoint>& cks, const GatingOptions& o) {
  if (cks.empty()) throw Error("", "", "no checkpoints", ErrorKind::Usage);
  // Runs in input order; checkpoints of a run by step.
  std::vector<std::string> runs;
  for (const auto& c : cks)
    if (std::find(runs.begin(), runs.end(), c.run) == runs.end()) runs.push_back(c.run);
  std::set<int> layers;
  std::set<std::string> dirs;
  for (const auto& c : cks)
    for (const auto& [k, v] : c.gates)
      if (wanted(o.layers, k.first)) {
        layers.insert(k.first);
        dirs.insert(k.second);
      }
  if (layers.empty()) throw Error(cks.front().source, "", "none of the selected layers has gates", ErrorKind::Usage);
  for (int l : o.layers)
    if (!layers.count(l))
      throw Error(cks.front().source, "layer " + std::to_string(l), "no gating_alpha for this layer", ErrorKind::Usage);

  std::vector<GateValue> values;
  if (o.value == GateValue::Alpha || o.value == GateValue::Both) values.push_back(GateValue::Alpha);
  if (o.value == GateValue::Tanh || o.value == GateValue::Both) values.push_back(GateValue::Tanh);

  Figure f;
  f.title = o.title.empty() ? "SSM gates across checkpoints" : o.title;
  f.columns = static_cast<int>(dirs.size());
  std::size_t channels = 0;
  for (GateValue gv : values) {
    const std::size_t first_panel = f.panels.size();
    for (const char* dir : {"forward", "backward"}) {
      if (!dirs.count(dir)) continue;
      Panel p;
      p.title = std::string(dir) + "_ssm_gating";
      p.ylabel = gv == GateValue::Alpha ? "alpha" : "tanh(clamp(alpha, -3, 3))";
      int ci = 0;
      for (int layer : layers) {
        for (const auto& run : runs) {
          std::vector<const GateCheckpoint*> pts;
          for (const auto& c : cks)
            if (c.run == run) pts.push_back(&c);
          bool have_steps = std::all_of(pts.begin(), pts.end(), [](const GateCheckpoint* c) { return c->step.has_value(); });
          if (have_steps)
            std::stable_sort(pts.begin(), pts.end(), [](auto* a, auto* b) { return *a->step < *b->step; });
          Series s;
          s.color = ci;
          s.line = std::string(dir) == "forward" ? LineStyle::Solid : LineStyle::Dashed;
          s.markers = pts.size() <= 40;
          const std::vector<float>* first = nullptr;
          bool frozen = true;
          int present = 0;
          for (std::size_t i = 0; i < pts.size(); ++i) {
            s.x.push_back(have_steps ? static_cast<double>(*pts[i]->step) : static_cast<double>(i));
            auto it = pts[i]->gates.find({layer, dir});
            if (it == pts[i]->gates.end()) {
              s.y.push_back(kNaN);
              s.lo.push_back(kNaN);
              s.hi.push_back(kNaN);
              continue;
            }
            const auto& a = it->second.alpha;
            channels = std::max(channels, a.size());
            ++present;
            if (!first) first = &a;
            else frozen = frozen && a == *first;  // bitwise-equal values: the gate never moved
            double sum = 0, lo = std::numeric_limits<double>::infinity(), hi = -lo;
            for (float v : a) {
              const double t = gv == GateValue::Alpha ? v : effective_gate(v);
              sum += t;
              lo = std::min(lo, t);
              hi = std::max(hi, t);
            }
            s.y.push_back(sum / static_cast<double>(a.size()));
            s.lo.push_back(lo);
            s.hi.push_back(hi);
          }
          if (present == 0) continue;
          s.label = (runs.size() > 1 && !run.empty() ? run + " " : "") + "layer " + std::to_string(layer);
          if (frozen && present >= 2) s.label += " (frozen)";
          if (!have_steps) p.xlabel = "checkpoint (input order)";
          p.series.push_back(std::move(s));
        }
        ++ci;
      }
      if (p.series.empty()) continue;
      if (p.xlabel.empty()) p.xlabel = "training step";
      f.panels.push_back(std::move(p));
    }
    // Forward and backward gates on one y scale, so a flat (frozen) gate reads as flat beside a
    // moving one.
    double lo = std::numeric_limits<double>::infinity(), hi = -lo;
    for (std::size_t i = first_panel; i < f.panels.size(); ++i) {
      double a, b;
      if (finite_range(f.panels[i].series, false, a, b)) {
        lo = std::min(lo, a);
        hi = std::max(hi, b);
      }
    }
    if (lo <= hi) {
      const double span = hi > lo ? hi - lo : std::max(std::abs(hi), 1e-3);
      for (std::size_t i = first_panel; i < f.panels.size(); ++i) {
        f.panels[i].fixed_y = true;
        f.panels[i].ymin = lo - 0.05 * span;
        f.panels[i].ymax = hi + 0.45 * span;  // room above the data for the legend (one per layer)
      }
    }
  }
  const std::string note = "mean of " + std::to_string(channels) + " channels, band: min-max";
  for (auto& p : f.panels) p.note = note;
  validate(f, cks.front().source);
  return f;
}

// ---------------------------------------------------------------------------------------------

Figure sweep_figure(const Table& t, const SweepPlotOptions& o) {
  auto col = [&](const std::string& name, const char* flag) {
    const int c = t.column(name);
    if (c < 0) {
      const std::vector<std::string>& cols = t.file_columns.empty() ? t.columns : t.file_columns;
      throw Error(t.path, std::string(flag) + " " + name, "no such column (columns: " + join_some(cols, ", ") + ")",
                  ErrorKind::Usage);
    }
    return c;
  };
  if (o.x.empty() || o.y.empty()) throw Error(t.path, "", "--x and --y are required", ErrorKind::Usage);
  const int cx = col(o.x, "--x"), cy = col(o.y, "--y");
  const int ch = o.hue.empty() ? -1 : col(o.hue, "--hue");
  // Axis values as labels; a null axis value (e.g. "no forced alpha") is its own category.
  auto label = [](const Cell& c) { return c.null ? std::string("none") : c.text; };
  auto where = [&](std::size_t r) {
    return t.lines[r] > 0 ? "line " + std::to_string(t.lines[r]) : "rows[" + std::to_string(r) + "]";
  };

  bool numeric_x = !o.bars;
  std::size_t skipped = 0;
  std::vector<std::size_t> use;
  use.reserve(t.rows.size());
  for (std::size_t r = 0; r < t.rows.size(); ++r) {
    const Cell& y = t.rows[r][cy];
    if (y.null) {
      ++skipped;  // a point that failed or has not finished: no value to draw
      continue;
    }
    if (!y.numeric) throw Error(t.path, where(r) + " " + o.y, "'" + y.text + "' is not a number");
    const Cell& x = t.rows[r][cx];
    if (!x.numeric) numeric_x = false;  // text, or null (an axis choice like force_alpha: null)
    use.push_back(r);
  }
  if (use.empty()) throw Error(t.path, o.y, "no numeric values for this metric in any row");
  for (std::size_t r : use) {
    if (o.logx && numeric_x && !(t.rows[r][cx].num > 0))
      throw Error(t.path, where(r) + " " + o.x, "--logx: value " + t.rows[r][cx].text + " is not positive", ErrorKind::Usage);
    if (o.logy && !(t.rows[r][cy].num > 0))
      throw Error(t.path, where(r) + " " + o.y, "--logy: value " + t.rows[r][cy].text + " is not positive", ErrorKind::Usage);
  }

  // Hue values and categorical x in first-seen order (numbers sorted), each looked up once per
  // row in a hash map: linear in the rows, whatever their number.
  auto number_or_nan = [](const std::string& s) {
    char* e = nullptr;
    const double v = std::strtod(s.c_str(), &e);
    return (!s.empty() && *e == '\0') ? v : kNaN;
  };
  // Ascending, NaN last: a strict weak order even for "nan" labels.
  auto num_less = [](double a, double b) { return std::isnan(b) ? !std::isnan(a) : a < b; };
  Index hue_ix, cat_ix;
  std::vector<std::size_t> row_hue(use.size()), row_cat(numeric_x ? 0 : use.size());
  bool numeric_hue = ch >= 0;
  for (std::size_t k = 0; k < use.size(); ++k) {
    const std::size_t r = use[k];
    if (ch >= 0 && !t.rows[r][ch].numeric) numeric_hue = false;
    row_hue[k] = hue_ix.of(ch >= 0 ? label(t.rows[r][ch]) : "");
    if (hue_ix.names.size() > kMaxHues)
      throw Error(t.path, "--hue " + o.hue, "more than " + std::to_string(kMaxHues) +
                  " distinct values: too many lines to tell apart (use a column with fewer values)", ErrorKind::Usage);
    if (!numeric_x) {
      row_cat[k] = cat_ix.of(label(t.rows[r][cx]));
      if (cat_ix.names.size() > kMaxCategories)
        throw Error(t.path, "--x " + o.x, "more than " + std::to_string(kMaxCategories) +
                    " distinct values: too many categories for bars (use a numeric column without --bars)",
                    ErrorKind::Usage);
    }
  }
  if (numeric_hue) {
    const auto remap = hue_ix.sort([&](const std::string& a, const std::string& b) {
      return num_less(number_or_nan(a), number_or_nan(b));
    });
    for (auto& h : row_hue) h = remap[h];
  }
  // Categories that are numbers (and "none") in numeric order, "none" first.
  if (!numeric_x && std::all_of(cat_ix.names.begin(), cat_ix.names.end(), [&](const std::string& s) {
        char* e = nullptr;
        std::strtod(s.c_str(), &e);
        return s == "none" || (!s.empty() && *e == '\0');
      })) {
    const auto remap = cat_ix.sort([&](const std::string& a, const std::string& b) {
      if (a == "none" || b == "none") return a == "none" && b != "none";
      return num_less(number_or_nan(a), number_or_nan(b));
    });
    for (auto& c : row_cat) c = remap[c];
  }
  const std::vector<std::string>& hues = hue_ix.names;
  const std::vector<std::string>& xcats = cat_ix.names;

  struct Agg {
    double x = 0, sum = 0, lo = std::numeric_limits<double>::infinity(), hi = -std::numeric_limits<double>::infinity();
    int n = 0;
    void add(double y) {
      sum += y;
      n += 1;
      lo = std::min(lo, y);
      hi = std::max(hi, y);
    }
  };
  // Points sharing (hue, x) are averaged: numeric x by value (sorted per hue), categorical x by
  // category.
  std::vector<std::vector<Agg>> groups(hues.size());
  std::size_t bad_x = 0;
  if (numeric_x) {
    std::vector<std::vector<std::pair<double, double>>> pts(hues.size());
    for (std::size_t k = 0; k < use.size(); ++k) {
      const double x = t.rows[use[k]][cx].num;
      if (!std::isfinite(x)) {
        ++bad_x;  // "nan"/"inf" parse as numbers but have no place on the axis
        continue;
      }
      pts[row_hue[k]].push_back({x, t.rows[use[k]][cy].num});
    }
    for (std::size_t h = 0; h < hues.size(); ++h) {
      auto& v = pts[h];
      std::stable_sort(v.begin(), v.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
      for (std::size_t i = 0; i < v.size(); ++i) {
        if (i == 0 || v[i].first != v[i - 1].first) groups[h].push_back(Agg{v[i].first});
        groups[h].back().add(v[i].second);
      }
    }
  } else {
    for (auto& g : groups) g.resize(xcats.size());
    for (std::size_t k = 0; k < use.size(); ++k) groups[row_hue[k]][row_cat[k]].add(t.rows[use[k]][cy].num);
  }
  int max_n = 0;
  for (const auto& g : groups)
    for (const auto& a : g) max_n = std::max(max_n, a.n);

  Panel p;
  p.title = o.y + " vs " + o.x + (ch >= 0 ? " by " + o.hue : "");
  p.xlabel = o.x;
  p.ylabel = o.y;
  p.logx = o.logx && numeric_x;
  p.logy = o.logy;
  if (!numeric_x) p.categories = xcats;
  std::vector<std::string> notes;
  if (max_n > 1) notes.push_back("mean over the other axes (up to " + std::to_string(max_n) + " points), " + (numeric_x ? "band" : "whisker") + " min-max");
  if (skipped) notes.push_back(std::to_string(skipped) + " without " + o.y);
  if (bad_x) notes.push_back(std::to_string(bad_x) + " with a non-finite " + o.x);
  p.note = join(notes, "; ");
  for (std::size_t hi_ = 0; hi_ < hues.size(); ++hi_) {
    const std::string& h = hues[hi_];
    Series s;
    s.label = ch >= 0 ? o.hue + "=" + h : (hues.size() == 1 ? o.y : "");
    s.color = static_cast<int>(hi_);
    for (const Agg& a : groups[hi_]) {
      const bool none = a.n == 0;  // a category this hue has no point in
      if (numeric_x) s.x.push_back(a.x);
      s.y.push_back(none ? kNaN : a.sum / a.n);
      s.lo.push_back(none ? kNaN : a.lo);
      s.hi.push_back(none ? kNaN : a.hi);
    }
    s.markers = numeric_x;
    if (max_n <= 1) {
      s.lo.clear();
      s.hi.clear();
    }
    p.series.push_back(std::move(s));
  }
  if (ch < 0 && hues.size() == 1) p.legend = LegendPos::None;
  Figure f;
  f.title = o.title;  // one panel: its own title says what it shows
  f.panels.push_back(std::move(p));
  validate(f, t.path);
  return f;
}

// ---------------------------------------------------------------------------------------------

Figure metrics_figure(const MetricsRun& r, const MetricsOptions& o) {
  std::vector<std::string> names = o.metrics;
  auto has = [&](const std::string& m) {
    return r.train.fields.count(m) || (r.eval && (r.eval->fields.count(m) || r.eval->fields.count("eval_" + m)));
  };
  if (names.empty()) {
    for (const char* m : {"loss", "lr", "grad_norm"})
      if (has(m)) names.push_back(m);
    if (names.empty())
      for (const auto& [k, v] : r.train.fields)
        if (names.size() < 4) names.push_back(k);
  }
  for (const auto& m : names)
    if (!has(m)) {
      std::vector<std::string> have;
      for (const auto& [k, v] : r.train.fields) have.push_back(k);
      throw Error(r.train.path, m, "no such numeric field (fields: " + join_some(have, ", ") + ")", ErrorKind::Usage);
    }
  if (names.empty()) throw Error(r.train.path, "", "no numeric fields besides step");
  Figure f;
  f.title = o.title.empty() ? "Training metrics: " + fs::path(r.dir).filename().string() : o.title;
  f.columns = std::min<int>(3, static_cast<int>(names.size()));
  for (const auto& m : names) {
    Panel p;
    p.title = m;
    p.xlabel = "step";
    p.ylabel = m;
    p.logy = o.logy;
    if (auto it = r.train.fields.find(m); it != r.train.fields.end()) {
      Series s{"train", r.train.step, it->second, {}, {}, 0};
      if (o.smooth > 1) {
        Series sm{"train, mean of " + std::to_string(o.smooth), r.train.step, moving_average(it->second, o.smooth), {}, {}, 0};
        s.color = 5;  // the raw curve in the lighter blue under its average
        p.series.push_back(std::move(s));
        p.series.push_back(std::move(sm));
      } else {
        p.series.push_back(std::move(s));
      }
    }
    if (r.eval) {
      auto it = r.eval->fields.find(m);
      if (it == r.eval->fields.end()) it = r.eval->fields.find("eval_" + m);
      if (it != r.eval->fields.end()) {
        Series s{"eval", r.eval->step, it->second, {}, {}, 1};
        s.markers = r.eval->step.size() <= 60;
        p.series.push_back(std::move(s));
      }
    }
    if (p.series.size() == 1 && p.series[0].label == "train") p.legend = LegendPos::None;
    f.panels.push_back(std::move(p));
  }
  validate(f, r.train.path);
  return f;
}

}  // namespace mtt::plot
