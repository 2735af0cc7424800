#!/usr/bin/env bash
# The LibTorch half of a GPU session: builds the library against the GPU machine's own PyTorch (the
# one python3 imports) with the Debian libraries it lacks brought as unpacked packages, then runs the
# kernel dispatch tests, the GPU inference test and the benchmarks. The kernels themselves are
# checked first and without LibTorch by scripts/gpu_check_standalone.sh (kernels/README.md gives the
# order and the device budget).
#
#   scripts/gpu_check.sh [--build-dir DIR] [--presets LIST] [--configure-only]
#     --presets   infer_bench presets (default tiny,medium_300m; moshiko_7b takes minutes to make)
#     --configure-only   stop after CMake (what can be tried on a machine without a GPU)
# Needs: python3 with torch (CUDA build), nvcc, a C++ compiler, CMake >= 3.25 (pip's cmake is
# enough), and either the libraries installed or .gpu-deps/ from `scripts/gpu_deps.sh fetch`
# (carried to the machine: the device tool's `carry` names .gpu-deps).
# Prints one verdict line per step (PASS / FAIL / SKIP) and ends with RESULT; exit 0 when every
# step passed, 1 when one failed, 2 when the build failed. GPU tests that skip while nvidia-smi
# lists a GPU are a FAIL.
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BUILD="$ROOT/build-gpu"
PRESETS="tiny,medium_300m"
CONFIGURE_ONLY=0
while [ $# -gt 0 ]; do
  case "$1" in
    --build-dir) BUILD="$2"; shift ;;
    --presets) PRESETS="$2"; shift ;;
    --configure-only) CONFIGURE_ONLY=1 ;;
    *) echo "usage: $0 [--build-dir DIR] [--presets LIST] [--configure-only]" >&2; exit 64 ;;
  esac
  shift
