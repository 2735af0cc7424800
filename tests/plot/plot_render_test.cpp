// Figures rendered from the fixtures, checked structurally: SVG series counts, legend labels and
// axis titles (PLplot's svg driver keeps text as <text>), drawn coordinates against the data,
// PNG and PDF file validity, and atomic output.
#include <gtest/gtest.h>

#include <array>
#include <cmath>
#include <cstring>
#include <fstream>
#include <sstream>

#include "core/atomic_file.h"
#include "core/error.h"
#include "plot/figures.h"
#include "plot/inputs.h"
#include "svg_probe.h"
#include "test_util.h"

namespace {

namespace pl = mtt::plot;
using mtt::plot::test::SvgProbe;
using mtt::test::fixtures_dir;
using mtt::test::TempDir;

std::string fx(const std::string& rel) { return (fixtures_dir() / "plot" / rel).string(); }
std::string slurp(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}
SvgProbe render_svg(const pl::Figure& f, const TempDir& d, const std::string& name = "f.svg") {
  pl::render(f, (d / name).string());
  return SvgProbe(slurp(d / name));
}
std::size_t files_in(const std::filesystem::path& dir) {
  std::size_t n = 0;
  for (auto& e : std::filesystem::directory_iterator(dir)) n += e.is_regular_file();
  return n;
}

// Least-squares fit of drawn coordinates against data; returns the worst residual (SVG units).
double affine_residual(const std::vector<double>& data, const std::vector<double>& drawn) {
  const double n = static_cast<double>(data.size());
  double sx = 0, sy = 0, sxx = 0, sxy = 0;
  for (std::size_t i = 0; i < data.size(); ++i) {
    sx += data[i];
    sy += drawn[i];
    sxx += data[i] * data[i];
    sxy += data[i] * drawn[i];
  }
  const double a = (n * sxy - sx * sy) / (n * sxx - sx * sx), b = (sy - a * sx) / n;
  double worst = 0;
  for (std::size_t i = 0; i < data.size(); ++i) worst = std::max(worst, std::abs(a * data[i] + b - drawn[i]));
  return worst;
}

TEST(PlotRender, InnerLoopSvgHasThreeSeriesPerLayerAndOneLegend) {
  const auto d = pl::read_inner_loop(fx("run"));
  TempDir t;
  const SvgProbe s = render_svg(pl::inner_loop_figure(d, {}), t);
  // 2 layers x (W0, before, after), each one unbroken 192-point line in its style colour.
  EXPECT_EQ(s.data_lines(192), 6);
  EXPECT_EQ(s.lines_with("#000000", 192), 2);
  EXPECT_EQ(s.lines_with("#D55E00", 192), 2);
  EXPECT_EQ(s.lines_with("#0072B2", 192), 2);
  // One legend for the figure, axis titles on every panel, panel and figure titles.
  EXPECT_EQ(s.count_text("W0 (no update)"), 1);
  EXPECT_EQ(s.count_text("before update"), 1);
  EXPECT_EQ(s.count_text("after update"), 1);
  EXPECT_EQ(s.count_text("token position t"), 2);
  EXPECT_EQ(s.count_text("reconstruction loss"), 2);
  EXPECT_EQ(s.count_text("layer 29 (transformer.layers.29)"), 1);
  EXPECT_EQ(s.count_text("layer 31 (transformer.layers.31)"), 1);
  EXPECT_EQ(s.count_text("TTT inner-loop reconstruction loss (inner_loop.json)"), 1);
  EXPECT_EQ(s.count_text("mini-batch 16, 192 tokens"), 2);
  // The drawn line is the data: an affine image of (position, loss) on both axes, up to PLplot's
  // integer device grid and the driver's 2 decimals (~0.03 SVG units).
  std::vector<double> xs, ys;
  for (const auto& l : s.lines)
    if (l.stroke == "#0072B2" && l.pts.size() == 192) {
      for (auto [x, y] : l.pts) {
        xs.push_back(x);
        ys.push_back(y);
      }
      break;  // the first panel: layer 29
    }
  ASSERT_EQ(ys.size(), 192u);
  EXPECT_LT(affine_residual(d.layers[0].loss_after, ys), 0.05);
  EXPECT_LT(affine_residual(d.layers[0].positions, xs), 0.05);
  // ... and not the other layer's curve.
  EXPECT_GT(affine_residual(d.layers[1].loss_after, ys), 0.5);
}

TEST(PlotRender, InnerLoopPerHeadAndLayerSelection) {
  const auto d = pl::read_inner_loop(fx("run"));
  pl::InnerLoopOptions o;
  o.per_head = true;
  o.heads = {0, 2};
  o.layers = {31};
  TempDir t;
  const auto f = pl::inner_loop_figure(d, o);
  ASSERT_EQ(f.panels.size(), 2u);
  const SvgProbe s = render_svg(f, t);
  EXPECT_EQ(s.data_lines(192), 6);
  EXPECT_EQ(s.count_text("layer 31 head 0"), 1);
  EXPECT_EQ(s.count_text("layer 31 head 2"), 1);
  EXPECT_EQ(s.count_text("layer 29 head 0"), 0);
  o.heads = {4};
  EXPECT_THROW(pl::inner_loop_figure(d, o), mtt::Error);
  o.heads = {};
  o.layers = {7};
  try {
    pl::inner_loop_figure(d, o);
    ADD_FAILURE();
  } catch (const mtt::Error& e) {
    EXPECT_NE(std::string(e.what()).find("layers: 29, 31"), std::string::npos) << e.what();
    EXPECT_EQ(e.kind(), mtt::ErrorKind::Usage);
  }
}

TEST(PlotRender, MovingAverageIsCentredAndSkipsNaN) {
  const double nan = std::nan("");
  const auto m = pl::moving_average({1, 2, 3, nan, 5, 6}, 3);
  ASSERT_EQ(m.size(), 6u);
  EXPECT_DOUBLE_EQ(m[0], 1.5);        // (1+2)/2 at the edge
  EXPECT_DOUBLE_EQ(m[1], 2.0);        // (1+2+3)/3
  EXPECT_DOUBLE_EQ(m[2], 2.5);        // (2+3)/2, NaN skipped
  EXPECT_DOUBLE_EQ(m[3], 4.0);        // (3+5)/2
  EXPECT_DOUBLE_EQ(m[5], 5.5);
  EXPECT_EQ(pl::moving_average({1, 2}, 1), (std::vector<double>{1, 2}));
}

TEST(PlotRender, GatingMarksTheFrozenBackwardGatesAndDrawsTheMeans) {
  const auto g = pl::read_gates({fx("run")});
  const auto f = pl::gating_figure(g, {});
  ASSERT_EQ(f.panels.size(), 4u);  // {alpha, tanh} x {forward, backward}
  EXPECT_EQ(f.panels[0].title, "forward_ssm_gating");
  EXPECT_EQ(f.panels[1].title, "backward_ssm_gating");
  for (const auto& p : f.panels) {
    ASSERT_EQ(p.series.size(), 3u);
    for (const auto& s : p.series) {
      const bool frozen = s.label.find("(frozen)") != std::string::npos;
      EXPECT_EQ(frozen, p.title == "backward_ssm_gating") << s.label;
      EXPECT_EQ(s.x, (std::vector<double>{100, 200, 300, 400}));
    }
  }
  // Means recomputed here: mean over channels of tanh(clamp(alpha, -3, 3)), per step.
  const auto& tanh_fwd = f.panels[2].series[1];  // layer 30
  ASSERT_EQ(tanh_fwd.label, "layer 30");
  for (std::size_t k = 0; k < 4; ++k) {
    const auto& a = g[k].gates.at({30, "forward"}).alpha;
    double m = 0, lo = 1e9, hi = -1e9;
    for (float v : a) {
      const double t = std::tanh(std::min(3.0, std::max(-3.0, static_cast<double>(v))));
      m += t / a.size();
      lo = std::min(lo, t);
      hi = std::max(hi, t);
    }
    EXPECT_NEAR(tanh_fwd.y[k], m, 1e-12);
    EXPECT_NEAR(tanh_fwd.lo[k], lo, 1e-12);
    EXPECT_NEAR(tanh_fwd.hi[k], hi, 1e-12);
  }
  // Frozen is flat: every backward point equal.
  for (double v : f.panels[1].series[0].y) EXPECT_EQ(v, f.panels[1].series[0].y[0]);
  // Forward and backward share a y scale per value row.
  EXPECT_TRUE(f.panels[0].fixed_y && f.panels[1].fixed_y);
  EXPECT_EQ(f.panels[0].ymin, f.panels[1].ymin);
  EXPECT_EQ(f.panels[2].ymax, f.panels[3].ymax);
  EXPECT_DOUBLE_EQ(pl::effective_gate(5.0), std::tanh(3.0));

  TempDir t;
  const SvgProbe s = render_svg(f, t);
  EXPECT_EQ(s.count_text("layer 29 (frozen)"), 2);
  EXPECT_EQ(s.count_text("layer 29"), 2);
  EXPECT_EQ(s.count_text("forward_ssm_gating"), 2);
  EXPECT_EQ(s.count_text("backward_ssm_gating"), 2);
  EXPECT_EQ(s.count_text("training step"), 4);
  EXPECT_EQ(s.count_text("alpha"), 2);
  EXPECT_EQ(s.count_text("tanh(clamp(alpha, -3, 3))"), 2);
  // Markers: layer 29 (palette 0) has 4 checkpoints in each of the 4 panels; forward lines are
  // solid 4-point lines, one per layer and value row.
  EXPECT_EQ(s.fills_with("#0072B2", 13), 16);
  EXPECT_EQ(s.lines_with("#0072B2", 4), 2);
  EXPECT_EQ(s.lines_with("#D55E00", 4), 2);
  EXPECT_EQ(s.lines_with("#009E73", 4), 2);

  pl::GatingOptions o;
  o.value = pl::GateValue::Tanh;
  o.layers = {31};
  const auto f2 = pl::gating_figure(g, o);
  ASSERT_EQ(f2.panels.size(), 2u);
  EXPECT_EQ(f2.panels[0].series.size(), 1u);
  EXPECT_EQ(f2.panels[0].series[0].label, "layer 31");
}

// The fork's gate from the PyPI reference stack (torch + safetensors): the figure's tanh means
// of the fixture checkpoints equal torch's.
TEST(PlotRender, GatingMeansMatchTorch) {
  const std::string py = MTT_PYTHON;
  if (py.empty() || !std::filesystem::exists(py)) GTEST_SKIP() << "torch venv python not configured (MTT_PYTHON)";
  const auto g = pl::read_gates({fx("run")});
  const auto f = pl::gating_figure(g, {});
  const std::string script =
      "import sys,torch\nfrom safetensors.torch import load_file\n"
      "for s in (100,200,300,400):\n"
      " t=load_file(sys.argv[1]+'/checkpoints/checkpoint_%06d/consolidated/lora.safetensors'%s)\n"
      " for l in (29,30,31):\n"
      "  a=t['transformer.layers.%d.seq_modeling_block.forward_ssm_gating.gating_alpha'%l].float()\n"
      "  print(s,l,'%.12e'%torch.tanh(a.clamp(-3,3)).double().mean().item())\n";
  TempDir t;
  std::ofstream(t / "ref.py") << script;
  const auto r = mtt::test::run_command(py + " " + (t / "ref.py").string() + " " + fx("run"));
  ASSERT_EQ(r.status, 0) << r.err;
  std::istringstream in(r.out);
  int step, layer, n = 0;
  double ref;
  while (in >> step >> layer >> ref) {
    const auto& s = f.panels[2].series[layer - 29];  // tanh row, forward panel
    const std::size_t k = static_cast<std::size_t>(step / 100 - 1);
    EXPECT_NEAR(s.y[k], ref, 1e-6) << step << " " << layer;
    ++n;
  }
  EXPECT_EQ(n, 12);
}

TEST(PlotRender, SweepLinesAverageOverOtherAxes) {
  const auto t = pl::read_summary(fx("sweep/summary.csv"));
  pl::SweepPlotOptions o;
  o.x = "mini_batch_size";
  o.y = "final_loss";
  o.hue = "recon_target";
  o.logx = true;
  const auto f = pl::sweep_figure(t, o);
  ASSERT_EQ(f.panels.size(), 1u);
  const auto& p = f.panels[0];
  ASSERT_EQ(p.series.size(), 2u);
  EXPECT_EQ(p.series[0].label, "recon_target=correct");
  EXPECT_EQ(p.series[0].x, (std::vector<double>{8, 16, 32, 64}));
  // Each point: mean of final_loss over ttt_base_lr, recomputed from the table.
  const int cx = t.column("mini_batch_size"), cy = t.column("final_loss"), ch = t.column("recon_target");
  for (std::size_t si = 0; si < 2; ++si)
    for (std::size_t k = 0; k < 4; ++k) {
      double sum = 0;
      int n = 0;
      for (const auto& row : t.rows)
        if (row[cx].num == p.series[si].x[k] && row[ch].text == (si == 0 ? "correct" : "legacy") && !row[cy].null) {
          sum += row[cy].num;
          ++n;
        }
      EXPECT_NEAR(p.series[si].y[k], sum / n, 1e-12);
    }
  EXPECT_NE(p.note.find("1 without final_loss"), std::string::npos) << p.note;

  TempDir d;
  const SvgProbe s = render_svg(f, d);
  EXPECT_EQ(s.lines_with("#0072B2", 4), 1);
  EXPECT_EQ(s.lines_with("#D55E00", 4), 1);
  for (const char* tick : {"8", "16", "32", "64"}) EXPECT_GE(s.count_text(tick), 1) << tick;
  EXPECT_EQ(s.count_text("recon_target=correct"), 1);
  EXPECT_EQ(s.count_text("recon_target=legacy"), 1);
  EXPECT_EQ(s.count_text("mini_batch_size"), 1);
  EXPECT_EQ(s.count_text("final_loss"), 1);
  // min-max bands (translucent fills) for both hues.
  int bands = 0;
  for (const auto& l : s.lines) bands += l.fill != "none" && l.fill_opacity < 0.5;
  EXPECT_EQ(bands, 2);
}

TEST(PlotRender, SweepBarsForCategoricalAxis) {
  const auto t = pl::read_summary(fx("sweep"));
  pl::SweepPlotOptions o;
  o.x = "recon_target";
  o.y = "final_loss";
  o.hue = "ttt_base_lr";
  const auto f = pl::sweep_figure(t, o);
  EXPECT_EQ(f.panels[0].categories, (std::vector<std::string>{"correct", "legacy"}));
  TempDir d;
  const SvgProbe s = render_svg(f, d);
  // Two bars per hue colour plus its legend swatch: closed rectangles (5 points).
  EXPECT_EQ(s.fills_with("#0072B2", 5), 3);
  EXPECT_EQ(s.fills_with("#D55E00", 5), 3);
  EXPECT_EQ(s.count_text("correct"), 1);
  EXPECT_EQ(s.count_text("legacy"), 1);
  EXPECT_EQ(s.count_text("ttt_base_lr=0.1"), 1);
  EXPECT_EQ(s.count_text("ttt_base_lr=1.0"), 1);
}

TEST(PlotRender, SweepNullAxisValueIsACategory) {
  // The gating experiment's force_alpha: null (trained gate) beside forced values.
  const auto t = pl::parse_summary_json(
      R"({"axes":["force_alpha","init"],"metrics":["eval_loss"],"rows":[
        {"force_alpha":0.5,"init":0.1,"eval_loss":2.0},{"force_alpha":null,"init":0.1,"eval_loss":1.5},
        {"force_alpha":0.0,"init":0.1,"eval_loss":3.0},{"force_alpha":null,"init":0.3,"eval_loss":1.7}]})",
      "g.json");
  const auto f = pl::sweep_figure(t, {"force_alpha", "eval_loss", "init", false, false, false, ""});
  const auto& p = f.panels[0];
  EXPECT_EQ(p.categories, (std::vector<std::string>{"none", "0.0", "0.5"}));
  ASSERT_EQ(p.series.size(), 2u);
  EXPECT_EQ(p.series[0].label, "init=0.1");
  EXPECT_EQ(p.series[0].y[0], 1.5);
  EXPECT_EQ(p.series[0].y[1], 3.0);
  EXPECT_EQ(p.series[0].y[2], 2.0);
  EXPECT_EQ(p.series[1].y[0], 1.7);
  EXPECT_TRUE(std::isnan(p.series[1].y[1]));  // no bar where the grid has no point
}

