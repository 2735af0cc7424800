#pragma once
// The long-context view of TTT papers: loss against position in the sequence, from the score
// files `ttt-infer --score` writes (lib/infer/score.h): per position, the batch's mean of
// text_loss and audio_loss weighted by text_weight / audio_weight (moshi-finetune's
// compute_loss_with_mask weights, so the weighted mean of a curve is the training loss), one line
// per input, text and audio in two panels, optionally smoothed by a centred moving average.
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "plot/figure.h"

namespace mtt::plot {

struct ScoreCurves {
  std::string path, label;
  int64_t batch = 0, frames = 0;
  std::vector<double> text, audio;              // [T]: NaN where no row has a target
  std::vector<double> text_weight, audio_weight;  // [T]: summed over the batch
  double text_mean = 0, audio_mean = 0;         // weighted over all positions (NaN: no weight)
};

// Reads text_loss, audio_loss [B, T] (float) and, when present, text_weight / audio_weight
// [B, T] (otherwise 1 where the loss is finite). Errors name the file and the key.
ScoreCurves read_score_curves(const std::string& path);

struct LossByPositionOptions {
  int smooth = 1;            // centred moving average over this many frames (1: raw)
  double frame_rate = 0;     // > 0: x axis in seconds (Mimi: 12.5 frames/s); 0: frames
  bool logy = false;
  std::string title;
};

// Labels: the file names, or their parent folder + name where names repeat.
void label_inputs(std::vector<ScoreCurves>& inputs);
Figure loss_by_position_figure(const std::vector<ScoreCurves>& inputs, const LossByPositionOptions& o);
// The series as drawn (after smoothing): [{input, label, stream, frames, mean, x, y}], NaN -> null.
nlohmann::json loss_by_position_json(const std::vector<ScoreCurves>& inputs, const LossByPositionOptions& o);

}  // namespace mtt::plot
