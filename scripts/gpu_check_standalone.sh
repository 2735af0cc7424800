#!/usr/bin/env bash
# Standalone check of the CUDA TTT scan kernels on a bare GPU machine: no LibTorch, no Debian
# libraries, no CMake. nvcc builds one binary from the kernels, their CPU copy and the check
# (kernels/ttt_scan/gpu_check/); it then prints one verdict line per check (PASS / FAIL / SKIP) and
# one TIME line per timed shape:
#   1. the CPU copy's self-checks (fp64 forward, finite differences, invariances)
#   2. the kernels against the CPU copy on Moshi (H 32, d 128, b 32) and DiT (d 64, b 64) shapes,
#      forward (TTT-Linear, TTT-MLP) and backward (TTT-Linear), fp32 and bf16 tensor cores
#   3. compute-sanitizer memcheck, racecheck, synccheck, initcheck on small shapes
#   4. timing: tokens/s and TFLOP/s against the cuBLAS GEMM peak measured in the same run
#
#   scripts/gpu_check_standalone.sh [--cpu-only|--fake-gpu|--build-only] [--quick] [--build-dir DIR]
#     --cpu-only    build the host half with a C++ compiler (no CUDA needed) and run step 1 only
#     --fake-gpu    a dry run of steps 2-4 without a GPU: the check built with a C++ compiler against
#                   a stand-in device whose "kernels" are the CPU copy summed in another order
#                   (gpu_check/fake_cuda.h); then once more with a planted fault that must be caught
#     --build-only  build the nvcc binary and stop (a machine without a GPU can check the build)
#     --quick       smaller shapes (what the CTests run)
# Environment: NVCC (default: nvcc on PATH or /usr/local/cuda/bin/nvcc), MTT_CUDA_ARCH (90),
# CXX (--cpu-only; default c++), MTT_JOBS (parallel compiles; default nproc).
# Exit status: 0 every check passed; 1 a check failed; 2 the build failed; 77 no GPU (nvidia-smi
# lists none and the CUDA runtime sees none: nothing to check beyond step 1). When nvidia-smi lists a
# GPU and the CUDA runtime reports none, that is a FAIL, not a skip.
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BUILD="$ROOT/build-gpu-check"
MODE=gpu
QUICK=()
while [ $# -gt 0 ]; do
  case "$1" in
    --cpu-only) MODE=cpu ;;
    --fake-gpu) MODE=fake ;;
    --build-only) MODE=build ;;
    --quick) QUICK=(--quick) ;;
    --build-dir) BUILD="$2"; shift ;;
    *) echo "usage: $0 [--cpu-only|--fake-gpu|--build-only] [--quick] [--build-dir DIR]" >&2; exit 64 ;;
  esac
  shift
done
mkdir -p "$BUILD"
JOBS="${MTT_JOBS:-$(nproc)}"
ARCH="${MTT_CUDA_ARCH:-90}"
K="$ROOT/kernels"
HOST_SRCS=("$K/ttt_scan/params.cpp" "$K/ttt_scan/cpu_ref/scan_cpu_ref.cpp" "$K/ttt_scan/cpu_ref/naive_f64.cpp"
           "$K/ttt_scan/gpu_check/cases.cpp" "$K/ttt_scan/gpu_check/gpu_check.cpp")
