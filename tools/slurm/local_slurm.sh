#!/usr/bin/env bash
# A Slurm cluster on this machine, for tests (learned in ../shared/slurm-notes.md): munged, slurmctld and slurmd with
# their configuration, state, logs and pid files under one folder.
#   tools/slurm/local_slurm.sh start DIR [NODES]   start the daemons (as root); prints `export SLURM_CONF=DIR/slurm.conf`
#   tools/slurm/local_slurm.sh stop DIR            stop what this folder started (daemons by their pid files, namespaces)
# NODES = 1 (default): one node, `localhost`. NODES >= 2: nodes node0 … node<N-1>, each in a network and UTS namespace
# of its own (its own hostname and address, 10.77.0.<i+1>, joined by a bridge with no address and no port outside
# them: nothing leaves the machine), its own slurmd; slurmctld runs on node0. Open MPI then sees N hosts and talks TCP
# between them. Slurm's clients (sbatch, squeue, scontrol, srun) reach slurmctld from node0's namespace: the start
# prints the prefix to run them with (`export QWEN3_SLURM_CLIENT="nsenter --net=/run/netns/…"`).
# Exit 0 when every node is idle and a warm-up job has run; 1 with a message otherwise.
set -uo pipefail
cmd="${1:-}"; dir="${2:-}"; nodes="${3:-1}"
[ -n "$cmd" ] && [ -n "$dir" ] || { echo "usage: local_slurm.sh start|stop DIR [NODES]" >&2; exit 2; }
mkdir -p "$dir" && dir="$(cd "$dir" && pwd)"
# This folder's namespaces <net>-n<i>, bridge <net>-br and links <net>-v<i>: a hash of its path, 8 hex digits.
net="q3$(printf '%08x' "$(printf %s "$dir" | cksum | cut -d' ' -f1)")"

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
  # The jobs first (their steps outlive the daemons otherwise), while slurmctld can still cancel them.
  if [ -f "$dir/slurm.conf" ] && [ -f "$dir/slurmctld.pid" ] && kill -0 "$(cat "$dir/slurmctld.pid")" 2>/dev/null; then
    client=""; [ -e "/run/netns/$net-n0" ] && client="nsenter --net=/run/netns/$net-n0"
    SLURM_CONF="$dir/slurm.conf" $client scancel --quiet --full --partition=test 2>/dev/null
    for _ in $(seq 50); do
      [ -z "$(SLURM_CONF="$dir/slurm.conf" $client squeue -h -t running,completing 2>/dev/null)" ] && break
      sleep 0.1
    done
  fi
  for f in "$dir"/slurmd*.pid; do stop_pid "$f"; done
  stop_pid "$dir/slurmctld.pid"
  stop_pid "$dir/munged.pid"
  # Whatever is left of this folder's cluster (a start that failed halfway, pid files deleted): its daemons by their
  # command lines, every process still in its namespaces (job steps that outlived the cancel), the namespaces.
  pkill -f -- "-f $dir/slurm.conf" 2>/dev/null
  for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep "^$net-n"); do
    pids="$(ip netns pids "$ns" 2>/dev/null)"; [ -z "$pids" ] || kill -9 $pids 2>/dev/null
    ip netns del "$ns"
  done
  for link in $(ip -o link show 2>/dev/null | grep -o "$net-[vb][0-9r]*" | sort -u); do ip link del "$link" 2>/dev/null; done
  exit 0
fi
[ "$cmd" = start ] || { echo "usage: local_slurm.sh start|stop DIR [NODES]" >&2; exit 2; }
[[ "$nodes" =~ ^[1-9][0-9]?$ ]] && [ "$nodes" -le 32 ] || { echo "local_slurm: NODES must be 1 to 32, got '$nodes'" >&2; exit 2; }
"$0" stop "$dir"  # what an earlier start of this folder left behind
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
cpus=$(( cpus < 4 ? 4 : cpus ))

# The nodes: names, addresses, and how to start a daemon on one (`on_node I command...`).
names=(); addrs=()
if [ "$nodes" -eq 1 ]; then
  names=(localhost); addrs=(127.0.0.1)
  on_node() { shift; "$@"; }
