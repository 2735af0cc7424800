#!/usr/bin/env bash
# Regenerates tests/data/fork_numerics (the moshi-finetune TTT fork's own TTT numerics on small random inputs,
# AlufRon/claude-web moshi_ttt_try/moshi-finetune @ f5e977ac). Test data only; see
# tests/ref/fork_numerics/gen_fork_numerics.py. Uses the fork folder and venv of scripts/make_fork_refs.sh:
#   MTT_FORK_DIR=/path/to/moshi-finetune scripts/make_fork_numerics.sh
# Without MTT_FORK_DIR the fork is extracted from a git mirror ($MTT_FORK_MIRROR, default
# /work/.mirror/AlufRon+claude-web/repo) when one exists; otherwise the script says so and exits 0.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
FORK_COMMIT="${MTT_FORK_COMMIT:-f5e977ac}"
FORK_SUBDIR="moshi_ttt_try/moshi-finetune"
MIRROR="${MTT_FORK_MIRROR:-/work/.mirror/AlufRon+claude-web/repo}"
VENV="$MTT_CACHE/fork-ref-venv"

if [ -n "${MTT_FORK_DIR:-}" ]; then
  fork="$MTT_FORK_DIR"
  [ -f "$fork/train.py" ] || fork="$fork/$FORK_SUBDIR"
  [ -f "$fork/train.py" ] || { echo "make_fork_numerics: $MTT_FORK_DIR: no train.py (want the fork's moshi-finetune folder)" >&2; exit 2; }
elif [ -d "$MIRROR" ] && git -C "$MIRROR" cat-file -e "$FORK_COMMIT^{commit}" 2>/dev/null; then
  src="$MTT_CACHE/fork-src/$FORK_COMMIT"
  if [ ! -f "$src/$FORK_SUBDIR/train.py" ]; then
    rm -rf "$src" && mkdir -p "$src"
    git -C "$MIRROR" archive "$FORK_COMMIT" "$FORK_SUBDIR" | tar -x -C "$src"
  fi
  fork="$src/$FORK_SUBDIR"
else
  echo "make_fork_numerics: the fork is not available here (set MTT_FORK_DIR to its moshi-finetune folder); nothing regenerated"
  exit 0
fi
if [ ! -x "$VENV/bin/python" ]; then
  echo "make_fork_numerics: $VENV is missing; run scripts/make_fork_refs.sh once (it creates the fork's venv)" >&2
  exit 2
fi
OMP_NUM_THREADS=1 "$VENV/bin/python" tests/ref/fork_numerics/gen_fork_numerics.py --fork "$fork" \
  --out "$PWD/tests/data/fork_numerics" "$@"