done
case "$BUILD" in /*) ;; *) BUILD="$ROOT/$BUILD" ;; esac
mkdir -p "$BUILD"
JOBS="${MTT_JOBS:-$(nproc)}"
PASS=0; FAIL=0; SKIP=0
verdict() {
  printf '%-4s  %-40s  %s\n' "$1" "$2" "$3"
  case "$1" in PASS) PASS=$((PASS + 1)) ;; FAIL) FAIL=$((FAIL + 1)) ;; *) SKIP=$((SKIP + 1)) ;; esac
}
finish() { echo "RESULT  $PASS passed, $FAIL failed, $SKIP skipped (logs in $BUILD)"; exit "$1"; }
exec > >(tee "$BUILD/gpu_check.log") 2>&1

# ---- tools ----
PY="${MTT_PYTHON:-$(command -v python3)}"
TORCH_PREFIX="$("$PY" -c 'import torch.utils; print(torch.utils.cmake_prefix_path)' 2>/dev/null)" || {
  verdict FAIL "python3 has torch" "$PY cannot import torch"; finish 2; }
echo "[gpu_check] $("$PY" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, "devices", torch.cuda.device_count())')"
CMAKE="$(command -v cmake || echo "$(dirname "$PY")/cmake")"
[ -x "$CMAKE" ] || { verdict FAIL "cmake" "not found (pip's cmake beside $PY neither)"; finish 2; }
GEN=()
NINJA="$(command -v ninja || echo "$(dirname "$PY")/ninja")"
[ -x "$NINJA" ] && GEN=(-G Ninja -DCMAKE_MAKE_PROGRAM="$NINJA")
NVCC="$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)"
EXPECT_GPU=0
if command -v nvidia-smi >/dev/null && nvidia-smi -L 2>/dev/null | grep -q '^GPU '; then EXPECT_GPU=1; fi

# ---- the Debian libraries, unpacked (only where they are missing) ----
DEFS=()
LIBPATH=""
if [ -d "$ROOT/.gpu-deps" ] && ls "$ROOT/.gpu-deps"/*.deb >/dev/null 2>&1; then
  DEPS="$BUILD/deps"
  bash "$ROOT/scripts/gpu_deps.sh" unpack "$DEPS" || { verdict FAIL "unpack .gpu-deps" "see above"; finish 2; }
  L="$DEPS/usr/lib/x86_64-linux-gnu"
  mkdir -p "$DEPS/gomp"
  # libgomp: the machine's own when it has one (the compiler's), ours only as a fallback.
  if ! ldconfig -p 2>/dev/null | grep -q 'libgomp.so.1 '; then mv "$L"/libgomp.so* "$DEPS/gomp/" 2>/dev/null || true
  else rm -f "$L"/libgomp.so*; fi
  DEFS+=(-DCMAKE_PREFIX_PATH="$TORCH_PREFIX;$DEPS/usr"
         -Dnlohmann_json_DIR="$DEPS/usr/share/cmake/nlohmann_json" -DCLI11_DIR="$DEPS/usr/share/cmake/CLI11"
         -Dyaml-cpp_DIR="$L/cmake/yaml-cpp" -DGTest_DIR="$L/cmake/GTest"
         -DSNDFILE_INCLUDE_DIR="$DEPS/usr/include" -DSNDFILE_LIBRARY="$L/libsndfile.so"
         -DSOXR_INCLUDE_DIR="$DEPS/usr/include" -DSOXR_LIBRARY="$L/libsoxr.so")
  LIBPATH="$L:$DEPS/gomp"
  verdict PASS "libraries from .gpu-deps" "$(ls "$ROOT/.gpu-deps"/*.deb | wc -l) packages unpacked into $DEPS"
else
  DEFS+=(-DCMAKE_PREFIX_PATH="$TORCH_PREFIX")
  echo "[gpu_check] no .gpu-deps/: using the machine's own libraries"
fi
export LD_LIBRARY_PATH="${LIBPATH}${LIBPATH:+:}${LD_LIBRARY_PATH:-}"

# ---- configure and build ----
t0=$(date +%s)
if ! "$CMAKE" -S "$ROOT" -B "$BUILD" "${GEN[@]}" -DCMAKE_BUILD_TYPE=Release -DMTT_MINIMAL=ON \
     -DCMAKE_CUDA_COMPILER="$NVCC" -DCMAKE_CUDA_ARCHITECTURES="${MTT_CUDA_ARCH:-90}" \
     -DMTT_PYTHON="$PY" "${DEFS[@]}" > "$BUILD/configure.log" 2>&1; then
  tail -30 "$BUILD/configure.log"; verdict FAIL "configure (MTT_MINIMAL)" "$BUILD/configure.log"; finish 2
fi
grep -E "moshi-ttt:|LibTorch" "$BUILD/configure.log"
if ! grep -q "CUDA kernels ON" "$BUILD/configure.log"; then
  verdict FAIL "configure (MTT_MINIMAL)" "CUDA kernels OFF (nvcc: $NVCC)"; finish 2
fi
verdict PASS "configure (MTT_MINIMAL)" "$(( $(date +%s) - t0 )) s"
[ "$CONFIGURE_ONLY" = 1 ] && finish 0
t0=$(date +%s)
if ! "$CMAKE" --build "$BUILD" --target test_kernels test_infer kernels_bench infer_bench -j "$JOBS" > "$BUILD/build.log" 2>&1; then
  grep -E "error|Error" "$BUILD/build.log" | head -30; verdict FAIL "build" "$BUILD/build.log"; finish 2
fi
verdict PASS "build" "test_kernels test_infer kernels_bench infer_bench, $(( $(date +%s) - t0 )) s"

# ---- tests ----
unset MTT_DISABLE_CUDA_KERNELS
# Kernel tests: dispatch, CPU copy vs LibTorch, GPU vs CPU copy; the golden-file tests need ../shared,
# which does not travel to the GPU machine.
run_gtest() {  # run_gtest NAME BINARY FILTER
  local log="$BUILD/$1.log"
  "$2" --gtest_filter="$3" > "$log" 2>&1
  local rc=$?
  local ran skipped
  ran=$(grep -c '^\[       OK \] .* ms)$' "$log"); skipped=$(grep -c '^\[  SKIPPED \] .* ms)$' "$log")
  if [ $rc -ne 0 ]; then
    grep -E '^\[  FAILED  \]|Failure|error' "$log" | head -20; verdict FAIL "$1" "exit $rc ($log)"
  elif [ "$EXPECT_GPU" = 1 ] && grep -q 'GPU test skipped\|no CUDA device visible\|LibTorch without CUDA' "$log"; then
    grep -m 3 'GPU test skipped\|no CUDA device visible\|LibTorch without CUDA' "$log"
    verdict FAIL "$1" "GPU tests skipped although nvidia-smi lists a GPU ($log)"
  else
    verdict PASS "$1" "$ran passed, $skipped skipped"
  fi
}
run_gtest test_kernels "$BUILD/tests/test_kernels" '-ScanCpuRef.Vdit*:ScanCpuRef.Lmpt*'
grep -E '^\[ +(OK|SKIPPED|FAILED) +\] ScanGpu' "$BUILD/test_kernels.log"
run_gtest test_infer_device "$BUILD/tests/test_infer" 'InferDevice.*'

# ---- benchmarks ----
if "$BUILD/bin/kernels_bench" --reps 3 --json > "$BUILD/kernels_bench.json" 2> "$BUILD/kernels_bench.err"; then
  "$PY" -c 'import json,sys; d=json.load(open(sys.argv[1])); [print("BENCH kernels_bench %-22s %-4s kernel %8.3f ms %12.0f tok/s %6.2f TFLOP/s  libtorch %8.3f ms  speedup %.2fx" % (r["shape"], r["dtype"], r["kernel_ms"], r["kernel_tokens_per_s"], r["kernel_tflops"], r["libtorch_ms"], r["speedup"])) for r in d["results"]]' "$BUILD/kernels_bench.json"
  verdict PASS "kernels_bench" "$BUILD/kernels_bench.json"
else
  verdict FAIL "kernels_bench" "$(tail -3 "$BUILD/kernels_bench.err")"
fi
if [ "$EXPECT_GPU" = 0 ]; then
  verdict SKIP "infer_bench cuda bf16" "nvidia-smi lists no GPU"
elif "$BUILD/bin/infer_bench" --device cuda --dtype bf16 --preset "$PRESETS" --json > "$BUILD/infer_bench_cuda.json" 2> "$BUILD/infer_bench.err"; then
  cat "$BUILD/infer_bench_cuda.json"
  verdict PASS "infer_bench cuda bf16" "$PRESETS: $BUILD/infer_bench_cuda.json"
else
  verdict FAIL "infer_bench cuda bf16" "$(tail -3 "$BUILD/infer_bench.err")"
fi
finish $(( FAIL > 0 ? 1 : 0 ))
