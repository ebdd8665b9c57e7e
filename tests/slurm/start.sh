#!/usr/bin/env bash
# Start a throw-away one-node SLURM on this machine (munged + slurmctld + slurmd), for tests.
#
#   tests/slurm/start.sh [STATE_DIR]        # default: $LAYERWISE_SLURM_DIR or /tmp/layerwise-slurm
#   . STATE_DIR/env.sh                      # SLURM_CONF for sbatch/squeue/sinfo/scontrol
#   tests/slurm/stop.sh [STATE_DIR]         # stops exactly the daemons started here (by PID)
#
# Everything lives in STATE_DIR: slurm.conf, gres.conf, a private munge key and socket, the
# controller state, logs and one <daemon>.pid per daemon. No system munged is used or stopped,
# and the ports (default 16817/16818, LAYERWISE_SLURMCTLD_PORT/LAYERWISE_SLURMD_PORT) are not
# SLURM's. The one thing outside STATE_DIR is a link /etc/slurm/slurm.conf -> STATE_DIR/slurm.conf
# (see below), made only where no SLURM config exists; so this refuses to run on a machine that
# is part of a real cluster. Installs Debian's slurmctld, slurmd, slurm-client and munge first
# when they are missing (needs root; apt-get). Idempotent: an earlier cluster in STATE_DIR is
# stopped and its state wiped (slurmctld -c), so no DRAIN state survives.
#
# The node: named after `hostname -s`, two partitions (`main`, the default, and `lwtest`),
# CPUs = max(nproc, 8) and RealMemory = max(real, 64 GiB) via SlurmdParameters=config_overrides
# (nothing is enforced: proctrack/linuxproc, task/none), so the user-facing profile's requests
# fit; and two fake GPUs (gres gpu:fakegpu:2, files /dev/null and /dev/zero): a job asking for
# one sees CUDA_VISIBLE_DEVICES=0 or 1, two such jobs run side by side. There is no accounting
# database, so `sacct` fails: clients must poll with `squeue` (MinJobAge=3600 keeps finished
# jobs visible to it for an hour, the length of a test session).
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
STATE="${1:-${LAYERWISE_SLURM_DIR:-/tmp/layerwise-slurm}}"
CTLD_PORT="${LAYERWISE_SLURMCTLD_PORT:-16817}"
SLURMD_PORT="${LAYERWISE_SLURMD_PORT:-16818}"

log() { echo "[slurm-start] $*" >&2; }

# ---------------------------------------------------------------- packages (idempotent)
need=()
for cmd in slurmctld:slurmctld slurmd:slurmd sbatch:slurm-client munged:munge mungekey:munge; do
  command -v "${cmd%%:*}" >/dev/null 2>&1 || need+=("${cmd##*:}")