TEST(PlotRender, SweepErrors) {
  const auto t = pl::read_summary(fx("sweep/summary.csv"));
  auto err = [&](pl::SweepPlotOptions o) -> std::string {
    try {
      pl::sweep_figure(t, o);
    } catch (const mtt::Error& e) {
      return e.what();
    }
    return "";
  };
  EXPECT_NE(err({"nope", "final_loss", "", false, false, false, ""}).find("--x nope: no such column"), std::string::npos);
  EXPECT_NE(err({"mini_batch_size", "loss", "", false, false, false, ""}).find("--y loss"), std::string::npos);
  const auto bad = pl::parse_summary_csv("id,a,m\np0,0,1\np1,1,2\n", "s.csv");
  try {
    pl::sweep_figure(bad, {"a", "m", "", true, false, false, ""});
    ADD_FAILURE();
  } catch (const mtt::Error& e) {
    EXPECT_NE(std::string(e.what()).find("s.csv: line 2 a: --logx"), std::string::npos) << e.what();
  }
  const auto words = pl::parse_summary_csv("id,a,m\np0,0,fast\n", "w.csv");
  EXPECT_THROW(pl::sweep_figure(words, {"a", "m", "", false, false, false, ""}), mtt::Error);
  const auto empty = pl::parse_summary_csv("id,a,m\np0,0,\n", "e.csv");
  EXPECT_THROW(pl::sweep_figure(empty, {"a", "m", "", false, false, false, ""}), mtt::Error);
}

