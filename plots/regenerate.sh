#!/usr/bin/env bash
# Regenerates the figures of the built-in experiments (experiments/*.yaml) from their outputs.
#
#   plots/regenerate.sh [RUNS_ROOT] [OUT_DIR]
#
# RUNS_ROOT (default: runs) holds one folder per experiment, as `ttt-sweep run experiments/<name>.yaml`
# writes it by default (runs/<name>/):
#   runs/<name>/summary.json             -> sweep figures (metric against the experiment's axes)
#   runs/<name>/runs/<id>/metrics.train.jsonl (+ metrics.eval.jsonl) -> training curves per run
#   runs/<name>/runs/<id>/inner_loop.json                           -> TTT "Figure 5" per run
#   runs/<name>/runs/<id>/checkpoints/checkpoint_NNNNNN/...         -> gate trajectories (runs with
#                                                                      two or more checkpoints)
# Figures go to OUT_DIR/<name>/ (default: plots/figures/<name>/) as PNG and SVG; the style is
# plots/style.h (override with TTT_PLOT_STYLE=file.json). TTT_PLOT names the ttt-plot binary
# (default: build/bin/ttt-plot, else the first build-*/bin/ttt-plot).
# Experiments without outputs are skipped with a note; the exit status is 1 if any figure failed.
set -uo pipefail
cd "$(dirname "$0")/.."

RUNS=${1:-runs}
OUT=${2:-plots/figures}
PLOT=${TTT_PLOT:-}
if [ -z "$PLOT" ]; then
  for c in build/bin/ttt-plot build-*/bin/ttt-plot; do
    if [ -x "$c" ]; then PLOT=$c; break; fi
  done
fi
if [ -z "$PLOT" ] || [ ! -x "$PLOT" ]; then
  echo "regenerate: no ttt-plot binary (build it: cmake --build build --target ttt-plot, or set TTT_PLOT)" >&2
  exit 64
fi
STYLE=()
[ -n "${TTT_PLOT_STYLE:-}" ] && STYLE=(--style "$TTT_PLOT_STYLE")

failed=0
made=0
# fig OUT_BASENAME SUBCOMMAND ARGS... : one figure as .png and .svg
fig() {
  local base=$1; shift
  local ext
  for ext in png svg; do
    if "$PLOT" "$@" "${STYLE[@]}" -o "$base.$ext" >/dev/null; then
      made=$((made + 1))
    else
      failed=$((failed + 1))
    fi
  done
}

# sweep EXPERIMENT NAME --x .. --y .. [...]: a sweep figure when the summary exists
# A --hue axis the sweep did not vary (a reduced grid, say) is dropped rather than failing.
sweep() {
  local exp=$1 name=$2; shift 2
  local args=()
  while [ $# -gt 0 ]; do
    if [ "$1" = "--hue" ] && ! grep -q "\"$2\"" "$RUNS/$exp/summary.json" 2>/dev/null; then
      shift 2
      continue
    fi
    args+=("$1")
    shift
  done
  fig "$OUT/$exp/$name" sweep "$RUNS/$exp" "${args[@]}"
}

# Per-run figures: training curves, inner-loop losses, gate trajectories.
per_run() {
  local exp=$1 run id n
  for run in "$RUNS/$exp"/runs/*/; do
    [ -d "$run" ] || continue
    id=$(basename "$run")
    [ -f "$run/metrics.train.jsonl" ] && fig "$OUT/$exp/runs/${id}_metrics" metrics "$run"
    [ -f "$run/inner_loop.json" ] && fig "$OUT/$exp/runs/${id}_inner_loop" inner-loop "$run"
    n=$(find "$run/checkpoints" -maxdepth 1 -type d -name 'checkpoint_*' 2>/dev/null | wc -l)
    [ "$n" -ge 2 ] && fig "$OUT/$exp/runs/${id}_gating" gating "$run"
  done
}

for exp in mini-batch norm-variant gating causal-leak batch-state gradient-flow ring-cache pad-tokens; do
  if [ ! -f "$RUNS/$exp/summary.json" ] && [ ! -f "$RUNS/$exp/summary.csv" ]; then
    echo "regenerate: skip $exp (no $RUNS/$exp/summary.json; run: ttt-sweep run experiments/$exp.yaml)" >&2
    continue
  fi
  mkdir -p "$OUT/$exp/runs"
  case $exp in
    mini-batch)
      sweep $exp final_loss --x ttt.mini_batch_size --y final_loss --hue ttt.base_lr --logx
      sweep $exp eval_loss --x ttt.mini_batch_size --y eval_loss --hue ttt.base_lr --logx ;;
    norm-variant)
      sweep $exp final_loss --x ttt.recon_target --y final_loss
      sweep $exp inner_loss_after --x ttt.recon_target --y inner_loss_after
      sweep $exp target_std --x ttt.recon_target --y target_std ;;
    gating)
      sweep $exp eval_loss --x force_alpha --y eval_loss --hue ttt.initial_gating_alpha
      sweep $exp multiplier --x force_alpha --y multiplier_mean_final --hue ttt.initial_gating_alpha ;;
    causal-leak)
      sweep $exp max_future_over_past --x ttt.eta --y max_future_over_past --hue ttt.inner ;;
    batch-state)
      sweep $exp divergence --x state_mode --y divergence_other_elements ;;
    gradient-flow)
      sweep $exp W0_drift --x probe --y W0_drift_rel
      sweep $exp conv_grad --x probe --y conv_grad_first ;;
    ring-cache)
      sweep $exp influence_far --x model --y influence_at_max_distance --hue state --bars
      sweep $exp reach --x model --y reach --hue state --bars ;;
    pad-tokens)
      sweep $exp grad_wk_bias --x seq_len --y grad_wk_bias --hue ttt.pad_updates --logy --bars
      sweep $exp grad_wk_bias_by_init --x ttt.proj_bias_init --y grad_wk_bias --hue ttt.pad_updates --logy --bars ;;
  esac
  per_run $exp
done
echo "regenerate: $made figure file(s) in $OUT, $failed failed" >&2
[ "$failed" -eq 0 ]