else
  ip link add "$net-br" type bridge && ip link set "$net-br" up || { echo "local_slurm: could not make a bridge (needs CAP_NET_ADMIN)" >&2; exit 1; }
  for i in $(seq 0 $((nodes - 1))); do
    names+=("node$i"); addrs+=("10.77.0.$((i + 1))")
    ns="$net-n$i"
    { ip netns add "$ns" && ip link add "$net-v$i" type veth peer name "$net-p$i" && ip link set "$net-p$i" netns "$ns" &&
      ip -n "$ns" link set "$net-p$i" name eth0 && ip link set "$net-v$i" master "$net-br" up &&
      ip -n "$ns" addr add "10.77.0.$((i + 1))/24" dev eth0 && ip -n "$ns" link set eth0 up && ip -n "$ns" link set lo up; } ||
      { echo "local_slurm: could not make node$i's network namespace" >&2; exit 1; }
  done
  # A daemon in node I's network namespace, a UTS namespace with its hostname and a mount namespace with a /tmp-like
  # folder of its own for PMIx (srun --mpi=pmix: each node's step daemon makes the same names there); the processes it
  # starts keep all three. Every other path is shared, as a cluster's file system is.
  mkdir -p "$dir/pmix"
  on_node() {
    local i="$1"; shift
    nsenter --net="/run/netns/$net-n$i" unshare --uts --mount \
      sh -c 'hostname "$0" && mount -t tmpfs -o size=64m qwen3-pmix "$1" && shift && exec "$@"' "node$i" "$dir/pmix" "$@"
  }
fi
client=""; [ "$nodes" -gt 1 ] && client="nsenter --net=/run/netns/$net-n0"
node_lines=""
for i in "${!names[@]}"; do
  node_lines+="NodeName=${names[$i]} NodeAddr=${addrs[$i]} CPUs=$cpus RealMemory=${mem:-1000} State=UNKNOWN"$'\n'
done
head="${names[0]}"; [ "$nodes" -gt 1 ] && head="node0(${addrs[0]})"
mkdir -p "$dir/state" "$dir/log"
cat > "$dir/slurm.conf" <<CONF
ClusterName=qwen3test
SlurmctldHost=$head
SlurmUser=root
AuthType=auth/munge
AuthInfo=socket=$dir/munge/munge.socket
CredType=cred/munge
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool-%n
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd-%n.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd-%n.log
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
# A loaded test machine (2 cores, a build beside the tests) is slow, never lost: Slurm's defaults for the daemons' calls
# (10 s), a batch job's start (10 s: then the job is requeued or failed as "missing"), a step's processes to die (60 s:
# then the node is drained and every later job pends) and a finished job's record (300 s: then scontrol no longer knows
# the job a test waits on) are raised well past what load can cost.
MessageTimeout=60
BatchStartTimeout=300
UnkillableStepTimeout=300
MinJobAge=3600
${node_lines}PartitionName=test Nodes=$(IFS=,; echo "${names[*]}") Default=YES MaxTime=INFINITE State=UP
CONF
[ "$nodes" -gt 1 ] && echo "PMIxCliTmpDirBase=$dir/pmix" > "$dir/mpi.conf"
export SLURM_CONF="$dir/slurm.conf"
on_node 0 slurmctld -f "$SLURM_CONF" || { echo "local_slurm: slurmctld did not start (see $dir/log/slurmctld.log)" >&2; exit 1; }
for i in "${!names[@]}"; do
  on_node "$i" slurmd -f "$SLURM_CONF" -N "${names[$i]}" ||
    { echo "local_slurm: slurmd of ${names[$i]} did not start (see $dir/log/slurmd-${names[$i]}.log)" >&2; exit 1; }
done
idle() { [ "$($client sinfo -h -N -t idle -o %N 2>/dev/null | sort -u | wc -l)" -eq "$nodes" ]; }
# Usually under a second; a loaded machine may take much longer to register the slurmds.
for _ in $(seq 600); do idle && break; sleep 0.2; done
idle || { echo "local_slurm: not every node became idle" >&2; exit 1; }
# A fresh slurmctld schedules nothing for a few seconds: one warm-up job (on every node).
$client sbatch --wait -N "$nodes" -o /dev/null --wrap true >/dev/null 2>&1 || { echo "local_slurm: the warm-up job failed" >&2; exit 1; }
echo "export SLURM_CONF=$SLURM_CONF"
[ -z "$client" ] || echo "export QWEN3_SLURM_CLIENT=\"$client\""
