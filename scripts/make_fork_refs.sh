#!/usr/bin/env bash
# Regenerates tests/data/fork_runs (run dirs + reference logits written by the moshi-finetune TTT fork's own
# code, AlufRon/claude-web moshi_ttt_try/moshi-finetune @ f5e977ac). Test data only; see tests/ref/fork/README.md.
#   MTT_FORK_DIR=/path/to/moshi-finetune scripts/make_fork_refs.sh [--cases a,b] [--out DIR] [--work DIR]
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
  [ -f "$fork/train.py" ] || { echo "make_fork_refs: $MTT_FORK_DIR: no train.py (want the fork's moshi-finetune folder)" >&2; exit 2; }
  commit=$(git -C "$fork" rev-parse HEAD 2>/dev/null || echo "$FORK_COMMIT (not checked: not a git checkout)")
elif [ -d "$MIRROR" ] && git -C "$MIRROR" cat-file -e "$FORK_COMMIT^{commit}" 2>/dev/null; then
  src="$MTT_CACHE/fork-src/$FORK_COMMIT"
  if [ ! -f "$src/$FORK_SUBDIR/train.py" ]; then
    rm -rf "$src" && mkdir -p "$src"
    git -C "$MIRROR" archive "$FORK_COMMIT" "$FORK_SUBDIR" | tar -x -C "$src"
  fi
  fork="$src/$FORK_SUBDIR"
  commit=$(git -C "$MIRROR" rev-parse "$FORK_COMMIT^{commit}")
else
  echo "make_fork_refs: the fork is not available here (set MTT_FORK_DIR to its moshi-finetune folder); nothing regenerated"
  exit 0
fi

if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c "import moshi, torch, simple_parsing, fire, yaml, sphn, sys; sys.exit(moshi.__version__ != '0.2.13')" 2>/dev/null; then
  echo "[make_fork_refs] creating $VENV (once)" >&2
  python3 -m venv "$VENV"
  site=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  torch_site=""
  if [ -x "$MTT_TORCH_VENV/bin/python" ] && "$MTT_TORCH_VENV/bin/python" -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '$MTT_TORCH_VERSION')" 2>/dev/null; then
    torch_site=$("$MTT_TORCH_VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  fi
  if [ -n "$torch_site" ]; then
    echo "$torch_site" > "$site/_mtt_torch_venv.pth"   # reuse the LibTorch venv's torch (no second download)
  else
    "$VENV/bin/pip" install -q "torch==$MTT_TORCH_VERSION"
  fi
  "$VENV/bin/pip" install -q --no-deps "$(grep '^moshi==' tests/ref/fork/requirements.txt)"
  "$VENV/bin/pip" install -q $(grep -v '^#\|^moshi==\|^$' tests/ref/fork/requirements.txt)
fi

OMP_NUM_THREADS=1 "$VENV/bin/python" tests/ref/fork/gen_fork_refs.py --fork "$fork" --fork-commit "$commit" \
  --out "$PWD/tests/data/fork_runs" "$@"