CUDA_SRCS=("$K/ttt_scan/cuda/linear_fwd.cu" "$K/ttt_scan/cuda/mlp_fwd.cu" "$K/ttt_scan/cuda/linear_bwd.cu")
PASS=0; FAIL=0; SKIP=0
verdict() {  # verdict STATUS NAME DETAIL: the binary's line format, counted here
  printf '%-4s  %-40s  %s\n' "$1" "$2" "$3"
  case "$1" in PASS) PASS=$((PASS + 1)) ;; FAIL) FAIL=$((FAIL + 1)) ;; *) SKIP=$((SKIP + 1)) ;; esac
}
# Counts the verdict lines of one run of the binary (its output in $1).
count() {
  PASS=$((PASS + $(grep -c '^PASS ' "$1"))); FAIL=$((FAIL + $(grep -c '^FAIL ' "$1"))); SKIP=$((SKIP + $(grep -c '^SKIP ' "$1")))
}
finish() {
  echo "RESULT  $PASS passed, $FAIL failed, $SKIP skipped (log: $BUILD/gpu_check.log)"
  exit "$1"
}
# Rebuild only when a source or header changed (the CTest runs this often).
up_to_date() {
  [ -x "$1" ] && [ -z "$(find "$K/common" "$K/ttt_scan" "$0" -newer "$1" \( -name '*.h' -o -name '*.cuh' -o -name '*.cpp' -o -name '*.cu' -o -name '*.sh' \) -print -quit)" ]
}

# Compiles the given sources in parallel with "$@" as the compiler command line (objects in $OBJ).
compile_all() {
  local srcs=("${SRCS[@]}") pids=() i=0 rc=0
  for s in "${srcs[@]}"; do
    while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do wait -n || rc=1; done
    "$@" -c "$s" -o "$OBJ/$(basename "$s").o" &
    i=$((i + 1))
  done
  while [ "$(jobs -rp | wc -l)" -gt 0 ]; do wait -n || rc=1; done
  return $rc
}

