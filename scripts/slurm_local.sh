#!/usr/bin/env bash
# A single-node Slurm cluster on this host, in a private folder, for the opt-in `slurm` test label
# (issue 7: ttt-sweep --slurm --submit against a real Slurm). Debian 12's slurmctld/slurmd/munge.
#
#   bash scripts/slurm_local.sh up       # install packages if missing, write the config, start munged,
#                                        # slurmctld and slurmd, wait until the node is idle (idempotent)
#   bash scripts/slurm_local.sh down     # cancel our jobs, stop the three daemons we started (idempotent)
#   bash scripts/slurm_local.sh status   # daemons and sinfo; exit 0 when up, 3 when down
#   bash scripts/slurm_local.sh env      # prints `export SLURM_CONF=...` for sbatch/squeue
#
# Settings (environment): MTT_SLURM_DIR (folder), MTT_SLURM_PORT (slurmctld port, slurmd uses the
# next one; default 16817), MTT_SLURM_SCHEDULER_PARAMETERS (slurm.conf SchedulerParameters), and
# MTT_SLURM_UP_TIMEOUT (seconds to wait for the node, default 60). They apply when `up` starts a
# stopped cluster.
#
# Everything (slurm.conf, munge key and socket, state, spool, logs, pid files) lives in
# $MTT_SLURM_DIR (default /tmp/mtt-slurm-<uid>); nothing under /etc is changed and a Slurm or munge
# already running on the host is left alone (own ports and own munge socket). Daemons started by
# `up` live until `down` or until the session that started them ends.
set -euo pipefail

DIR="${MTT_SLURM_DIR:-${TMPDIR:-/tmp}/mtt-slurm-$(id -u)}"
PORT="${MTT_SLURM_PORT:-16817}"          # slurmctld; slurmd listens on PORT+1
NODE="$(hostname -s)"
CONF="$DIR/slurm.conf"
MUNGE_SOCK="$DIR/run/munge.socket"
UP_TIMEOUT="${MTT_SLURM_UP_TIMEOUT:-60}"
# Stock scheduler settings unless set, e.g. "batch_sched_delay=0": 22.05 then dispatches the next
# array task within ~1 s of the last one ending instead of ~3 s (bench/slurm_sweep.sh shows both).
SCHED_PARAMS="${MTT_SLURM_SCHEDULER_PARAMETERS:-}"

log() { echo "[slurm_local] $*" >&2; }
die() { echo "[slurm_local] error: $*" >&2; exit 1; }