done
if ((${#need[@]})); then
  mapfile -t need < <(printf '%s\n' "${need[@]}" | sort -u)
  if [[ $(id -u) -ne 0 ]]; then
    log "missing packages: ${need[*]}; install them as root: apt-get install -y ${need[*]}"
    exit 1
  fi
  log "installing ${need[*]} (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >/dev/null
  apt-get install -y -q "${need[@]}" >/dev/null
fi

# ---------------------------------------------------------------- a clean state dir
if [[ -d "$STATE" ]]; then
  if [[ -n "$(ls -A "$STATE")" ]] && ! grep -qs '^# Written by tests/slurm/start.sh' "$STATE/slurm.conf"; then
    log "$STATE is not empty and holds no test cluster of ours; pick another STATE_DIR"
    exit 1
  fi
  bash "$HERE/stop.sh" "$STATE" || true
  rm -rf "$STATE"
fi
mkdir -p "$STATE"/{munge,ctld,slurmd}
chmod 700 "$STATE" "$STATE/munge"
STATE="$(cd "$STATE" && pwd)"
# on any failure from here on, stop whatever was started
trap 'rc=$?; if ((rc)); then bash "$HERE/stop.sh" "$STATE"; fi; exit $rc' EXIT

HOST="$(hostname -s)"
read -r REAL_CPUS REAL_MEM < <(slurmd -C | sed -n 's/.*CPUs=\([0-9]*\).*RealMemory=\([0-9]*\).*/\1 \2/p')
CPUS=$((REAL_CPUS > 8 ? REAL_CPUS : 8))
MEM=$((REAL_MEM > 65536 ? REAL_MEM : 65536))

# ---------------------------------------------------------------- munge (private key + socket)
SOCKET="$STATE/munge/munge.socket"
mungekey --create --keyfile="$STATE/munge/munge.key" --force >/dev/null 2>&1 \
  || dd if=/dev/urandom of="$STATE/munge/munge.key" bs=1024 count=1 status=none
chmod 600 "$STATE/munge/munge.key"
munged --force --socket="$SOCKET" --key-file="$STATE/munge/munge.key" \
  --pid-file="$STATE/munged.pid" --log-file="$STATE/munged.log" \
  --seed-file="$STATE/munge/munged.seed"
for _ in $(seq 50); do [[ -S "$SOCKET" && -s "$STATE/munged.pid" ]] && break; sleep 0.1; done
munge --socket="$SOCKET" -n | unmunge --socket="$SOCKET" >/dev/null \
  || { log "munged does not answer on $SOCKET; see $STATE/munged.log"; exit 1; }

# ---------------------------------------------------------------- slurm.conf, gres.conf
cat >"$STATE/slurm.conf" <<EOF
# Written by tests/slurm/start.sh: a one-node test cluster; not for production.
ClusterName=layerwise-test
SlurmctldHost=${HOST}(127.0.0.1)
SlurmctldPort=${CTLD_PORT}
SlurmdPort=${SLURMD_PORT}
AuthType=auth/munge
AuthInfo=socket=${SOCKET}
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
StateSaveLocation=${STATE}/ctld
SlurmdSpoolDir=${STATE}/slurmd
SlurmctldPidFile=${STATE}/slurmctld.pid
SlurmdPidFile=${STATE}/slurmd.pid
SlurmctldLogFile=${STATE}/slurmctld.log
SlurmdLogFile=${STATE}/slurmd.log
SlurmdParameters=config_overrides
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2
ReturnToService=2
MinJobAge=3600
DefMemPerCPU=1000
InactiveLimit=0
KillWait=5
GresTypes=gpu
NodeName=${HOST} NodeAddr=127.0.0.1 CPUs=${CPUS} RealMemory=${MEM} Gres=gpu:fakegpu:2 State=UNKNOWN
PartitionName=main Nodes=${HOST} Default=YES MaxTime=INFINITE State=UP
PartitionName=lwtest Nodes=${HOST} Default=NO MaxTime=INFINITE State=UP
EOF
cat >"$STATE/gres.conf" <<EOF
AutoDetect=off
NodeName=${HOST} Name=gpu Type=fakegpu File=/dev/null,/dev/zero Count=2
EOF
printf 'export SLURM_CONF=%q\n' "$STATE/slurm.conf" >"$STATE/env.sh"
export SLURM_CONF="$STATE/slurm.conf"

# The job step plugin starts each job with a nested `srun` whose environment it clears of all
# SLURM_* variables, SLURM_CONF included, so srun reads the default /etc/slurm/slurm.conf.
# Point that at this cluster's file; only when there is none (or it is an earlier link of ours),
# so a real cluster's config is never replaced. stop.sh removes the link again.
ETC_CONF=/etc/slurm/slurm.conf
ours() { [[ -L "$1" ]] && { [[ ! -e "$1" ]] || grep -q '^# Written by tests/slurm/start.sh' "$1"; }; }
if ours "$ETC_CONF" || [[ ! -e "$ETC_CONF" && ! -L "$ETC_CONF" ]]; then
  mkdir -p "$(dirname "$ETC_CONF")"
  ln -sfn "$SLURM_CONF" "$ETC_CONF"
  echo "$ETC_CONF" >"$STATE/etc-link"
elif [[ "$(readlink -f "$ETC_CONF")" != "$SLURM_CONF" ]]; then
  log "$ETC_CONF exists and belongs to another SLURM; this test cluster needs that path" \
    "(jobs' nested srun reads it). Run the test on a machine without a SLURM config."
  exit 1
fi

# ---------------------------------------------------------------- daemons
# the daemons fork into the background and write their PID files; a PID counts only while it
# names the daemon (a controller left over from elsewhere on the same port must not pass)
ours_alive() { local pid; pid="$(cat "$STATE/$1.pid" 2>/dev/null)" && [[ -n "$pid" ]] \
  && [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" == "$1" ]]; }
if timeout 5 scontrol ping 2>/dev/null | grep -q UP; then
  log "a slurmctld already answers on port $CTLD_PORT; stop it or set LAYERWISE_SLURMCTLD_PORT"
  exit 1
fi
slurmctld -c -f "$SLURM_CONF"
for _ in $(seq 100); do
  ours_alive slurmctld && timeout 5 scontrol ping 2>/dev/null | grep -q UP && break
  sleep 0.2
done
if ! { ours_alive slurmctld && timeout 5 scontrol ping | grep -q UP; }; then
  log "slurmctld did not come up; see $STATE/slurmctld.log"
  exit 1
fi
slurmd -f "$SLURM_CONF"
for _ in $(seq 50); do ours_alive slurmd && break; sleep 0.1; done
ours_alive slurmd || { log "slurmd did not start; see $STATE/slurmd.log"; exit 1; }
state=""
for _ in $(seq 150); do
  state="$(sinfo -h -n "$HOST" -p main -o %t 2>/dev/null || true)"
  [[ "$state" == idle || "$state" == mix || "$state" == alloc ]] && break
  sleep 0.2
done
if [[ "$state" != idle && "$state" != mix && "$state" != alloc ]]; then
  log "node $HOST is '${state:-unknown}', not idle; see $STATE/slurmd.log and $STATE/slurmctld.log"
  sinfo -R >&2 || true
  exit 1
fi
log "up: node $HOST ($CPUS CPUs, $MEM MB, gpu:fakegpu:2), partitions main (default) + lwtest;" \
  "SLURM_CONF=$SLURM_CONF; pids: munged $(cat "$STATE/munged.pid")" \
  "slurmctld $(cat "$STATE/slurmctld.pid") slurmd $(cat "$STATE/slurmd.pid")"