TEST(PlotRender, MetricsTrainAndEvalCurves) {
  const auto r = pl::read_metrics(fx("run"));
  const auto f = pl::metrics_figure(r, {});
  ASSERT_EQ(f.panels.size(), 3u);
  EXPECT_EQ(f.panels[0].title, "loss");
  EXPECT_EQ(f.panels[1].title, "lr");
  EXPECT_EQ(f.panels[2].title, "grad_norm");
  ASSERT_EQ(f.panels[0].series.size(), 2u);  // train + eval (eval_loss)
  EXPECT_EQ(f.panels[0].series[1].label, "eval");
  TempDir d;
  const SvgProbe s = render_svg(f, d);
  EXPECT_EQ(s.lines_with("#0072B2", 60), 3);
  EXPECT_EQ(s.lines_with("#D55E00", 6), 1);
  EXPECT_EQ(s.count_text("step"), 3);
  EXPECT_EQ(s.count_text("train"), 1);
  EXPECT_EQ(s.count_text("eval"), 1);
  pl::MetricsOptions o;
  o.metrics = {"wps"};
  EXPECT_EQ(pl::metrics_figure(r, o).panels.size(), 1u);
  o.metrics = {"nope"};
  EXPECT_THROW(pl::metrics_figure(r, o), mtt::Error);
}

