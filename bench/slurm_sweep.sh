#!/usr/bin/env bash
# Slurm overhead of ttt-sweep (issue 7): the same grid run locally with --jobs 1 and through a real
# single-node Slurm (scripts/slurm_local.sh, brought up here in a private folder and taken down at
# exit) as an array (one task per point) plus the dependent summary job. Wall time of the Slurm run:
# from `ttt-sweep --slurm --submit` until the summary job's record appears (polled every 0.1 s).
# Reports runs/s of both and the overhead per grid point ((slurm - local) / points).
#
#   bash bench/slurm_sweep.sh [--json] [--spec SPEC] [--full] [--cpus-per-task N ...] [--repeat N]
#
# Defaults: tests/slurm/grid.yaml --reduced (6 points), --cpus-per-task 2 (one task at a time on a
# 2-CPU node: the same parallelism as --jobs 1) and 1 (as many tasks as CPUs), 3 repeats (medians),
# stock scheduler settings (MTT_SLURM_SCHEDULER_PARAMETERS=batch_sched_delay=0 for the tuned ones).
set -euo pipefail
cd "$(dirname "$0")/.."
root="$(pwd)"
exe="$root/${MTT_BUILD:-build}/bin/ttt-sweep"
spec="$root/tests/slurm/grid.yaml"
reduced="--reduced"
json=0
repeat=3
cpus_list=()
while [ $# -gt 0 ]; do
  case "$1" in
    --json) json=1 ;;
    --spec) spec="$(realpath "$2")"; shift ;;
    --full) reduced="" ;;
    --cpus-per-task) cpus_list+=("$2"); shift ;;
    --repeat) repeat="$2"; shift ;;
    *) echo "usage: $0 [--json] [--spec SPEC] [--full] [--cpus-per-task N ...] [--repeat N]" >&2; exit 64 ;;
  esac
  shift
done
[ ${#cpus_list[@]} -eq 0 ] && cpus_list=(2 1)
[ -x "$exe" ] || { echo "slurm_sweep.sh: $exe: not built (cmake --build build --target ttt-sweep)" >&2; exit 2; }

work="$(mktemp -d "${TMPDIR:-/tmp}/mtt-slurm-bench-XXXXXX")"
chmod 755 "$work"  # munged: every folder above its socket searchable by all
export MTT_SLURM_DIR="$work/cluster" MTT_SLURM_PORT="${MTT_SLURM_PORT:-$((20000 + 2 * ($$ % 5000)))}"
cleanup() { bash "$root/scripts/slurm_local.sh" down >/dev/null 2>&1 || true; rm -rf "$work"; }
trap cleanup EXIT
bash scripts/slurm_local.sh up 2>/dev/null
export SLURM_CONF="$MTT_SLURM_DIR/slurm.conf"
jobcomp="$MTT_SLURM_DIR/log/jobcomp.log"

now() { date +%s.%N; }
median() { sort -g | awk '{v[NR]=$1} END {print (NR % 2) ? v[(NR+1)/2] : (v[NR/2] + v[NR/2+1]) / 2}'; }

points=""
local_times=()
for r in $(seq 1 "$repeat"); do
  t0=$(now)
  "$exe" run "$spec" $reduced --out "$work/local-$r" --jobs 1 --no-progress >/dev/null
  t1=$(now)
  local_times+=("$(echo "$t1 - $t0" | bc -l)")
  points="$(ls "$work/local-$r/runs" | wc -l)"
done
local_s="$(printf '%s\n' "${local_times[@]}" | median)"

results=()
for cpus in "${cpus_list[@]}"; do
  times=()
  for r in $(seq 1 "$repeat"); do
    out="$work/slurm-$cpus-$r"
    t0=$(now)
    msg="$("$exe" run "$spec" $reduced --out "$out" --slurm --submit --cpus-per-task "$cpus" --mem 512M)"
    sum_id="$(sed -n 's/.*summary job \([0-9]*\).*/\1/p' <<<"$msg")"
    until grep -q "^JobId=$sum_id " "$jobcomp" 2>/dev/null; do sleep 0.1; done
    t1=$(now)
    grep -q "^JobId=$sum_id .*JobState=COMPLETED" "$jobcomp" || { echo "slurm_sweep.sh: summary job $sum_id failed (logs in $out/slurm/logs)" >&2; exit 1; }
    cmp -s "$out/summary.csv" "$work/local-1/summary.csv" || { echo "slurm_sweep.sh: $out/summary.csv differs from the local run" >&2; exit 1; }
    times+=("$(echo "$t1 - $t0" | bc -l)")
  done
  s="$(printf '%s\n' "${times[@]}" | median)"
  results+=("$cpus $s")
done

if [ "$json" -eq 1 ]; then
  printf '{"spec": "%s", "reduced": %s, "points": %s, "repeat": %s, "cpus": %s, "scheduler_parameters": "%s",\n' \
    "$(basename "$spec")" "$([ -n "$reduced" ] && echo true || echo false)" "$points" "$repeat" "$(nproc)" \
    "${MTT_SLURM_SCHEDULER_PARAMETERS:-}"
  printf ' "local_jobs1": {"wall_s": %.3f, "runs_per_s": %.3f},\n "slurm": [' "$local_s" "$(echo "$points / $local_s" | bc -l)"
  sep=""
  for row in "${results[@]}"; do
    read -r cpus s <<<"$row"
    printf '%s\n  {"cpus_per_task": %s, "wall_s": %.3f, "runs_per_s": %.3f, "overhead_per_point_s": %.3f}' "$sep" \
      "$cpus" "$s" "$(echo "$points / $s" | bc -l)" "$(echo "($s - $local_s) / $points" | bc -l)"
    sep=","
  done
  printf ']}\n'
else
  echo "Slurm SchedulerParameters: ${MTT_SLURM_SCHEDULER_PARAMETERS:-(stock)}"
  printf '%-26s %8s %8s %14s\n' "run ($points points, median of $repeat)" "wall s" "runs/s" "overhead/pt s"
  printf '%-26s %8.2f %8.3f %14s\n' "local --jobs 1" "$local_s" "$(echo "$points / $local_s" | bc -l)" "-"
  for row in "${results[@]}"; do
    read -r cpus s <<<"$row"
    printf '%-26s %8.2f %8.3f %14.3f\n' "slurm --cpus-per-task $cpus" "$s" "$(echo "$points / $s" | bc -l)" \
      "$(echo "($s - $local_s) / $points" | bc -l)"
  done
fi