# Host-compiler builds (--cpu-only, --fake-gpu): build_host BIN OBJDIR [extra flags and sources...]
build_host() {
  local bin="$1" obj="$2"; shift 2
  local defs=() extra=()
  for a in "$@"; do case "$a" in -*) defs+=("$a") ;; *) extra+=("$a") ;; esac; done
  up_to_date "$bin" && return 0
  CXX="${CXX:-c++}"
  OBJ="$obj"; mkdir -p "$OBJ"; rm -f "$OBJ"/*.o
  SRCS=("${HOST_SRCS[@]}" "${extra[@]}")
  local t0=$(date +%s)
  if ! compile_all "$CXX" -std=c++17 -O2 -pthread -Wall -Wextra "${defs[@]}" -I"$ROOT" ||
     ! "$CXX" -pthread "$OBJ"/*.o -o "$bin"; then
    verdict FAIL "build $(basename "$bin")" "$CXX failed"; finish 2
  fi
  echo "[gpu_check] built $bin with $CXX in $(( $(date +%s) - t0 )) s"
}

if [ "$MODE" = cpu ]; then
  BIN="$BUILD/ttt_scan_gpu_check_host"
  build_host "$BIN" "$BUILD/obj-host"
  "$BIN" --cpu-only "${QUICK[@]}" | tee "$BUILD/gpu_check.log"
  rc=${PIPESTATUS[0]}
  count "$BUILD/gpu_check.log"
  finish $(( rc == 0 ? 0 : 1 ))
fi

if [ "$MODE" = fake ]; then
  BIN="$BUILD/ttt_scan_gpu_check_fake"
  build_host "$BIN" "$BUILD/obj-fake" -DMTT_HAVE_CUDA=1 -DMTT_GPU_CHECK_FAKE_CUDA=1 -DMTT_GPU_CHECK_NO_CUBLAS=1 \
    -DMTT_CUDA_ARCH="$ARCH" "$K/ttt_scan/gpu_check/fake_launch.cpp"
  for step in "check:--expect-gpu" "sanitize:--sanitize" "timing:--timing"; do
    "$BIN" ${step#*:} "${QUICK[@]}" 2>&1 | tee "$BUILD/fake-${step%%:*}.out"
    [ "${PIPESTATUS[0]}" -eq 0 ] || verdict FAIL "fake device: ${step%%:*}" "exit status ${PIPESTATUS[0]}"
    count "$BUILD/fake-${step%%:*}.out"
  done
  MTT_FAKE_GPU_FAULT=eta "$BIN" --expect-gpu "${QUICK[@]}" > "$BUILD/fake-fault.out" 2>&1
  rc=$?
  caught=$(grep -c '^FAIL .* vs cpu\( tc-image\)\?  ' "$BUILD/fake-fault.out")
  cases=$(grep -c ' vs cpu\( tc-image\)\?  ' "$BUILD/fake-fault.out")
  if [ $rc -eq 1 ] && [ "$caught" -eq "$cases" ] && [ "$cases" -gt 0 ]; then
    verdict PASS "fake device: planted fault caught" "eta x (1 - 1/b): $caught of $cases tight comparisons fail, exit 1"
  else
    verdict FAIL "fake device: planted fault caught" "exit $rc, $caught of $cases tight comparisons fail ($BUILD/fake-fault.out)"
  fi
  finish $(( FAIL > 0 ? 1 : 0 ))
fi

# ---- nvcc build (one binary, sm_$ARCH) ----
NVCC="${NVCC:-$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)}"
if [ ! -x "$NVCC" ]; then verdict FAIL "build with nvcc" "nvcc not found (set NVCC)"; finish 2; fi
CUDA_HOME="$(cd "$(dirname "$NVCC")/.." && pwd)"
echo "[gpu_check] $("$NVCC" --version | tail -1), arch sm_$ARCH, $JOBS jobs, build dir $BUILD"
BIN="$BUILD/ttt_scan_gpu_check"
LIBS=()
DEFS=(-DMTT_HAVE_CUDA=1 -DMTT_CUDA_ARCH="$ARCH")
# cuBLAS for the GEMM peak: the toolkit's, else the one beside python3's PyTorch (pip nvidia-cublas).
CUBLAS_INC="" CUBLAS_LIB=""
for d in "$CUDA_HOME/include" "$CUDA_HOME/targets/x86_64-linux/include"; do [ -f "$d/cublas_v2.h" ] && CUBLAS_INC="$d" && break; done
for f in "$CUDA_HOME"/lib64/libcublas.so "$CUDA_HOME"/lib64/libcublas.so.* "$CUDA_HOME"/targets/x86_64-linux/lib/libcublas.so; do
  [ -e "$f" ] && CUBLAS_LIB="$f" && break
done
if { [ -z "$CUBLAS_INC" ] || [ -z "$CUBLAS_LIB" ]; } && command -v python3 >/dev/null; then
  py="$(python3 -c 'import nvidia.cublas, os; print(list(nvidia.cublas.__path__)[0])' 2>/dev/null || true)"
  if [ -n "$py" ] && [ -f "$py/include/cublas_v2.h" ]; then
    CUBLAS_INC="$py/include"; CUBLAS_LIB="$(ls "$py"/lib/libcublas.so* 2>/dev/null | head -1)"
  fi
fi
if [ -n "$CUBLAS_INC" ] && [ -n "$CUBLAS_LIB" ]; then
  LIBS=("$CUBLAS_LIB" -Xlinker -rpath="$(dirname "$CUBLAS_LIB")")
  DEFS+=(-I"$CUBLAS_INC")
else
  echo "[gpu_check] cuBLAS not found: the timing lines will have no GEMM peak" >&2
  DEFS+=(-DMTT_GPU_CHECK_NO_CUBLAS=1)
fi
if ! up_to_date "$BIN"; then
  OBJ="$BUILD/obj"; mkdir -p "$OBJ"; rm -f "$OBJ"/*.o
  SRCS=("${HOST_SRCS[@]}" "${CUDA_SRCS[@]}")
  t0=$(date +%s)
  if ! compile_all "$NVCC" -std=c++17 -O3 -arch=sm_"$ARCH" -lineinfo -Xcompiler -pthread "${DEFS[@]}" -I"$ROOT" ||
     ! "$NVCC" -arch=sm_"$ARCH" -Xcompiler -pthread "$OBJ"/*.o "${LIBS[@]}" -o "$BIN"; then
    verdict FAIL "build with nvcc" "compile or link failed (see above)"; finish 2
  fi
  verdict PASS "build with nvcc" "sm_$ARCH, $(( $(date +%s) - t0 )) s, $BIN"
fi
[ "$MODE" = build ] && finish 0

exec > >(tee "$BUILD/gpu_check.log") 2>&1
# ---- is there a GPU? ----
EXPECT=()
if command -v nvidia-smi >/dev/null && nvidia-smi -L 2>/dev/null | grep -q '^GPU '; then
  EXPECT=(--expect-gpu)
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader 2>&1 | sed 's/^/[gpu_check] nvidia-smi: /'
else
  echo "[gpu_check] nvidia-smi lists no GPU"
fi

run_step() {  # run_step LOGNAME CMD...: the binary's verdicts counted, its exit status returned
  local log="$BUILD/$1.out"; shift
  "$@" 2>&1 | tee "$log"
  local rc=${PIPESTATUS[0]}
  count "$log"
  return $rc
}

# 1. CPU copy
run_step cpu "$BIN" --cpu-only "${QUICK[@]}"
# 2. Kernels vs CPU copy (fails here when nvidia-smi lists a GPU the runtime cannot use)
run_step check "$BIN" "${QUICK[@]}" "${EXPECT[@]}"
rc=$?
if [ $rc -eq 77 ]; then
  echo "[gpu_check] no GPU: sanitizers and timing skipped"
  finish $(( FAIL > 0 ? 1 : 77 ))
fi
if [ $rc -ne 0 ] && ! grep -q '^PASS  cuda runtime sees the GPU' "$BUILD/check.out"; then
  finish 1  # no usable device: nothing more can run
fi
# 3. compute-sanitizer on small shapes (every kernel, both GEMM paths, both buffer placements)
SAN="$(command -v compute-sanitizer || echo "$CUDA_HOME/bin/compute-sanitizer")"
for p in /usr/local/cuda/bin/compute-sanitizer /usr/local/cuda/compute-sanitizer/compute-sanitizer; do
  [ -x "$SAN" ] || SAN="$p"
done
if [ ! -x "$SAN" ]; then
  verdict FAIL "compute-sanitizer" "not found (looked on PATH and in $CUDA_HOME/bin)"
else
  for tool in memcheck racecheck synccheck initcheck; do
    t0=$(date +%s)
    timeout 300 "$SAN" --tool "$tool" --error-exitcode 99 --print-limit 20 "$BIN" --sanitize > "$BUILD/san-$tool.out" 2>&1
    rc=$?
    dt=$(( $(date +%s) - t0 ))
    errs="$(grep -E '^========= (ERROR SUMMARY|RACECHECK SUMMARY)' "$BUILD/san-$tool.out" | tail -1 | sed 's/^========= //')"
    fails=$(grep -c '^FAIL ' "$BUILD/san-$tool.out")
    if [ $rc -eq 0 ]; then verdict PASS "compute-sanitizer $tool" "${errs:-no errors}, $dt s"
    elif [ $rc -eq 124 ]; then verdict FAIL "compute-sanitizer $tool" "timed out after 300 s"
    elif [ $rc -eq 99 ]; then verdict FAIL "compute-sanitizer $tool" "${errs:-errors} ($BUILD/san-$tool.out)"; grep -m 20 '^=========' "$BUILD/san-$tool.out"
    else verdict FAIL "compute-sanitizer $tool" "exit $rc, $fails failed checks under the tool ($BUILD/san-$tool.out)"; grep -m 10 '^FAIL ' "$BUILD/san-$tool.out"
    fi
  done
fi
# 4. Timing
run_step timing "$BIN" --timing
finish $(( FAIL > 0 ? 1 : 0 ))
