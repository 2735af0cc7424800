#!/usr/bin/env bash
# Installs everything (Debian packages, LibTorch venv in the cache), configures and builds.
# Idempotent: a second run only rebuilds what changed.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh

apt_pkgs=(build-essential cmake pkg-config python3-venv libcli11-dev libsndfile1-dev libsoxr-dev
  nlohmann-json3-dev libyaml-cpp-dev libsentencepiece-dev libgtest-dev libgmock-dev
  libbenchmark-dev clang libclang-rt-14-dev libplplot-dev plplot-driver-cairo espeak-ng sox)
missing=()
for p in "${apt_pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  echo "[setup] apt-get install ${missing[*]}" >&2
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

mkdir -p "$MTT_CACHE"
if [ ! -x "$MTT_TORCH_VENV/bin/python" ] || ! "$MTT_TORCH_VENV/bin/python" -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '$MTT_TORCH_VERSION')" 2>/dev/null; then
  echo "[setup] installing torch==$MTT_TORCH_VERSION into $MTT_TORCH_VENV (once; reused afterwards)" >&2
  python3 -m venv "$MTT_TORCH_VENV"
  "$MTT_TORCH_VENV/bin/pip" install -q --upgrade pip
  "$MTT_TORCH_VENV/bin/pip" install -q "torch==$MTT_TORCH_VERSION" numpy safetensors
fi
torch_prefix=$("$MTT_TORCH_VENV/bin/python" -c "import torch.utils; print(torch.utils.cmake_prefix_path)")

cmake -S . -B "$MTT_BUILD" -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$torch_prefix" \
  -DMTT_PYTHON="$MTT_TORCH_VENV/bin/python" -DMTT_REF_PYTHON="$MTT_REF_VENV/bin/python" >/dev/null
# The compiler's output goes to a log (warnings there are for developers, not for a user's first run);
# a failed build prints its last lines. MTT_BUILD_VERBOSE=1 shows it all.
if [ "${MTT_BUILD_VERBOSE:-0}" = 1 ]; then
  cmake --build "$MTT_BUILD" -j "$MTT_JOBS"
else
  build_log="$MTT_BUILD/build.log"
  echo "[setup] building into $MTT_BUILD (compiler output: $build_log)" >&2
  if ! cmake --build "$MTT_BUILD" -j "$MTT_JOBS" >"$build_log" 2>&1; then
    tail -n 60 "$build_log" >&2
    echo "[setup] the build failed; the whole log is $build_log" >&2
    exit 1
  fi
fi
