#!/usr/bin/env bash
# A real Slurm 22.05 cluster on this machine, for tests and trying things out.
#
#   slurm/local-cluster.sh up [STATE_DIR]     install (Debian packages) and start munged,
#                                             slurmctld and two slurmd (node1, node2)
#   slurm/local-cluster.sh down [STATE_DIR]   stop exactly the daemons it started (by pid)
#
# All state lives in STATE_DIR (default: .slurm in the repo), never in /etc/slurm. After `up`,
# `. STATE_DIR/env` points sbatch, squeue, scontrol and hvdtrain slurm at this cluster.
# Runs as root (Debian's Slurm daemons need it here); nodes are emulated with Slurm's
# multiple-slurmd support: two slurmd on 127.0.0.1 with their own names and ports.
set -euo pipefail

action=${1:?usage: local-cluster.sh up|down [STATE_DIR]}
repo=$(cd "$(dirname "$0")/.." && pwd)
dir=$(realpath -m "${2:-$repo/.slurm}")
nodes=(node1 node2)
cpus=${HVDTRAIN_SLURM_CPUS:-4}   # per node; config_overrides lets a node claim more than it has
port=${HVDTRAIN_SLURM_PORT:-16817}  # slurmctld; the slurmd take the next ports

stop_pidfile() {  # stop one daemon by its pid file, after checking the pid is really that daemon
  local pidfile=$1 name=$2 pid
  [ -f "$pidfile" ] || return 0
  pid=$(cat "$pidfile")
  if [ -r "/proc/$pid/cmdline" ] && tr '\0' ' ' < "/proc/$pid/cmdline" | grep -q "$name"; then
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 50); do [ -d "/proc/$pid" ] || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$pidfile"
}

down() {
  [ -f "$dir/slurm.conf" ] && SLURM_CONF="$dir/slurm.conf" scancel --full --quiet --user root 2>/dev/null || true
  for node in "${nodes[@]}"; do stop_pidfile "$dir/run/slurmd-$node.pid" slurmd; done
  stop_pidfile "$dir/run/slurmctld.pid" slurmctld
  stop_pidfile "$dir/run/munged.pid" munged
  # job steps whose slurmd is gone; only those under this cluster's spool directory
  pkill -f "slurmstepd.*$dir" 2>/dev/null || true
}

install() {
  local missing=()
  for pkg in slurmctld slurmd slurm-client munge libpmix-dev; do
    dpkg-query -W -f='${Status}\n' "$pkg" 2>/dev/null | grep -q '^install ok installed' || missing+=("$pkg")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

write_conf() {
  local host node_port=$((port + 1))
  host=$(hostname -s)
  {
    echo "ClusterName=hvdtrain"
    echo "SlurmctldHost=$host(127.0.0.1)"
    echo "SlurmctldPort=$port"
    echo "SlurmUser=root"
    echo "SlurmdUser=root"
    echo "AuthType=auth/munge"
    echo "CredType=cred/munge"
    echo "AuthInfo=socket=$dir/munge/socket/munge.socket.2"
    echo "StateSaveLocation=$dir/state"
    echo "SlurmdSpoolDir=$dir/spool/%n"
    echo "TmpFS=$dir/tmp/%n"
    echo "SlurmctldPidFile=$dir/run/slurmctld.pid"
    echo "SlurmdPidFile=$dir/run/slurmd-%n.pid"
    echo "SlurmctldLogFile=$dir/log/slurmctld.log"
    echo "SlurmdLogFile=$dir/log/slurmd-%n.log"
    echo "ProctrackType=proctrack/linuxproc"
    echo "TaskPlugin=task/none"
    echo "JobAcctGatherType=jobacct_gather/none"
    echo "AccountingStorageType=accounting_storage/none"
    echo "JobCompType=jobcomp/filetxt"
    echo "JobCompLoc=$dir/log/jobcomp.txt"
    echo "SelectType=select/cons_tres"
    echo "SelectTypeParameters=CR_Core"
    echo "SlurmdParameters=config_overrides"
    echo "MpiDefault=none"
    echo "MailProg=/bin/true"
    echo "SchedulerParameters=batch_sched_delay=0"
    echo "MinJobAge=600"
    echo "KillWait=5"
    echo "ReturnToService=2"
    echo "JobRequeue=1"
    for node in "${nodes[@]}"; do
      echo "NodeName=$node NodeHostname=$host NodeAddr=127.0.0.1 Port=$node_port CPUs=$cpus State=UNKNOWN"
      node_port=$((node_port + 1))
    done
    echo "PartitionName=debug Nodes=$(IFS=,; echo "${nodes[*]}") Default=YES MaxTime=INFINITE State=UP"
  } > "$dir/slurm.conf"
}

up() {
  install
  down
  mkdir -p "$dir"/{state,log,run,munge/socket} "$dir/munge/private"
  chmod 0755 "$dir" "$dir/munge" "$dir/munge/socket"
  chmod 0700 "$dir/munge/private"
  for node in "${nodes[@]}"; do mkdir -p "$dir/spool/$node" "$dir/tmp/$node"; done
  [ -f "$dir/munge/private/munge.key" ] || mungekey --create --keyfile="$dir/munge/private/munge.key"
  chmod 0600 "$dir/munge/private/munge.key"
  munged --force --socket="$dir/munge/socket/munge.socket.2" --key-file="$dir/munge/private/munge.key" \
    --pid-file="$dir/run/munged.pid" --log-file="$dir/log/munged.log" --seed-file="$dir/munge/private/seed" \
    --origin=127.0.0.1
  write_conf
  slurmctld -c -f "$dir/slurm.conf"
  for node in "${nodes[@]}"; do slurmd -f "$dir/slurm.conf" -N "$node"; done
  echo "export SLURM_CONF=$dir/slurm.conf" > "$dir/env"
  for _ in $(seq 100); do
    idle=$(SLURM_CONF="$dir/slurm.conf" sinfo -h -o '%t %D' 2>/dev/null | awk '$1 == "idle" {print $2}')
    [ "${idle:-0}" = "${#nodes[@]}" ] && break
    sleep 0.1
  done
  SLURM_CONF="$dir/slurm.conf" sinfo
  echo "Slurm is up. Use it with:  . $dir/env"
  cat "$dir/env"
}

case "$action" in
  up) up ;;
  down) down ;;
  *) echo "usage: local-cluster.sh up|down [STATE_DIR]" >&2; exit 2 ;;
esac
