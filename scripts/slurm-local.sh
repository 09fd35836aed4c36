#!/usr/bin/env bash
# A single-node Slurm on this machine for tests/slurm.rs: installs Debian's slurm-wlm and
# munge if missing, writes a slurm.conf for this host with its CPUs and memory, and starts
# munged, slurmctld and slurmd. Needs root; idempotent (a running cluster is left alone).
#   sudo scripts/slurm-local.sh        # then: sinfo
set -euo pipefail

log() { echo "slurm-local: $*" >&2; }
[ "$(id -u)" = 0 ] || { log "needs root"; exit 1; }

if sinfo -h -o %T 2>/dev/null | grep -qE '^(idle|mixed|allocated)'; then
  log "already running"; exit 0
fi

if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v munged >/dev/null; then
  log "installing slurm-wlm and munge"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null
fi

host=$(hostname -s)
cpus=$(nproc)
# Leave some memory to the system; --mem requests are checked against RealMemory.
mem=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 * 9 / 10 ))

mkdir -p /etc/munge /var/lib/munge /var/log/munge /run/munge \
  /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm
if [ ! -s /etc/munge/munge.key ]; then
  if command -v mungekey >/dev/null; then mungekey --create --force; else
    dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key status=none; fi
fi
chown -R munge:munge /etc/munge /var/lib/munge /var/log/munge /run/munge
chmod 700 /etc/munge /var/lib/munge /var/log/munge
chmod 755 /run/munge
chmod 400 /etc/munge/munge.key
if ! pgrep -x munged >/dev/null; then
  runuser -u munge -- /usr/sbin/munged
fi
munge -n | unmunge >/dev/null || { log "munge does not work"; exit 1; }

# Root runs the daemons; no cgroups (containers often have none to give).
cat > /etc/slurm/slurm.conf <<EOF
ClusterName=negimg-local
SlurmctldHost=${host}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
ReturnToService=2
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
NodeName=${host} CPUs=${cpus} RealMemory=${mem} State=UNKNOWN
PartitionName=local Nodes=${host} Default=YES MaxTime=INFINITE State=UP
EOF

pgrep -x slurmctld >/dev/null || slurmctld
pgrep -x slurmd >/dev/null || slurmd

for _ in $(seq 1 30); do
  state=$(sinfo -h -o %T 2>/dev/null | head -n1 || true)
  case "$state" in
    idle*|mixed*|allocated*) log "running: node ${host}, ${cpus} CPUs, ${mem} MB"; exit 0 ;;
    down*|drain*) scontrol update nodename="${host}" state=resume 2>/dev/null || true ;;
  esac
  sleep 1
done
log "slurm did not come up; see /var/log/slurm/slurmctld.log and slurmd.log"
exit 1