// PNG: signature, IHDR size, every chunk's CRC, IEND last.
uint32_t crc32(const uint8_t* p, std::size_t n) {
  static std::array<uint32_t, 256> table = [] {
    std::array<uint32_t, 256> t{};
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = c & 1 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
      t[i] = c;
    }
    return t;
  }();
  uint32_t c = 0xFFFFFFFFu;
  for (std::size_t i = 0; i < n; ++i) c = table[(c ^ p[i]) & 0xFF] ^ (c >> 8);
  return c ^ 0xFFFFFFFFu;
}
uint32_t be32(const uint8_t* p) { return (uint32_t(p[0]) << 24) | (uint32_t(p[1]) << 16) | (uint32_t(p[2]) << 8) | p[3]; }

TEST(PlotRender, PngIsValid) {
  TempDir d;
  const auto f = pl::inner_loop_figure(pl::read_inner_loop(fx("run")), {});
  pl::render(f, (d / "f.PNG").string());  // extension case does not matter
  const std::string b = slurp(d / "f.PNG");
  const auto* u = reinterpret_cast<const uint8_t*>(b.data());
  ASSERT_GT(b.size(), 1000u);
  ASSERT_EQ(b.substr(0, 8), std::string("\x89PNG\r\n\x1a\n", 8));
  std::size_t off = 8;
  std::vector<std::string> chunks;
  while (off + 12 <= b.size()) {
    const uint32_t len = be32(u + off);
    ASSERT_LE(off + 12 + len, b.size());
    const std::string type = b.substr(off + 4, 4);
    EXPECT_EQ(be32(u + off + 8 + len), crc32(u + off + 4, 4 + len)) << type;
    if (type == "IHDR") {
      EXPECT_EQ(be32(u + off + 8), 1120u);  // 2 panels x 560
      EXPECT_EQ(be32(u + off + 12), 446u);  // 400 + the title band
    }
    chunks.push_back(type);
    off += 12 + len;
  }
  EXPECT_EQ(off, b.size());
  ASSERT_FALSE(chunks.empty());
  EXPECT_EQ(chunks.front(), "IHDR");
  EXPECT_EQ(chunks.back(), "IEND");
  EXPECT_NE(std::find(chunks.begin(), chunks.end(), "IDAT"), chunks.end());
}

