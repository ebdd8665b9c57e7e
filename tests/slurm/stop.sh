#!/usr/bin/env bash
# Stop the test cluster that tests/slurm/start.sh started in STATE_DIR: cancel its jobs, then
# stop slurmd, slurmctld and munged by the PIDs recorded there (TERM, then KILL after 10 s), and
# remove the /etc/slurm/slurm.conf link start.sh made. Never stops anything by name. Safe to
# run twice, or when nothing runs.
#
#   tests/slurm/stop.sh [STATE_DIR]     # default: $LAYERWISE_SLURM_DIR or /tmp/layerwise-slurm
set -uo pipefail

STATE="${1:-${LAYERWISE_SLURM_DIR:-/tmp/layerwise-slurm}}"
if [[ ! -d "$STATE" ]]; then
  exit 0
fi
STATE="$(cd "$STATE" && pwd)"

# A recorded PID counts only while it still names the daemon that wrote it.
alive() { # pidfile name
  local pid
  pid="$(cat "$1" 2>/dev/null)" || return 1
  [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null \
    && [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" == "$2" ]] && echo "$pid"
}

if [[ -f "$STATE/slurm.conf" ]] && alive "$STATE/slurmctld.pid" slurmctld >/dev/null; then
  export SLURM_CONF="$STATE/slurm.conf"
  timeout 10 scancel --quiet --user="$(id -un)" 2>/dev/null || true
  # let slurmstepd end the jobs' processes before slurmd goes away (KillWait=5)
  for _ in $(seq 30); do
    [[ -z "$(timeout 5 squeue -h -t RUNNING,COMPLETING,PENDING -o %i 2>/dev/null)" ]] && break
    sleep 0.5
  done
fi

for daemon in slurmd slurmctld munged; do
  if ! pid="$(alive "$STATE/$daemon.pid" "$daemon")"; then
    rm -f "$STATE/$daemon.pid"
    continue
  fi
  kill -TERM "$pid" 2>/dev/null
  for _ in $(seq 100); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    echo "[slurm-stop] $daemon ($pid) ignored TERM; killing" >&2
    kill -KILL "$pid" 2>/dev/null
  fi
  rm -f "$STATE/$daemon.pid"
done

# the /etc/slurm/slurm.conf link start.sh made, if it still points here
if [[ -f "$STATE/etc-link" ]]; then
  link="$(cat "$STATE/etc-link")"
  if [[ -L "$link" && "$(readlink "$link")" == "$STATE/slurm.conf" ]]; then
    rm -f "$link"
  fi
  rm -f "$STATE/etc-link"
fi
exit 0
