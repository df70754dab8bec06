#!/usr/bin/env bash
# Helpers shared by bench/run.sh and bench/containment.sh: logging, process
# bookkeeping (every started PID goes in the caller's PIDS array and is
# stopped by PID only), port checks, readiness waits and /proc CPU readings.
# Sourced, not run; the caller defines die() and PIDS=().
# shellcheck disable=SC2317 # functions are called by the scripts that source this

log() { echo "[$(date +%H:%M:%S)] $*" >&2; }

is_uint() { [[ $1 =~ ^[0-9]+$ ]]; }

stop_pid() {
    # stop_pid PID: SIGTERM, wait up to 10 s, then SIGKILL. Only our own PIDs.
    local pid=$1 i
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        for ((i = 0; i < 100; i++)); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            log "pid $pid did not exit after SIGTERM; sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    wait "$pid" 2>/dev/null || true
    forget_pid "$pid"
}

forget_pid() {
    local keep=() p
    for p in "${PIDS[@]-}"; do
        [[ -n $p && $p != "$1" ]] && keep+=("$p")
    done
    PIDS=("${keep[@]-}")
}

port_free() {
    # Succeeds if nothing listens on 127.0.0.1:$1 (bound like a server would,
    # with SO_REUSEADDR, so TIME_WAIT leftovers do not count as "taken").
    python3 - "$1" <<'PY'
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
try:
    s.bind(("127.0.0.1", int(sys.argv[1])))
    s.listen(1)
except OSError:
    sys.exit(1)
finally:
    s.close()
PY
}

http_code() {
    # http_code URL [HEADER...]
    local header=() h
    for h in "${@:2}"; do header+=(-H "$h"); done
    curl -s -o /dev/null --max-time 2 -w '%{http_code}' "${header[@]}" "$1" || true
}

wait_ready() {
    # wait_ready NAME PID URL [HEADER...]: until URL answers 200 (at most 15 s).
    local name=$1 pid=$2 url=$3 i code=""
    for ((i = 0; i < 150; i++)); do
        if ! kill -0 "$pid" 2>/dev/null; then
            tail -n 30 "$WORK/$name.log" >&2 || true
            die "$name (pid $pid) exited during start-up; log above"
        fi
        code=$(http_code "$url" "${@:4}")
        [[ $code == 200 ]] && return 0
        sleep 0.1
    done
    tail -n 30 "$WORK/$name.log" >&2 || true
    die "$name did not answer 200 on $url within 15 s (last status: ${code:-none})"
}

cpu_ticks() {
    # utime+stime (clock ticks) of a process, all its threads included.
    awk '{ s = $0; sub(/^.*\) /, "", s); split(s, f, " "); print f[12] + f[13] }' "/proc/$1/stat"
}

children_ticks() {
    # cutime+cstime of this shell: CPU of its reaped children (oha, once waited for).
    awk '{ s = $0; sub(/^.*\) /, "", s); split(s, f, " "); print f[14] + f[15] }' "/proc/$$/stat"
}