TEST(PlotRender, PdfIsValid) {
  TempDir d;
  const auto f = pl::metrics_figure(pl::read_metrics(fx("run")), {});
  pl::render(f, (d / "m.pdf").string());
  const std::string b = slurp(d / "m.pdf");
  ASSERT_EQ(b.substr(0, 7), "%PDF-1.");
  const auto eof = b.rfind("%%EOF");
  ASSERT_NE(eof, std::string::npos);
  EXPECT_GE(eof + 7, b.size());  // at the end (maybe a newline after it)
  const auto sx = b.rfind("startxref");
  ASSERT_NE(sx, std::string::npos);
  const std::size_t xref = std::stoul(b.substr(sx + 9));
  ASSERT_LT(xref, b.size());
  // The cross-reference table (or stream object) is where startxref says.
  EXPECT_TRUE(b.compare(xref, 4, "xref") == 0 || std::isdigit(static_cast<unsigned char>(b[xref]))) << b.substr(xref, 20);
  std::size_t pages = 0;
  for (std::size_t p = b.find("/Type /Page"); p != std::string::npos; p = b.find("/Type /Page", p + 1))
    pages += b.compare(p, 12, "/Type /Pages") != 0;
  EXPECT_EQ(pages, 1u);
}

TEST(PlotRender, FailuresLeaveNoFile) {
  TempDir d;
  const auto out = (d / "keep.svg").string();
  mtt::write_file_atomic(out, "old");
  pl::Figure empty;
  EXPECT_THROW(pl::render(empty, out), mtt::Error);
  pl::Figure nan_only;
  nan_only.panels.push_back({});
  pl::Series nan_series;
  nan_series.x = {1, 2};
  nan_series.y = {std::nan(""), std::nan("")};
  nan_only.panels[0].series.push_back(nan_series);
  EXPECT_THROW(pl::render(nan_only, out), mtt::Error);
  pl::Figure logneg = nan_only;
  logneg.panels[0].series[0].y = {-1, 0};
  logneg.panels[0].logy = true;
  EXPECT_THROW(pl::render(logneg, out), mtt::Error);
  EXPECT_EQ(slurp(out), "old");
  EXPECT_EQ(files_in(d.path()), 1u);  // no temporaries left
  try {
    pl::render(pl::metrics_figure(pl::read_metrics(fx("run")), {}), (d / "x.jpg").string());
    ADD_FAILURE();
  } catch (const mtt::Error& e) {
    EXPECT_EQ(e.kind(), mtt::ErrorKind::Usage);
  }
  EXPECT_FALSE(std::filesystem::exists(d / "x.jpg"));
  // A good render replaces the old file in one step.
  pl::render(pl::metrics_figure(pl::read_metrics(fx("run")), {}), out);
  EXPECT_EQ(slurp(out).substr(0, 5), "<?xml");
  EXPECT_EQ(files_in(d.path()), 1u);
}

