#!/usr/bin/env bash
# A local Prefect server for the movierec deployments, on loopback only, in the background.
#
#   scripts/prefect-server.sh            # server on 127.0.0.1:$MOVIEREC_PREFECT_PORT (4200)
#   scripts/prefect-server.sh --worker   # ... and a process worker for work pool `movierec`
#   scripts/prefect-server.sh --stop     # stop the server and worker this script started
#
# It waits until /api/health answers, makes sure the work pool `movierec` (type process)
# exists, and prints on stdout, as its only output there:
#   export PREFECT_API_URL=http://127.0.0.1:4200/api
# (progress goes to stderr), so `eval "$(scripts/prefect-server.sh --worker)"` sets it too.
# A server already answering on the port is reused.
#
# State lives in PREFECT_HOME=$MOVIEREC_HOME/prefect (MOVIEREC_HOME defaults to
# <repo>/.movierec): the SQLite database, server.log, worker.log and the pid files.
# Environment: MOVIEREC_PREFECT_PORT (4200), MOVIEREC_WORK_POOL (movierec),
# MOVIEREC_PREFECT_STARTUP_TIMEOUT (seconds, 120).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PREFECT="$REPO/.venv/bin/prefect"
PYTHON="$REPO/.venv/bin/python"
HOST=127.0.0.1
PORT="${MOVIEREC_PREFECT_PORT:-4200}"
POOL="${MOVIEREC_WORK_POOL:-movierec}"
TIMEOUT="${MOVIEREC_PREFECT_STARTUP_TIMEOUT:-120}"
URL="http://$HOST:$PORT/api"

say() { printf '%s\n' "$*" >&2; }
die() { say "prefect-server.sh: $*"; exit 1; }

usage() { sed -n '2,17p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; }

worker=0
stop=0
for argument in "$@"; do
  case "$argument" in
    --worker) worker=1 ;;
    --stop) stop=1 ;;
    -h|--help) usage; exit 0 ;;
    *) usage; die "unknown argument: $argument" ;;
  esac
done

[[ "$PORT" =~ ^[0-9]+$ ]] && (( PORT > 0 && PORT < 65536 )) || die "MOVIEREC_PREFECT_PORT must be a port number, not '$PORT'"
[[ -x "$PREFECT" ]] || die "$PREFECT not found: create the environment first (make setup)"

# MOVIEREC_HOME as movierec resolves it: relative to the current directory, else <repo>/.movierec.
home="${MOVIEREC_HOME:-$REPO/.movierec}"
mkdir -p "$home/prefect"
home="$(cd "$home" && pwd)"
export MOVIEREC_HOME="$home"
export PREFECT_HOME="$home/prefect"
export PREFECT_SERVER_ANALYTICS_ENABLED=false DO_NOT_TRACK=1
SERVER_PID="$PREFECT_HOME/movierec-server.pid"  # not server.pid: that is `prefect server start -b`'s
WORKER_PID="$PREFECT_HOME/movierec-worker.pid"

healthy() {
  "$PYTHON" - "$URL/health" <<'EOF' 2>/dev/null
import sys, urllib.request
try:
    with urllib.request.urlopen(sys.argv[1], timeout=2) as response:
        sys.exit(0 if response.status == 200 else 1)
except Exception:
    sys.exit(1)
EOF
}

# The pid in $1 if that process is alive and is a prefect process we started.
running() {
  local pid
  [[ -f "$1" ]] && pid="$(cat "$1")" && [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  kill -0 "$pid" 2>/dev/null && [[ "$(ps -p "$pid" -o args= 2>/dev/null)" == *prefect* ]] || return 1
  printf '%s' "$pid"
}

stop_one() {  # name, pid file
  local pid
  if pid="$(running "$2")"; then
    kill -TERM "$pid"
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    if kill -0 "$pid" 2>/dev/null; then
      say "the $1 (pid $pid) did not stop within 10 s; it is still running"
      return 1
    fi
    say "stopped the $1 (pid $pid)"
  else
    say "no $1 started by this script is running"
  fi
  rm -f "$2"
}

if (( stop )); then
  stop_one worker "$WORKER_PID"
  stop_one server "$SERVER_PID"
  exit 0
fi

# Run "$@" in the background from the repository root, detached from this shell; echo its pid.
launch() {  # log file, command...
  local log="$1"; shift
  ( cd "$REPO" && exec nohup "$@" ) >>"$log" 2>&1 </dev/null &
  printf '%s' "$!"
}

if healthy; then
  say "a Prefect server already answers at $URL"
else
  if pid="$(running "$SERVER_PID")"; then
    say "the server (pid $pid) is still starting"
  else
    say "starting a Prefect server on $HOST:$PORT (PREFECT_HOME=$PREFECT_HOME, log: $PREFECT_HOME/server.log)"
    pid="$(launch "$PREFECT_HOME/server.log" env -u PREFECT_API_URL "$PREFECT" server start --host "$HOST" --port "$PORT")"
    printf '%s\n' "$pid" >"$SERVER_PID"
  fi
  deadline=$(( SECONDS + TIMEOUT ))
  until healthy; do
    if ! kill -0 "$pid" 2>/dev/null; then
      rm -f "$SERVER_PID"
      tail -n 20 "$PREFECT_HOME/server.log" >&2 || true
      die "the server exited before answering (log above, from $PREFECT_HOME/server.log)"
    fi
    (( SECONDS < deadline )) || die "no answer from $URL/health after ${TIMEOUT}s; see $PREFECT_HOME/server.log"
    sleep 0.5
  done
  say "the server answers at $URL (UI: http://$HOST:$PORT)"
fi

export PREFECT_API_URL="$URL"
if ! "$PREFECT" work-pool inspect "$POOL" >/dev/null 2>&1; then
  "$PREFECT" work-pool create "$POOL" --type process >/dev/null || die "could not create work pool $POOL"
  say "created work pool $POOL (type process)"
fi

if (( worker )); then
  if pid="$(running "$WORKER_PID")"; then
    say "a worker for pool $POOL is already running (pid $pid)"
  else
    pid="$(launch "$PREFECT_HOME/worker.log" "$PREFECT" worker start --pool "$POOL" --type process)"
    printf '%s\n' "$pid" >"$WORKER_PID"
    sleep 1
    kill -0 "$pid" 2>/dev/null || { tail -n 20 "$PREFECT_HOME/worker.log" >&2; die "the worker exited at once"; }
    say "started a process worker for pool $POOL (pid $pid, log: $PREFECT_HOME/worker.log)"
  fi
fi

say "stop with: scripts/prefect-server.sh --stop"
printf 'export PREFECT_API_URL=%s\n' "$URL"
