#pragma once
// The four ttt-plot figures, built from parsed inputs (plot/inputs.h) as plot::Figure values.
// Pure functions: no I/O, so tests can check what a figure holds before it is drawn.
#include <string>
#include <vector>

#include "plot/figure.h"
#include "plot/inputs.h"

namespace mtt::plot {

// TTT paper "Figure 5" layout: one panel per TTT layer, reconstruction loss against token
// position with W0, with the weights before the mini-batch update and after it.
struct InnerLoopOptions {
  std::vector<int> layers;  // empty: all
  bool per_head = false;    // one panel per (layer, head)
  std::vector<int> heads;   // with per_head; empty: all
  int smooth = 1;           // centred moving average over this many tokens (1: raw)
  bool logy = false;
  std::string title;        // empty: a default naming the file
};
Figure inner_loop_figure(const InnerLoopData& d, const InnerLoopOptions& o);

// Gate values per layer across checkpoints: mean over channels with a min-max band, forward and
// backward gates in separate panels on a shared y scale; a gate whose values never change across
// the checkpoints is marked "(frozen)" and draws as a flat line.
enum class GateValue { Alpha, Tanh, Both };
struct GatingOptions {
  GateValue value = GateValue::Both;
  std::vector<int> layers;  // empty: all
  std::string title;
};
Figure gating_figure(const std::vector<GateCheckpoint>& cks, const GatingOptions& o);
// The fork's effective gate: tanh(clamp(alpha, -3, 3)) (docs/ttt.md §4, ssm_gating.py L40-41).
double effective_gate(double alpha);

// One metric of a sweep summary against one axis: lines when the axis is numeric (one per hue
// value), grouped bars when it is categorical (or bars is set). Points sharing (x, hue) are
// averaged, with their min-max as a band / whisker.
// Beyond these a sweep figure is refused (a usage error naming the column): more lines or bars
// than can be told apart.
inline constexpr std::size_t kMaxHues = 100;
inline constexpr std::size_t kMaxCategories = 1000;
struct SweepPlotOptions {
  std::string x, y, hue;
  bool logx = false, logy = false, bars = false;
  std::string title;
};
Figure sweep_figure(const Table& t, const SweepPlotOptions& o);

// Training curves: one panel per metric against step, train (and eval when logged).
struct MetricsOptions {
  std::vector<std::string> metrics;  // empty: loss, lr, grad_norm (those present)
  bool logy = false;
  int smooth = 1;  // >1: add a centred moving average of the train curve
  std::string title;
};
Figure metrics_figure(const MetricsRun& r, const MetricsOptions& o);

// Centred moving average ignoring NaNs (window w, odd or even).
std::vector<double> moving_average(const std::vector<double>& v, int w);

}  // namespace mtt::plot