TEST(PlotRender, SeveralFiguresInOneProcess) {
  // One PLplot stream per render: formats can follow each other.
  TempDir d;
  const auto f = pl::metrics_figure(pl::read_metrics(fx("run")), {});
  for (const char* n : {"a.png", "b.svg", "c.pdf", "d.png"}) {
    pl::render(f, (d / n).string());
    EXPECT_GT(std::filesystem::file_size(d / n), 1000u) << n;
  }
}

TEST(PlotStyle, OverridesAndRoundTrip) {
  TempDir d;
  const auto def = pl::default_style();
  EXPECT_EQ(def.palette.front().hex(), "#0072B2");
  mtt::write_file_atomic((d / "dump.json").string(), pl::style_to_json(def));
  EXPECT_EQ(pl::style_to_json(pl::load_style((d / "dump.json").string())), pl::style_to_json(def));
  mtt::write_file_atomic((d / "s.json").string(), R"({"palette":["#ff0000","#00FF00"],"panel_width":300})");
  const auto s = pl::load_style((d / "s.json").string());
  EXPECT_EQ(s.palette.size(), 2u);
  EXPECT_EQ(s.palette[0].hex(), "#FF0000");
  EXPECT_EQ(s.panel_width, 300);
  EXPECT_EQ(s.panel_height, def.panel_height);
  // The style reaches the drawing: the first series takes the first palette colour.
  const auto f = pl::sweep_figure(pl::read_summary(fx("sweep")), {"mini_batch_size", "tokens_per_s", "", false, false, false, ""});
  pl::render(f, (d / "r.svg").string(), s);
  const SvgProbe p(slurp(d / "r.svg"));
  EXPECT_EQ(p.lines_with("#FF0000", 4), 1);
  EXPECT_NEAR(p.width, 400, 1e-6);  // a lone panel is 4/3 of panel_width
  for (const char* bad : {R"({"palette":["red"]})", R"({"colour":"#000000"})", R"({"panel_width":-3})", "[1]", "{"}) {
    mtt::write_file_atomic((d / "b.json").string(), bad);
    EXPECT_THROW(pl::load_style((d / "b.json").string()), mtt::Error) << bad;
  }
}

}  // namespace
