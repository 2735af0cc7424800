#!/usr/bin/env bash
# Builds the libFuzzer targets with clang (ASan + UBSan, torch-free sources only) into
# <build>/fuzz and runs each for a short time, seeded from the hostile corpus.
#
#   scripts/fuzz.sh [--build-only] [seconds=20] [build_dir=$MTT_BUILD or build]
#   scripts/fuzz.sh --clang-missing   (the placeholder test when configure found no clang++)
#
# (The test suite runs --build-only as a CTest fixture first: the sanitizer build alone can take
# minutes on a loaded machine, and the run's timeout should only cover the fuzzing.)
# Env: MTT_FUZZ_CXX (default clang++), MTT_FUZZ_JOBS (parallel fuzzing jobs, default 1).
# Exit status: 0 when no crash was found; libFuzzer's non-zero status otherwise, with the
# crashing input saved under <build>/fuzz/artifacts/ (reproduce: <binary> <artifact>).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
if [ "${1:-}" = "--clang-missing" ]; then
  # Registered by fuzz/CMakeLists.txt in place of the fuzz tests when configure found no clang++.
  if [ "${MTT_ALLOW_NO_FUZZ:-0}" = 1 ]; then
    echo "[fuzz] skipped: no clang++ at configure time (MTT_ALLOW_NO_FUZZ=1)"
    exit 77
  fi
  echo "[fuzz] FAILED: no clang++ was found when the build was configured, so the libFuzzer targets were not built." >&2
  echo "[fuzz] Install clang (scripts/setup.sh does) and re-run cmake; for a local run without it: MTT_ALLOW_NO_FUZZ=1" >&2
  exit 1
fi
BUILD_ONLY=0
if [ "${1:-}" = "--build-only" ]; then
  BUILD_ONLY=1
  shift
fi
SECS="${1:-20}"
BUILD="${2:-${MTT_BUILD:-build}}"
CXX="${MTT_FUZZ_CXX:-clang++}"
mkdir -p "$BUILD/fuzz"
OUT="$(cd "$BUILD/fuzz" && pwd)"  # absolute: the fuzzer runs from inside it
mkdir -p "$OUT/corpus" "$OUT/artifacts" "$OUT/seeds"

if ! command -v "$CXX" >/dev/null 2>&1; then
  echo "[fuzz] $CXX not found: cannot build the libFuzzer targets" >&2
  exit 1
fi

FLAGS=(-std=c++20 -g -O1 -fno-omit-frame-pointer
       -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined
       -I"$ROOT/lib" -I"$ROOT" -pthread)
# The header parser and what it uses: core and the safetensors reader (nlohmann is header-only).
SOURCES=("$ROOT/lib/io/safetensors.cpp" "$ROOT/lib/io/strict_json.cpp" "$ROOT"/lib/core/*.cpp)

build() {  # build <name>: fuzz/<name>.cpp -> $OUT/<name>, only when a source is newer
  local name=$1 bin="$OUT/$1" src="$ROOT/fuzz/$1.cpp" stale=0
  [ -x "$bin" ] || stale=1
  for f in "$src" "${SOURCES[@]}" "$ROOT"/lib/io/safetensors.h "$ROOT"/lib/io/strict_json.h "$ROOT"/lib/core/*.h; do
    [ "$f" -nt "$bin" ] && stale=1
  done
  if [ $stale = 1 ]; then
    echo "[fuzz] building $name with $CXX (ASan + UBSan)" >&2
    "$CXX" "${FLAGS[@]}" "$src" "${SOURCES[@]}" -o "$bin.tmp"
    mv "$bin.tmp" "$bin"
  fi
}

# Seeds: the committed hostile files (plain files at the top level) and small golden files.
rm -f "$OUT"/seeds/*
for f in "$ROOT"/tests/fixtures/hostile/*.safetensors; do
  [ -f "$f" ] && cp "$f" "$OUT/seeds/"
done
SHARED="${MTT_SHARED_DIR:-$ROOT/../shared}"
for f in "$SHARED"/golden/*/*.safetensors; do
  [ -f "$f" ] && [ "$(stat -c %s "$f")" -le 65536 ] && cp "$f" "$OUT/seeds/"
done

build safetensors_header_fuzzer
[ $BUILD_ONLY = 1 ] && exit 0

export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
echo "[fuzz] safetensors_header_fuzzer for ${SECS}s ($(ls "$OUT/seeds" | wc -l) seeds, corpus $OUT/corpus)" >&2
# -jobs makes libFuzzer write fuzz-N.log into the working directory: only ask for it when
# parallel jobs are wanted, and run from $OUT so logs stay out of the source tree.
jobs=()
[ "${MTT_FUZZ_JOBS:-1}" -gt 1 ] && jobs=(-jobs="$MTT_FUZZ_JOBS" -workers="$MTT_FUZZ_JOBS")
cd "$OUT"
"$OUT/safetensors_header_fuzzer" \
  -max_total_time="$SECS" -timeout=10 -rss_limit_mb=2048 -max_len=16384 \
  "${jobs[@]}" \
  -dict="$ROOT/fuzz/safetensors.dict" -artifact_prefix="$OUT/artifacts/" \
  -print_final_stats=1 "$OUT/corpus" "$OUT/seeds"