alive() {  # alive PIDFILE: the pid in it names a running process
  [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null
}

install_packages() {
  local pkgs=(slurmctld slurmd slurm-client munge) missing=()
  for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "apt-get install ${missing[*]}"
  local SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
}

write_config() {
  mkdir -p "$DIR"/{state,spool,log,munge,run}
  # munged wants its key private and every directory above its socket searchable by all.
  chmod 755 "$DIR" "$DIR/run"
  chmod 700 "$DIR/munge"
  local cpus mem_mb user
  cpus="$(nproc)"
  # 95% of MemTotal: slurmd drains a node whose configured RealMemory exceeds what it measures.
  mem_mb="$(awk '/^MemTotal:/ {printf "%d", $2 / 1024 * 0.95}' /proc/meminfo)"
  user="$(id -un)"
  local tmp="$CONF.tmp.$$"
  cat >"$tmp" <<EOF
# Written by scripts/slurm_local.sh: single-node cluster on $NODE, private to $DIR.
ClusterName=mttlocal
SlurmctldHost=$NODE(127.0.0.1)
SlurmctldPort=$PORT
SlurmdPort=$((PORT + 1))
SlurmUser=$user
SlurmdUser=$user
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$MUNGE_SOCK
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
# No cgroups: works in containers; processes are tracked by parentage, tasks are not bound.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
# One line per finished job (state, exit code): what the test reads instead of sacct.
JobCompType=jobcomp/filetxt
JobCompLoc=$DIR/log/jobcomp.log
SchedulerType=sched/backfill
${SCHED_PARAMS:+SchedulerParameters=$SCHED_PARAMS}
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
SlurmdParameters=config_overrides
MpiDefault=none
ReturnToService=2
MinJobAge=600
SlurmctldTimeout=30
SlurmdTimeout=60
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=local Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
  mv -f "$tmp" "$CONF"
}

start_munge() {
  alive "$DIR/munge/munged.pid" && return 0
  if [ ! -s "$DIR/munge/munge.key" ]; then
    log "creating a munge key in $DIR/munge"
    dd if=/dev/urandom of="$DIR/munge/munge.key.tmp" bs=1 count=1024 status=none
    chmod 400 "$DIR/munge/munge.key.tmp"
    mv -f "$DIR/munge/munge.key.tmp" "$DIR/munge/munge.key"
  fi
  rm -f "$MUNGE_SOCK"
  munged --key-file="$DIR/munge/munge.key" --socket="$MUNGE_SOCK" --pid-file="$DIR/munge/munged.pid" \
    --log-file="$DIR/log/munged.log" --seed-file="$DIR/munge/munged.seed" ||
    die "munged did not start (see $DIR/log/munged.log)"
  munge -S "$MUNGE_SOCK" -n | unmunge -S "$MUNGE_SOCK" >/dev/null || die "munge round trip failed on $MUNGE_SOCK"
}

node_state() {
  SLURM_CONF="$CONF" sinfo -h -N -n "$NODE" -o '%T' 2>/dev/null | head -1 || true
}

up() {
  install_packages
  if ! alive "$DIR/slurmctld.pid"; then
    write_config
  fi
  start_munge
  export SLURM_CONF="$CONF"
  if ! alive "$DIR/slurmctld.pid"; then
    # -c: a clean start, jobs of an earlier session are not resurrected.
    slurmctld -c || die "slurmctld did not start (see $DIR/log/slurmctld.log)"
  fi
  if ! alive "$DIR/slurmd.pid"; then
    slurmd -N "$NODE" || die "slurmd did not start (see $DIR/log/slurmd.log)"
  fi
  local t=0 st=""
  while [ "$t" -lt "$UP_TIMEOUT" ]; do
    st="$(node_state)"
    case "$st" in
      idle*|mixed*|allocated*|completing*) log "up: node $NODE $st; SLURM_CONF=$CONF"; return 0 ;;
      down*|drain*) scontrol update nodename="$NODE" state=resume >/dev/null 2>&1 || true ;;
    esac
    sleep 1
    t=$((t + 1))
  done
  die "node $NODE not ready after ${UP_TIMEOUT}s (state '${st}'; logs in $DIR/log)"
}

stop_pidfile() {  # stop_pidfile NAME PIDFILE
  local pf="$2" pid i
  alive "$pf" || { rm -f "$pf"; return 0; }
  pid="$(cat "$pf")"
  kill -TERM "$pid" 2>/dev/null || true
  for i in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$pid" 2>/dev/null; then
    log "$1 ($pid) ignored SIGTERM for 10 s; SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$pf"
}

down() {
  if alive "$DIR/slurmctld.pid"; then
    SLURM_CONF="$CONF" scancel -u "$(id -un)" >/dev/null 2>&1 || true
  fi
  stop_pidfile slurmd "$DIR/slurmd.pid"
  stop_pidfile slurmctld "$DIR/slurmctld.pid"
  stop_pidfile munged "$DIR/munge/munged.pid"
  log "down ($DIR)"
}

status() {
  local rc=0 name pf
  for name in munged slurmctld slurmd; do
    case "$name" in munged) pf="$DIR/munge/munged.pid" ;; *) pf="$DIR/$name.pid" ;; esac
    if alive "$pf"; then echo "$name: running (pid $(cat "$pf"))"; else echo "$name: stopped"; rc=3; fi
  done
  if [ "$rc" -eq 0 ]; then SLURM_CONF="$CONF" sinfo -N -l || rc=3; fi
  echo "SLURM_CONF=$CONF"
  return "$rc"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  env) echo "export SLURM_CONF=$CONF" ;;
  *) echo "usage: $0 up|down|status|env   (folder: \$MTT_SLURM_DIR, default $DIR)" >&2; exit 64 ;;
esac
