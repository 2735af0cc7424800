#include "plot/loss_by_position.h"

#include <cmath>
#include <filesystem>
#include <limits>
#include <map>

#include "core/error.h"
#include "io/safetensors.h"
#include "plot/figures.h"

namespace mtt::plot {

namespace fs = std::filesystem;

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

struct Matrix {
  int64_t rows = 0, cols = 0;
  std::vector<double> v;  // row-major
};

Matrix read_matrix(const io::SafetensorsFile& f, const std::string& key) {
  const io::TensorInfo* info = f.find(key);
  if (!info) throw Error(f.path(), key, "missing (not a `ttt-infer --score` output?)");
  if (!dtype_is_float(info->dtype))
    throw Error(f.path(), key, std::string("expected a float tensor, got ") + dtype_name(info->dtype));
  if (info->shape.size() != 2) throw Error(f.path(), key, "expected [B, T], got " + std::to_string(info->shape.size()) + " dims");
  io::TensorView view = f.view(*info);
  Matrix m;
  m.rows = info->shape[0];
  m.cols = info->shape[1];
  m.v.resize(static_cast<std::size_t>(m.rows * m.cols));
  for (std::size_t i = 0; i < m.v.size(); ++i) m.v[i] = element_as_double(view.data, info->dtype, i);
  return m;
}

// Per column: sum_b w loss / sum_b w over the rows with a finite loss and w > 0.
void reduce(const Matrix& loss, const Matrix& w, std::vector<double>& mean, std::vector<double>& wsum, double& total) {
  mean.assign(static_cast<std::size_t>(loss.cols), kNaN);
  wsum.assign(static_cast<std::size_t>(loss.cols), 0.0);
  double num_all = 0, den_all = 0;
  for (int64_t t = 0; t < loss.cols; ++t) {
    double num = 0, den = 0;
    for (int64_t b = 0; b < loss.rows; ++b) {
      const double l = loss.v[static_cast<std::size_t>(b * loss.cols + t)];
      const double ww = w.v[static_cast<std::size_t>(b * loss.cols + t)];
      if (!std::isfinite(l) || !(ww > 0)) continue;
      num += ww * l;
      den += ww;
    }
    wsum[static_cast<std::size_t>(t)] = den;
    if (den > 0) mean[static_cast<std::size_t>(t)] = num / den;
    num_all += num;
    den_all += den;
  }
  total = den_all > 0 ? num_all / den_all : kNaN;
}

std::vector<double> x_axis(int64_t n, double frame_rate) {
  std::vector<double> x(static_cast<std::size_t>(n));
  for (int64_t i = 0; i < n; ++i) x[static_cast<std::size_t>(i)] = frame_rate > 0 ? i / frame_rate : static_cast<double>(i);
  return x;
}

nlohmann::json finite_or_null(double v) { return std::isfinite(v) ? nlohmann::json(v) : nlohmann::json(nullptr); }

}  // namespace

ScoreCurves read_score_curves(const std::string& path) {
  if (!fs::exists(path)) throw Error(path, "", "file not found");
  auto f = io::SafetensorsFile::open(path);
  ScoreCurves c;
  c.path = path;
  const Matrix tl = read_matrix(*f, "text_loss"), al = read_matrix(*f, "audio_loss");
  if (tl.rows != al.rows || tl.cols != al.cols)
    throw Error(path, "audio_loss", "shape differs from text_loss");
  auto weights = [&](const std::string& key, const Matrix& loss) {
    if (!f->find(key)) {
      Matrix w = loss;
      for (auto& x : w.v) x = std::isfinite(x) ? 1.0 : 0.0;
      return w;
    }
    Matrix w = read_matrix(*f, key);
    if (w.rows != loss.rows || w.cols != loss.cols) throw Error(path, key, "shape differs from the loss");
    return w;
  };
  c.batch = tl.rows;
  c.frames = tl.cols;
  reduce(tl, weights("text_weight", tl), c.text, c.text_weight, c.text_mean);
  reduce(al, weights("audio_weight", al), c.audio, c.audio_weight, c.audio_mean);
  c.label = fs::path(path).stem().string();
  return c;
}

void label_inputs(std::vector<ScoreCurves>& inputs) {
  std::map<std::string, int> seen;
  for (const auto& c : inputs) ++seen[fs::path(c.path).stem().string()];
  for (auto& c : inputs) {
    const fs::path p(c.path);
    c.label = p.stem().string();
    if (seen[c.label] > 1 && p.has_parent_path()) c.label = p.parent_path().filename().string() + "/" + c.label;
  }
}

Figure loss_by_position_figure(const std::vector<ScoreCurves>& inputs, const LossByPositionOptions& o) {
  if (inputs.empty()) throw Error("", "inputs", "no score file given", ErrorKind::Usage);
  if (o.smooth < 1 || o.smooth > 1'000'000)
    throw Error("", "--smooth", "must be an integer in 1..1000000, got " + std::to_string(o.smooth), ErrorKind::Usage);
  if (!(std::isfinite(o.frame_rate) && o.frame_rate >= 0 && o.frame_rate <= 1e6))
    throw Error("", "--frame-rate", "must be a finite number in (0, 1e6] (frames per second)", ErrorKind::Usage);
  Figure f;
  f.title = o.title.empty() ? "loss by position" : o.title;
  f.columns = 1;  // long contexts read better wide
  const char* streams[] = {"text", "audio"};
  for (int s = 0; s < 2; ++s) {
    Panel p;
    p.title = std::string(streams[s]) + " loss";
    std::string note = "weighted batch mean";
    if (o.smooth > 1) note += ", moving average over " + std::to_string(o.smooth) + " frames";
    p.note = note;
    p.xlabel = o.frame_rate > 0 ? "position (s)" : "position (frame)";
    p.ylabel = "cross-entropy (nats)";
    p.logy = o.logy;
    for (const auto& c : inputs) {
      Series se;
      se.label = c.label;
      se.x = x_axis(c.frames, o.frame_rate);
      se.y = moving_average(s == 0 ? c.text : c.audio, o.smooth);
      p.series.push_back(std::move(se));
    }
    f.panels.push_back(std::move(p));
  }
  // Nothing finite to draw is the score files' fault: said naming them, not the figure.
  std::string source = inputs.front().path;
  if (inputs.size() > 1) source += " (and " + std::to_string(inputs.size() - 1) + " more score files)";
  validate(f, source);
  return f;
}

nlohmann::json loss_by_position_json(const std::vector<ScoreCurves>& inputs, const LossByPositionOptions& o) {
  nlohmann::json out = nlohmann::json::array();
  for (const auto& c : inputs)
    for (int s = 0; s < 2; ++s) {
      const auto y = moving_average(s == 0 ? c.text : c.audio, o.smooth);
      nlohmann::json ys = nlohmann::json::array();
      for (double v : y) ys.push_back(finite_or_null(v));
      out.push_back({{"input", c.path},
                     {"label", c.label},
                     {"stream", s == 0 ? "text" : "audio"},
                     {"batch", c.batch},
                     {"frames", c.frames},
                     {"mean", finite_or_null(s == 0 ? c.text_mean : c.audio_mean)},
                     {"smooth", o.smooth},
                     {"x", x_axis(c.frames, o.frame_rate)},
                     {"y", ys}});
    }
  return out;
}

}  // namespace mtt::plot
