#!/usr/bin/env bash
# Regenerates tests/data/inplace_runs (run dirs + reference logits) with the In-Place TTT port's own
# code (AlufRon/moshi_in_place: its moshi package, train.py and Checkpointer). See
# tests/ref/inplace/README.md. The port checkout comes from MTT_INPLACE_DIR, else it is extracted
# from the git mirror (MTT_INPLACE_MIRROR, commit MTT_INPLACE_COMMIT); without either it skips.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
source "$root/scripts/env.sh"

commit="${MTT_INPLACE_COMMIT:-d2e9475}"
mirror="${MTT_INPLACE_MIRROR:-/work/.mirror/AlufRon+moshi_in_place/repo}"
dest="$root/tests/data/inplace_runs"
# Fixed generation root: the port writes absolute paths (run_dir, moshi_paths) into args.yaml, and a
# fixed root keeps regenerated files byte-identical. It is removed afterwards, so those paths do not
# resolve and the tests take the base from --moshi-weight (tests/data/inplace_runs/base).
gen="/tmp/mtt-inplace-refs"
venv="$MTT_CACHE/inplace-ref-venv"

tmp_port=""
if [ -n "${MTT_INPLACE_DIR:-}" ]; then
  port="$MTT_INPLACE_DIR"
  sha="$(git -C "$port" rev-parse HEAD 2>/dev/null || echo "unknown (MTT_INPLACE_DIR=$port)")"
elif git -C "$mirror" rev-parse -q --verify "$commit^{commit}" >/dev/null 2>&1; then
  sha="$(git -C "$mirror" rev-parse "$commit^{commit}" 2>/dev/null)"
  tmp_port="$(mktemp -d)"
  port="$tmp_port"
  # Only the paths the references use: the full tree holds blobs the mirror lacks (wandb files).
  git -C "$mirror" archive "$sha" moshi/moshi moshi-finetune/finetune moshi-finetune/train.py | tar -x -C "$port"
else
  echo "[inplace-refs] skipped: no port checkout (MTT_INPLACE_DIR unset, no commit $commit in $mirror)"
  exit 0
fi
trap '[ -n "$tmp_port" ] && rm -rf "$tmp_port"' EXIT

for f in moshi/moshi/moshi/modules/ttt_module.py moshi-finetune/train.py moshi-finetune/finetune/checkpointing.py; do
  [ -f "$port/$f" ] || { echo "[inplace-refs] $port/$f: missing (not an In-Place TTT port checkout)" >&2; exit 2; }
done

if ! "$venv/bin/python" -c "import torch, simple_parsing, fire, sphn, sentencepiece, einops, huggingface_hub, yaml, safetensors, tensorboard" 2>/dev/null; then
  echo "[inplace-refs] creating $venv (once)" >&2
  python3 -m venv "$venv"
  site="$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
  if [ -x "$MTT_TORCH_VENV/bin/python" ] && "$MTT_TORCH_VENV/bin/python" -c "import torch" 2>/dev/null; then
    # Reuse the project's torch (same version as moshi's pin allows) instead of a second copy.
    "$MTT_TORCH_VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])' > "$site/zz_mtt_torch_venv.pth"
  else
    "$venv/bin/pip" install -q "torch==$MTT_TORCH_VERSION"
  fi
  "$venv/bin/pip" install -q simple_parsing fire "sentencepiece==0.2.0" einops "huggingface-hub<0.34" \
    "sphn<0.3" tensorboard pyyaml safetensors numpy
fi

rm -rf "$gen"
mkdir -p "$gen"
OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 PYTHONHASHSEED=0 "$venv/bin/python" "$root/tests/ref/inplace/make_refs.py" \
  --port "$port" --out "$gen/runs" --work "$gen/work" --commit "$sha"

mkdir -p "$dest"
for d in "$gen"/runs/*/; do
  name="$(basename "$d")"
  rm -rf "${dest:?}/$name"
  cp -r "$d" "$dest/$name"
done
rm -rf "$gen"
echo "[inplace-refs] wrote $(du -sh "$dest" | cut -f1) to $dest (port $sha)"
