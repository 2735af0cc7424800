#!/usr/bin/env bash
# The main job: install and build (scripts/setup.sh), then show the toolkit at work on the tiny
# built-in models, no weights needed: audit the tiny Moshi-TTT checkpoint, run a quick gating
# experiment on the toy TTT model, train the tiny Moshi-TTT hybrid on synthetic speech as
# moshi-finetune would, audit the checkpoint that training wrote, and draw the pictures.
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

step "1/5 the tiny built-in Moshi-TTT checkpoint (fork layout), made by the library's initialisers, audited"
inspect --tiny --save "$OUT/tiny-moshi-ttt.safetensors"

step "2/5 a quick experiment: the toy TTT model trained with its gate learnt and forced (experiments/gating.yaml, reduced grid)"
"$BIN/ttt-sweep" run experiments/gating.yaml --reduced --force --out "$OUT/gating"
gating=$(ls -d "$OUT"/gating/runs/*force_alpha=null* | head -n 1)

step "3/5 the tiny Moshi-TTT hybrid trained on espeak-ng speech with truncated BPTT (moshi-finetune's YAML and run dir)"
"$BIN/ttt-sweep" data speech --out "$OUT/speech" --n 4
rm -rf "$OUT/tiny-speech"  # a run dir is not reused (moshi-finetune refuses a non-empty one)
"$BIN/ttt-sweep" train experiments/train/tiny_speech.yaml --data "$OUT/speech/data.jsonl" --out "$OUT/tiny-speech" --tiny-mimi

step "4/5 audit of the checkpoint that training wrote ($OUT/tiny-speech)"
inspect "$OUT/tiny-speech"

step "5/5 pictures"
"$BIN/ttt-plot" gating "$gating" -o "$OUT/gating-alpha.png"
"$BIN/ttt-plot" metrics "$OUT/tiny-speech" -o "$OUT/training-curves.png"
"$BIN/ttt-plot" inner-loop "$gating" -o "$OUT/inner-loop.png"
"$BIN/ttt-plot" sweep "$OUT/gating" --x force_alpha --y eval_loss --bars -o "$OUT/gating-sweep.png"
printf '\nDone. Outputs in %s: the sweep'"'"'s summary.csv and verdict.json, the training run dir (args.yaml,\nmetrics, tb/ for `tensorboard --logdir %s/tiny-speech/tb`, checkpoints), PNG figures.\n' "$OUT" "$OUT"
