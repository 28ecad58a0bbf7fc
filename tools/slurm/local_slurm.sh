#!/usr/bin/env bash
# A single-node Slurm on this machine, for tests (learned in ../shared/slurm-notes.md): munged, slurmctld and slurmd
# with their configuration, state, logs and pid files under one folder.
#   tools/slurm/local_slurm.sh start DIR   start the daemons (as root); prints the line `export SLURM_CONF=DIR/slurm.conf`
#   tools/slurm/local_slurm.sh stop DIR    stop the daemons this folder started (by their pid files)
# Exit 0 when the node is idle and a warm-up job has run; 1 with a message otherwise.
set -uo pipefail
cmd="${1:-}"; dir="${2:-}"
[ -n "$cmd" ] && [ -n "$dir" ] || { echo "usage: local_slurm.sh start|stop DIR" >&2; exit 2; }
mkdir -p "$dir" && dir="$(cd "$dir" && pwd)"

stop_pid() {  # pid file → SIGTERM, then wait until gone (zombies count as gone)
  local f="$1" pid state
  [ -f "$f" ] || return 0
  pid="$(cat "$f")"
  kill "$pid" 2>/dev/null
  for _ in $(seq 50); do
    state="$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)"
    [ -z "$state" ] || [ "$state" = Z ] && break
    sleep 0.1
  done
  rm -f "$f"
}

if [ "$cmd" = stop ]; then
  stop_pid "$dir/slurmd.pid"
  stop_pid "$dir/slurmctld.pid"
  stop_pid "$dir/munged.pid"
  exit 0
fi
[ "$cmd" = start ] || { echo "usage: local_slurm.sh start|stop DIR" >&2; exit 2; }
for b in munged slurmctld slurmd sbatch scontrol; do
  command -v "$b" >/dev/null || [ -x "/usr/sbin/$b" ] || { echo "local_slurm: $b is not installed (munge slurmctld slurmd slurm-client)" >&2; exit 1; }
done
[ "$(id -u)" -eq 0 ] || { echo "local_slurm: the daemons need root" >&2; exit 1; }

# munge, as its own user, with a socket of our own
mkdir -p "$dir/munge" && chown munge:munge "$dir/munge" && chmod 755 "$dir/munge"
runuser -u munge -- /usr/sbin/munged --socket="$dir/munge/munge.socket" --pid-file="$dir/munge/munged.pid" \
  --log-file="$dir/munge/munged.log" --seed-file="$dir/munge/seed" || { echo "local_slurm: munged did not start" >&2; exit 1; }
cp "$dir/munge/munged.pid" "$dir/munged.pid"

read -r cpus mem < <(slurmd -C | awk '{for (i = 1; i <= NF; i++) { split($i, kv, "="); if (kv[1] == "CPUs") c = kv[2]; if (kv[1] == "RealMemory") m = kv[2] } } END { print c, m }')
mkdir -p "$dir/state" "$dir/spool" "$dir/log"
cat > "$dir/slurm.conf" <<CONF
ClusterName=qwen3test
SlurmctldHost=localhost
SlurmUser=root
AuthType=auth/munge
AuthInfo=socket=$dir/munge/munge.socket
CredType=cred/munge
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
SlurmctldPort=16817
SlurmdPort=16818
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
MailProg=/bin/true
EnforcePartLimits=ALL
SchedulerParameters=batch_sched_delay=0
SlurmdParameters=config_overrides
ReturnToService=2
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$(( cpus < 4 ? 4 : cpus )) RealMemory=${mem:-1000} State=UNKNOWN
PartitionName=test Nodes=localhost Default=YES MaxTime=INFINITE State=UP
CONF
export SLURM_CONF="$dir/slurm.conf"
slurmctld -f "$SLURM_CONF" || { echo "local_slurm: slurmctld did not start (see $dir/log/slurmctld.log)" >&2; exit 1; }
slurmd -f "$SLURM_CONF" -N localhost || { echo "local_slurm: slurmd did not start (see $dir/log/slurmd.log)" >&2; exit 1; }
for _ in $(seq 100); do
  scontrol show node localhost 2>/dev/null | grep -q "State=IDLE" && break
  sleep 0.2
done
scontrol show node localhost 2>/dev/null | grep -q "State=IDLE" || { echo "local_slurm: the node did not become idle" >&2; exit 1; }
# A fresh slurmctld schedules nothing for a few seconds: one warm-up job.
sbatch --wait -n 1 -o /dev/null --wrap true >/dev/null 2>&1 || { echo "local_slurm: the warm-up job failed" >&2; exit 1; }
echo "export SLURM_CONF=$SLURM_CONF"
