#!/usr/bin/env bash
# A real single-node SLURM cluster on this machine, for testing `hydra/launcher=slurm`.
#   scripts/slurm_local.sh start    install slurm-wlm and munge if missing (Debian, as root), start
#                                   munged, slurmctld and slurmd on localhost; wait until the node is idle
#   scripts/slurm_local.sh stop     stop the daemons that start launched (munged too), and wait for them
#   scripts/slurm_local.sh status   sinfo
# State and logs live in $SLURM_LOCAL_DIR (default /tmp/mldoctor-slurm).
set -euo pipefail
DIR=${SLURM_LOCAL_DIR:-/tmp/mldoctor-slurm}
CONF=$DIR/slurm.conf
export SLURM_CONF=$CONF

install_packages() {
  command -v slurmctld >/dev/null && command -v munged >/dev/null && return 0
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    echo "slurm_local: slurm-wlm and munge are missing and cannot be installed here (need root and apt-get)" >&2
    exit 3
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >"$DIR/apt.log" 2>&1 || {
    apt-get update -qq >>"$DIR/apt.log" 2>&1
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >>"$DIR/apt.log" 2>&1
  } || { echo "slurm_local: apt-get install slurm-wlm munge failed (see $DIR/apt.log)" >&2; exit 3; }
}

write_conf() {
  local host cpus mem
  host=$(hostname -s)
  cpus=$(nproc)
  mem=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 * 8 / 10 ))
  mkdir -p "$DIR/state" "$DIR/spool" "$DIR/log"
  cat >"$CONF" <<CONF
ClusterName=mldoctor
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
ReturnToService=2
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=local Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF
}

start() {
  mkdir -p "$DIR"
  install_packages
  write_conf
  mkdir -p /etc/munge /run/munge /var/lib/munge /var/log/munge
  [ -s /etc/munge/munge.key ] || dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null
  chmod 400 /etc/munge/munge.key
  : >"$DIR/started"  # the daemons this start launched: stop ends exactly these
  pgrep -x munged >/dev/null || { munged --force && echo munged >>"$DIR/started"; }
  pgrep -x slurmctld >/dev/null || { slurmctld -f "$CONF" && echo slurmctld >>"$DIR/started"; }
  pgrep -x slurmd >/dev/null || { slurmd -f "$CONF" && echo slurmd >>"$DIR/started"; }
  for _ in $(seq 1 60); do
    if sinfo -h -o %T 2>/dev/null | grep -qE '^(idle|mixed|allocated)'; then
      echo "slurm_local: cluster up (SLURM_CONF=$CONF)"; return 0
    fi
    sleep 0.5
  done
  echo "slurm_local: node did not become idle; logs in $DIR/log" >&2
  sinfo >&2 || true
  exit 4
}

stop() {
  [ -f "$DIR/started" ] || { echo "slurm_local: nothing started from $DIR"; return 0; }
  for daemon in slurmd slurmctld munged; do  # the reverse of the start order
    grep -qx "$daemon" "$DIR/started" || continue
    pkill -x "$daemon" 2>/dev/null || true
    for _ in $(seq 1 40); do pgrep -x "$daemon" >/dev/null || break; sleep 0.25; done
    pgrep -x "$daemon" >/dev/null && pkill -9 -x "$daemon" 2>/dev/null
  done
  rm -f "$DIR/started"
  echo "slurm_local: stopped the daemons it started"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) sinfo ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
