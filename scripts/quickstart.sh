#!/usr/bin/env bash
# The main job: install and build (scripts/setup.sh), then show the toolkit at work on the tiny
# built-in models, no weights needed: audit the tiny Moshi-TTT checkpoint, train the tiny TTT model
# in a quick gating experiment, audit the checkpoint it wrote, and draw its pictures.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
bash scripts/setup.sh

BIN="$MTT_BUILD/bin"
OUT="${1:-out/quickstart}"
mkdir -p "$OUT"
step() { printf '\n== %s\n' "$*"; }
# ttt-inspect exits 1 when it ran and found problems: that is the point here, not a failure.
inspect() { "$BIN/ttt-inspect" "$@" || [ $? -eq 1 ]; }

step "1/4 the tiny built-in Moshi-TTT checkpoint (fork layout), made by the library's initialisers, audited"
inspect --tiny --save "$OUT/tiny-moshi-ttt.safetensors"

step "2/4 a quick experiment: the tiny TTT model trained with its gate learnt and forced (experiments/gating.yaml, reduced grid)"
"$BIN/ttt-sweep" run experiments/gating.yaml --reduced --force --out "$OUT/gating"

trained=$(ls -d "$OUT"/gating/runs/*force_alpha=null* | head -n 1)
step "3/4 audit of the checkpoints that training wrote ($trained)"
inspect "$trained"

step "4/4 pictures"
"$BIN/ttt-plot" gating "$trained" -o "$OUT/gating-alpha.png"
"$BIN/ttt-plot" metrics "$trained" -o "$OUT/training-curves.png"
"$BIN/ttt-plot" inner-loop "$trained" -o "$OUT/inner-loop.png"
"$BIN/ttt-plot" sweep "$OUT/gating" --x force_alpha --y eval_loss --bars -o "$OUT/gating-sweep.png"
printf '\nDone. Outputs in %s: summary.csv and verdict.json of the sweep, checkpoints, PNG figures.\n' "$OUT"
