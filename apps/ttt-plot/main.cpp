// ttt-plot: figures of TTT runs (issue 8).
//   ttt-plot inner-loop RUN_DIR_OR_LOG [-o FILE]   TTT paper Figure 5: loss vs position, W0/before/after
//   ttt-plot gating CHECKPOINT... [-o FILE]        gate alpha / tanh(alpha) per layer across checkpoints
//   ttt-plot sweep SUMMARY --x AXIS --y METRIC     a ttt-sweep summary as lines or bars
//   ttt-plot metrics RUN_DIR [-o FILE]             training curves from metrics.train.jsonl
//   ttt-plot loss-by-position SCORE... [--out FILE] loss vs position from `ttt-infer --score` outputs
//   ttt-plot style                                 the effective style (plots/style.h + --style)
// The output format follows the extension (.png, .svg, .pdf); files are written atomically.
#include <CLI/CLI.hpp>

#include <cstdio>
#include <string>
#include <vector>

#include "app_main.h"
#include "flags.h"
#include "core/error.h"
#include "plot/figure_json.h"
#include "plot/figures.h"
#include "plot/inputs.h"
#include "plot/loss_by_position.h"
#include "plot/style.h"

namespace {

namespace pl = mtt::plot;

struct Common {
  std::string out, title, style;
  bool json = false;
};

void declare_common(CLI::App& app, Common& c, const std::string& default_out) {
  c.out = default_out;
  app.add_option("-o,--output", c.out, "output file; format from the extension: .png, .svg, .pdf")
      ->capture_default_str();
  app.add_option("--title", c.title, "figure title (default: names the input)");
  app.add_option("--style", c.style, "JSON style overrides (docs/formats.md, \"Plot style\")");
  app.add_flag("--json", c.json,
               "also print what was drawn as JSON on stdout: panels, axes and every series' points (to restyle it "
               "elsewhere, e.g. matplotlib)");
}

pl::Style style_of(const Common& c) { return c.style.empty() ? pl::default_style() : pl::load_style(c.style); }

int write(const pl::Figure& f, const Common& c) {
  const pl::Style st = style_of(c);
  pl::render(f, c.out, st);
  if (c.json) {
    std::printf("%s\n", pl::figure_json(f, c.out).dump(2).c_str());
    return mtt::kExitOk;
  }
  std::size_t series = 0;
  for (const auto& p : f.panels) series += p.series.size();
  std::printf("wrote %s (%s, %zu panel%s, %zu series)\n", c.out.c_str(), pl::format_name(pl::format_from_path(c.out)),
              f.panels.size(), f.panels.size() == 1 ? "" : "s", series);
  return mtt::kExitOk;
}

std::vector<std::string> split_list(const std::string& s) {
  std::vector<std::string> out;
  std::string cur;
  for (char ch : s + ",") {
    if (ch == ',') {
      if (!cur.empty()) out.push_back(cur);
      cur.clear();
    } else if (ch != ' ') {
      cur += ch;
    }
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"ttt-plot: figures of TTT runs (inner-loop losses, gates, sweeps, training curves)"};
  app.require_subcommand(1);

  Common il_c;
  std::string il_in;
  pl::InnerLoopOptions il;
  auto* il_cmd = app.add_subcommand("inner-loop", "per TTT layer, reconstruction loss vs position with W0, before and after the update");
  il_cmd->add_option("input", il_in, "run dir holding inner_loop.json, or the JSON file")->required();
  declare_common(*il_cmd, il_c, "inner_loop.png");
  il_cmd->add_option("--layers", il.layers, "only these layers (comma separated)")
      ->delimiter(',')
      ->check(mtt::app::int_range(0, 1'000'000));
  il_cmd->add_flag("--per-head", il.per_head, "one panel per head (needs per-head logging)");
  il_cmd->add_option("--heads", il.heads, "with --per-head: only these heads")
      ->delimiter(',')
      ->check(mtt::app::int_range(0, 1'000'000));
  il_cmd->add_option("--smooth", il.smooth, "moving average over N tokens")->check(mtt::app::int_range(1, 1'000'000));
  il_cmd->add_flag("--logy", il.logy, "log-scale loss axis");

  Common g_c;
  std::vector<std::string> g_in;
  pl::GatingOptions g;
  std::string g_value = "both";
  auto* g_cmd = app.add_subcommand("gating", "alpha / tanh(alpha) of the SSM gates per layer across checkpoints");
  g_cmd->add_option("checkpoints", g_in, "checkpoint files/dirs, or moshi-finetune run dirs (all steps)")->required();
  declare_common(*g_cmd, g_c, "gating.png");
  g_cmd->add_option("--value", g_value, "alpha, tanh or both")->check(CLI::IsMember({"alpha", "tanh", "both"}))->capture_default_str();
  g_cmd->add_option("--layers", g.layers, "only these layers (comma separated)")
      ->delimiter(',')
      ->check(mtt::app::int_range(0, 1'000'000));

  Common s_c;
  std::string s_in;
  pl::SweepPlotOptions so;
  auto* s_cmd = app.add_subcommand("sweep", "a metric of a ttt-sweep summary against an axis");
  s_cmd->add_option("summary", s_in, "summary.csv, summary.json or the sweep's out dir")->required();
  declare_common(*s_cmd, s_c, "sweep.png");
  s_cmd->add_option("--x", so.x, "axis (column) on the x axis")->required();
  s_cmd->add_option("--y", so.y, "metric (column) on the y axis")->required();
  s_cmd->add_option("--hue", so.hue, "axis drawn as separate lines/bars");
  s_cmd->add_flag("--logx", so.logx, "log-scale x");
  s_cmd->add_flag("--logy", so.logy, "log-scale y");
  s_cmd->add_flag("--bars", so.bars, "bars even when the x axis is numeric");

  Common m_c;
  std::string m_in, m_list;
  pl::MetricsOptions mo;
  auto* m_cmd = app.add_subcommand("metrics", "training curves from metrics.train.jsonl (and metrics.eval.jsonl)");
  m_cmd->add_option("run", m_in, "run dir, or a metrics .jsonl file")->required();
  declare_common(*m_cmd, m_c, "metrics.png");
  m_cmd->add_option("--y", m_list, "metrics to plot, comma separated (default: loss, lr, grad_norm)");
  m_cmd->add_flag("--logy", mo.logy, "log-scale y");
  m_cmd->add_option("--smooth", mo.smooth, "add a moving average over N logged steps")
      ->check(mtt::app::int_range(1, 1'000'000));

  Common lp_c;
  std::vector<std::string> lp_in;
  pl::LossByPositionOptions lp;
  bool lp_json = false;
  auto* lp_cmd = app.add_subcommand("loss-by-position",
                                    "text and audio loss against position from `ttt-infer --score` outputs, one line each");
  lp_cmd->add_option("scores", lp_in, "score files (ttt-infer --score OUTPUT.safetensors)")->required();
  lp_c.out = "loss_by_position.png";
  lp_cmd->add_option("-o,--out,--output", lp_c.out, "output file; format from the extension: .png, .svg, .pdf")
      ->capture_default_str();
  lp_cmd->add_option("--title", lp_c.title, "figure title");
  lp_cmd->add_option("--style", lp_c.style, "JSON style overrides (docs/formats.md, \"Plot style\")");
  lp_cmd->add_option("--smooth,--window", lp.smooth, "moving average over N frames")
      ->check(mtt::app::int_range(1, 1'000'000));
  lp_cmd->add_option("--frame-rate", lp.frame_rate, "x axis in seconds at this frame rate (Mimi: 12.5)")
      ->check(mtt::app::number_range(0, 1e6, /*open_lo=*/true));
  lp_cmd->add_flag("--logy", lp.logy, "log-scale loss axis");
  lp_cmd->add_flag("--json", lp_json, "print the series (after smoothing) as JSON on stdout");

  std::string st_file;
  auto* st_cmd = app.add_subcommand("style", "print the effective style as JSON");
  st_cmd->add_option("--style", st_file, "JSON style overrides");

  return mtt::app::run(app, argc, argv, "ttt-plot", [&] {
    if (*il_cmd) {
      il.title = il_c.title;
      return write(pl::inner_loop_figure(pl::read_inner_loop(il_in), il), il_c);
    }
    if (*g_cmd) {
      g.title = g_c.title;
      g.value = g_value == "alpha" ? pl::GateValue::Alpha : g_value == "tanh" ? pl::GateValue::Tanh : pl::GateValue::Both;
      return write(pl::gating_figure(pl::read_gates(g_in), g), g_c);
    }
    if (*s_cmd) {
      so.title = s_c.title;
      // Only the plotted columns are held: a summary of 10^6 points stays small.
      return write(pl::sweep_figure(pl::read_summary(s_in, {so.x, so.y, so.hue}), so), s_c);
    }
    if (*m_cmd) {
      mo.title = m_c.title;
      mo.metrics = split_list(m_list);
      return write(pl::metrics_figure(pl::read_metrics(m_in), mo), m_c);
    }
    if (*lp_cmd) {
      lp.title = lp_c.title;
      std::vector<pl::ScoreCurves> curves;
      for (const auto& p : lp_in) curves.push_back(pl::read_score_curves(p));
      pl::label_inputs(curves);
      const pl::Figure f = pl::loss_by_position_figure(curves, lp);
      if (!lp_json) return write(f, lp_c);
      pl::render(f, lp_c.out, style_of(lp_c));
      nlohmann::json j = {{"output", lp_c.out}, {"series", pl::loss_by_position_json(curves, lp)}};
      std::printf("%s\n", j.dump(2).c_str());
      return 0;
    }
    if (*st_cmd) {
      std::fputs(pl::style_to_json(st_file.empty() ? pl::default_style() : pl::load_style(st_file)).c_str(), stdout);
      return 0;
    }
    return 0;
  });
}
