#!/usr/bin/env bash
# The Debian libraries the LibTorch build needs (scripts/gpu_check.sh), carried to a GPU machine that
# has PyTorch, CUDA and a compiler but none of them and no network.
#   scripts/gpu_deps.sh fetch            here (network): apt-get download into .gpu-deps/ (git-ignored;
#                                        name it in the device tool's `carry`)
#   scripts/gpu_deps.sh unpack DIR       there: unpack every .deb of .gpu-deps/ into DIR (no root, no
#                                        dpkg database: dpkg-deb -x, or ar + tar without dpkg)
# What: headers and CMake configs of nlohmann-json, yaml-cpp, GoogleTest/GoogleMock, CLI11, sndfile,
# soxr, and the shared libraries behind them (sndfile's codecs too). Not PLplot (MTT_MINIMAL leaves
# lib/plot out) and not sentencepiece (optional). libgomp1 comes along for soxr but is used only
# when the machine has none (gpu_check.sh).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DEBS="$ROOT/.gpu-deps"
PACKAGES=(nlohmann-json3-dev libyaml-cpp-dev libyaml-cpp0.7 libgtest-dev libgmock-dev libcli11-dev
          libsndfile1-dev libsndfile1 libflac12 libogg0 libvorbis0a libvorbisenc2 libopus0 libmpg123-0
          libmp3lame0 libsoxr-dev libsoxr0 libgomp1)

case "${1:-}" in
  fetch)
    mkdir -p "$DEBS"
    (cd "$DEBS" && rm -f ./*.deb && apt-get download "${PACKAGES[@]}")
    du -cb "$DEBS"/*.deb | tail -1 | awk '{printf "[gpu_deps] %d .deb files, %.1f MB in %s\n", n, $1 / 1e6, d}' \
      n="$(ls "$DEBS"/*.deb | wc -l)" d="$DEBS"
    ;;
  unpack)
    DIR="${2:?usage: gpu_deps.sh unpack DIR}"
    mkdir -p "$DIR"
    ls "$DEBS"/*.deb >/dev/null 2>&1 || { echo "[gpu_deps] no .deb files in $DEBS (run 'scripts/gpu_deps.sh fetch' where the network is)" >&2; exit 2; }
    for f in "$DEBS"/*.deb; do
      if command -v dpkg-deb >/dev/null; then
        dpkg-deb -x "$f" "$DIR"
      else
        tmp="$(mktemp -d)"
        (cd "$tmp" && ar x "$f" && tar -xf data.tar.* -C "$DIR")
        rm -rf "$tmp"
      fi
    done
    echo "[gpu_deps] unpacked $(ls "$DEBS"/*.deb | wc -l) packages into $DIR"
    ;;
  *)
    echo "usage: $0 fetch | unpack DIR" >&2
    exit 64
    ;;
esac
