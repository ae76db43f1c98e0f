#!/usr/bin/env bash
# A single-node Slurm on localhost for tests/test_cluster_slurm.py: installs Debian's slurm-wlm and
# munge when missing (needs root), writes a minimal slurm.conf when none exists, and starts munged,
# slurmctld and slurmd. Idempotent: does nothing when a controller already answers.
# Usage: bash .ci/slurm.sh   (then: sinfo; SIMCIM_SLURM_TESTS=1 python -m pytest -q tests/test_cluster_slurm.py)
set -euo pipefail

if command -v scontrol >/dev/null && scontrol ping 2>/dev/null | grep -q "is UP"; then
    echo "slurm.sh: a Slurm controller already answers"; sinfo; exit 0
fi
if [ "$(id -u)" != 0 ]; then
    echo "slurm.sh: needs root to install and start Slurm" >&2; exit 1
fi
if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null
fi

host=$(hostname -s)
conf=/etc/slurm/slurm.conf
if [ ! -f "$conf" ]; then
    cpus=$(nproc); [ "$cpus" -lt 4 ] && cpus=4   # room for a few one-core worker jobs on a small machine
    mem_mib=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 / 2 ))
    mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm
    cat > "$conf" <<EOF
# written by simcim's .ci/slurm.sh: one node, localhost, no accounting, no cgroups
ClusterName=simcim-ci
SlurmctldHost=${host}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SlurmdParameters=config_overrides
MpiDefault=none
ReturnToService=2
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
KillWait=5
NodeName=${host} NodeAddr=127.0.0.1 CPUs=${cpus} RealMemory=${mem_mib} State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
fi

mkdir -p /run/munge /var/log/munge /var/lib/munge
chown munge:munge /run/munge /var/log/munge /var/lib/munge 2>/dev/null || true
[ -s /etc/munge/munge.key ] || { mungekey --create --force 2>/dev/null || /usr/sbin/create-munge-key -f; }
pgrep -x munged >/dev/null || runuser -u munge -- /usr/sbin/munged
pgrep -x slurmctld >/dev/null || /usr/sbin/slurmctld
pgrep -x slurmd >/dev/null || /usr/sbin/slurmd

for _ in $(seq 60); do
    state=$(sinfo -h -o %T 2>/dev/null | head -1 || true)
    case "$state" in idle*|mixed*|alloc*) echo "slurm.sh: node ${host} is ${state}"; sinfo; exit 0 ;; esac
    sleep 1
done
echo "slurm.sh: Slurm did not come up; see /var/log/slurm/slurmctld.log and slurmd.log" >&2
exit 1
