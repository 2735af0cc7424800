#!/usr/bin/env bash
# The whole test suite: set-up (idempotent), the reference venv for parity tests, build, ctest.
# Opt-in labels (e.g. slurm) are excluded unless MTT_TEST_LABELS selects them.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh

bash scripts/setup.sh

# The PyPI moshi package: a test reference only, in its own venv (it pins an older torch).
if [ ! -x "$MTT_REF_VENV/bin/python" ] || ! "$MTT_REF_VENV/bin/python" -c "import moshi" 2>/dev/null; then
  echo "[test] installing the reference moshi package into $MTT_REF_VENV (once)" >&2
  python3 -m venv "$MTT_REF_VENV"
  "$MTT_REF_VENV/bin/pip" install -q --upgrade pip
  "$MTT_REF_VENV/bin/pip" install -q "torch==$MTT_TORCH_VERSION" "moshi==0.2.13" sentencepiece || \
    echo "[test] WARNING: could not install the moshi reference; parity tests will skip" >&2
fi
# The PyPI tensorboard package (its event reader checks the TensorBoard files ttt-sweep train writes)
# and PyYAML (yaml.dump checks the args.yaml writer): test references too, in the same venv.
if [ -x "$MTT_REF_VENV/bin/python" ] && ! "$MTT_REF_VENV/bin/python" -c "import tensorboard, yaml" 2>/dev/null; then
  echo "[test] installing tensorboard and pyyaml into $MTT_REF_VENV (once)" >&2
  "$MTT_REF_VENV/bin/pip" install -q tensorboard pyyaml || \
    echo "[test] WARNING: could not install tensorboard; the TensorBoard readback checks will skip" >&2
fi

cd "$MTT_BUILD"
# ctest runs MTT_JOBS tests at once on as many cores; LibTorch's OpenMP workers of one test would
# spin while the other test holds the core (a streamed tiny model ran 40x slower that way).
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
ctest --output-on-failure -j "$MTT_JOBS" --timeout 900 -LE "${MTT_EXCLUDE_LABELS:-slurm|gpu_only}" "$@"
