#!/usr/bin/env bash
# Builds the libFuzzer targets with clang (ASan + UBSan, torch-free sources only) into
# <build>/fuzz and runs each for a short time, seeded from the hostile corpora.
#
#   scripts/fuzz.sh [--build-only] [seconds=20] [build_dir=$MTT_BUILD or build] [target...]
#   scripts/fuzz.sh --clang-missing   (the placeholder test when configure found no clang++)
#
# Targets (fuzz/<target>.cpp): safetensors_header_fuzzer, yaml_spec_fuzzer, wav_reader_fuzzer;
# default all of them, one after the other (--build-only builds them all).
# (The test suite runs --build-only as a CTest fixture first: the sanitizer build alone can take
# minutes on a loaded machine, and a run's timeout should only cover the fuzzing.)
# Env: MTT_FUZZ_CXX (default clang++), MTT_FUZZ_JOBS (parallel fuzzing jobs, default 1).
# Exit status: 0 when no crash was found; libFuzzer's non-zero status otherwise, with the
# crashing input saved under <build>/fuzz/artifacts/ (reproduce: <binary> <artifact>); 77 (the
# CTest skip code, reported as skipped with this script's message) when there is no clang++.
# A target that fails to build is an error, never a skip.
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
shift $(( $# > 2 ? 2 : $# ))
ALL=(safetensors_header_fuzzer yaml_spec_fuzzer wav_reader_fuzzer)
TARGETS=("$@")
[ ${#TARGETS[@]} -eq 0 ] && TARGETS=("${ALL[@]}")
CXX="${MTT_FUZZ_CXX:-clang++}"
mkdir -p "$BUILD/fuzz"
OUT="$(cd "$BUILD/fuzz" && pwd)"  # absolute: the fuzzer runs from inside it
mkdir -p "$OUT/artifacts"

if ! command -v "$CXX" >/dev/null 2>&1; then
  echo "[fuzz] SKIPPED: $CXX not found, the libFuzzer targets cannot be built (apt-get install clang)" >&2
  exit 77
fi

FLAGS=(-std=c++20 -g -O1 -fno-omit-frame-pointer
       -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined
       -I"$ROOT/lib" -I"$ROOT" -pthread)
CORE=()
# lib/core without version.cpp (its commit string is generated into the CMake build dir).
for f in "$ROOT"/lib/core/*.cpp; do [ "$(basename "$f")" = version.cpp ] || CORE+=("$f"); done

# Sources, headers and libraries of each target (torch-free: what it parses and what that uses).
sources() {
  case $1 in
    safetensors_header_fuzzer) echo "$ROOT/lib/io/safetensors.cpp $ROOT/lib/io/strict_json.cpp" ;;
    yaml_spec_fuzzer) echo "$ROOT/lib/experiments/spec.cpp $ROOT/lib/io/strict_yaml.cpp" ;;
    wav_reader_fuzzer) echo "$ROOT/lib/io/audio.cpp" ;;
  esac
}
headers() {
  case $1 in
    safetensors_header_fuzzer) echo "$ROOT/lib/io/safetensors.h $ROOT/lib/io/strict_json.h" ;;
    yaml_spec_fuzzer) echo "$ROOT/lib/experiments/spec.h $ROOT/lib/io/strict_yaml.h" ;;
    wav_reader_fuzzer) echo "$ROOT/lib/io/audio.h" ;;
  esac
}
libs() {
  case $1 in
    yaml_spec_fuzzer) pkg-config --libs yaml-cpp 2>/dev/null || echo "-lyaml-cpp" ;;
    wav_reader_fuzzer) pkg-config --libs sndfile soxr 2>/dev/null || echo "-lsndfile -lsoxr" ;;
  esac
}
dict() {
  case $1 in
    safetensors_header_fuzzer) echo "$ROOT/fuzz/safetensors.dict" ;;
    yaml_spec_fuzzer) echo "$ROOT/fuzz/yaml.dict" ;;
    wav_reader_fuzzer) echo "$ROOT/fuzz/wav.dict" ;;
  esac
}

build() {  # build <name>: fuzz/<name>.cpp -> $OUT/<name>, only when a source is newer
  local name=$1 bin="$OUT/$1" src="$ROOT/fuzz/$1.cpp" stale=0
  local srcs hdrs
  read -r -a srcs <<<"$(sources "$name")"
  read -r -a hdrs <<<"$(headers "$name")"
  [ -x "$bin" ] || stale=1
  for f in "$src" "${srcs[@]}" "${CORE[@]}" "${hdrs[@]}" "$ROOT"/lib/core/*.h "$0"; do
    [ "$f" -nt "$bin" ] && stale=1
  done
  if [ $stale = 1 ]; then
    echo "[fuzz] building $name with $CXX (ASan + UBSan)" >&2
    # shellcheck disable=SC2046
    "$CXX" "${FLAGS[@]}" "$src" "${srcs[@]}" "${CORE[@]}" $(libs "$name") -o "$bin.tmp"
    mv "$bin.tmp" "$bin"
  fi
}

# Seeds, refreshed on every call: committed inputs, small golden files, generated audio.
seeds() {
  local name=$1 dir="$OUT/seeds/$1"
  rm -rf "$dir"
  mkdir -p "$dir" "$OUT/corpus/$name"
  case $name in
    safetensors_header_fuzzer)
      for f in "$ROOT"/tests/fixtures/hostile/*.safetensors; do
        [ -f "$f" ] && cp "$f" "$dir/"
      done
      local shared="${MTT_SHARED_DIR:-$ROOT/../shared}"
      for f in "$shared"/golden/*/*.safetensors; do
        [ -f "$f" ] && [ "$(stat -c %s "$f")" -le 65536 ] && cp "$f" "$dir/"
      done
      ;;
    yaml_spec_fuzzer)
      local i=0
      for f in "$ROOT"/experiments/*.yaml "$ROOT"/experiments/train/*.yaml "$ROOT"/tests/fixtures/sweep/*.yaml \
               "$ROOT"/tests/slurm/*.yaml "$ROOT"/tests/fixtures/hostile_inputs/*.yaml; do
        [ -f "$f" ] && cp "$f" "$dir/seed$((i++)).yaml"
      done
      ;;
    wav_reader_fuzzer)
      local gen="$OUT/make_wav_seeds"
      if [ ! -x "$gen" ] || [ "$ROOT/fuzz/make_wav_seeds.cpp" -nt "$gen" ]; then
        # shellcheck disable=SC2046
        "$CXX" -std=c++17 -O1 "$ROOT/fuzz/make_wav_seeds.cpp" $(libs wav_reader_fuzzer) -o "$gen"
      fi
      "$gen" "$dir" >/dev/null
      for f in "$ROOT"/tests/fixtures/hostile_inputs/*.wav; do
        [ -f "$f" ] && cp "$f" "$dir/"
      done
      ;;
  esac
  if [ -z "$(ls -A "$dir")" ]; then
    echo "[fuzz] $name: no seeds found (expected some under $ROOT)" >&2
    exit 1
  fi
}

for t in "${TARGETS[@]}"; do
  case " ${ALL[*]} " in *" $t "*) ;; *) echo "[fuzz] unknown target '$t' (targets: ${ALL[*]})" >&2; exit 64 ;; esac
  build "$t"
done
[ $BUILD_ONLY = 1 ] && exit 0

export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
# -jobs makes libFuzzer write fuzz-N.log into the working directory: only ask for it when
# parallel jobs are wanted, and run from $OUT so logs stay out of the source tree.
jobs=()
[ "${MTT_FUZZ_JOBS:-1}" -gt 1 ] && jobs=(-jobs="$MTT_FUZZ_JOBS" -workers="$MTT_FUZZ_JOBS")
cd "$OUT"
for t in "${TARGETS[@]}"; do
  seeds "$t"
  echo "[fuzz] $t for ${SECS}s ($(ls "$OUT/seeds/$t" | wc -l) seeds, corpus $OUT/corpus/$t)" >&2
  "$OUT/$t" \
    -max_total_time="$SECS" -timeout=10 -rss_limit_mb=2048 -max_len=16384 \
    "${jobs[@]}" \
    -dict="$(dict "$t")" -artifact_prefix="$OUT/artifacts/$t-" \
    -print_final_stats=1 "$OUT/corpus/$t" "$OUT/seeds/$t"
done
