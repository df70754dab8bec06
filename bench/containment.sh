#!/usr/bin/env bash
# bench/containment.sh: does a failing backend hurt a healthy one behind the
# same rgate, and do the bulkhead, circuit breaker and outlier ejection help?
#
# Backend A = 3 stubs with 200 ms latency and 30% 503s; backend B = 3 healthy
# stubs. rgate (2 workers) routes /a -> A and /b -> B. Two oha processes run at
# the same time at fixed rates (open model, latency-corrected): one on /a, one
# on /b. Scenario "off" has no protection (bench/containment/off.yml);
# scenario "on" puts max_in_flight, circuit_breaker and outlier on A
# (bench/containment/on.yml). Scenarios alternate over rounds (off, on, off,
# on, ...). See bench/README.md, section "Containment".
#
# Loopback (127.0.0.1) only; every load run has a fixed duration and is
# wrapped in `timeout`; every process this script starts is stopped by PID.
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$BENCH_DIR/.." && pwd)
CONF_DIR="$BENCH_DIR/containment"

# ---------------------------------------------------------------- options --
ROUNDS=2
DURATION=15          # seconds of each measured run (both oha processes)
WARMUP=2             # seconds of warm-up on /b only, before each scenario (not recorded)
RATE_A=300           # req/s on /a (the failing backend)
RATE_B=1000          # req/s on /b (the healthy backend)
CONNS_A=64
CONNS_B=32
SCENARIOS="off,on"
BASE_PORT=18480      # A stubs BASE..BASE+2, B stubs BASE+3..BASE+5, rgate BASE+6
WORKERS=2
BUILD=1
WAIT_QUIET=300       # seconds to wait for the 1-min load average to drop below MAX_LOAD
MAX_LOAD=1.0
OUT=""
KEEP_WORK=0

usage() {
    cat <<'EOF'
Usage: bench/containment.sh [options]

  --rounds N         rounds; each runs every scenario once, in order (default 2)
  --duration S       seconds of each measured run (default 15)
  --warmup S         seconds of warm-up on /b only before each scenario (default 2; 0: none)
  --rate-a R         req/s on /a, the failing backend (default 300)
  --rate-b R         req/s on /b, the healthy backend (default 1000)
  --conns-a C        oha connections on /a (default 64)
  --conns-b C        oha connections on /b (default 32)
  --scenarios LIST   comma-separated, from off,on,alone (default off,on). `alone`
                     runs /b only, with the off config: B's baseline without A's load
  --quick            smoke test: 1 round, 5 s runs, 1 s warm-up, no waiting for quiet
  --base-port P      127.0.0.1 ports P..P+6 (default 18480); refuses to run if one is taken
  --workers N        rgate --workers (default 2)
  --no-build         do not run `cargo build --release --workspace --bins`
  --wait-quiet S     wait up to S seconds for the 1-min load average < --max-load (default 300)
  --max-load L       load average counted as quiet (default 1.0)
  --out FILE         results file (default bench/results/<date>-<HHMM>-containment.md)
  --keep-work        keep the scratch directory (configs, logs, raw oha outputs)
  -h, --help         this text
EOF
}

die() { echo "containment.sh: error: $*" >&2; exit 1; }
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

while (($#)); do
    case $1 in
        --rounds) ROUNDS=${2:?}; shift 2 ;;
        --duration) DURATION=${2:?}; shift 2 ;;
        --warmup) WARMUP=${2:?}; shift 2 ;;
        --rate-a) RATE_A=${2:?}; shift 2 ;;
        --rate-b) RATE_B=${2:?}; shift 2 ;;
        --conns-a) CONNS_A=${2:?}; shift 2 ;;
        --conns-b) CONNS_B=${2:?}; shift 2 ;;
        --scenarios) SCENARIOS=${2:?}; shift 2 ;;
        --quick) ROUNDS=1; DURATION=5; WARMUP=1; WAIT_QUIET=0; shift ;;
        --base-port) BASE_PORT=${2:?}; shift 2 ;;
        --workers) WORKERS=${2:?}; shift 2 ;;
        --no-build) BUILD=0; shift ;;
        --wait-quiet) WAIT_QUIET=${2:?}; shift 2 ;;
        --max-load) MAX_LOAD=${2:?}; shift 2 ;;
        --out) OUT=${2:?}; shift 2 ;;
        --keep-work) KEEP_WORK=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; die "unknown option: $1" ;;
    esac
done

for v in ROUNDS DURATION WARMUP RATE_A RATE_B CONNS_A CONNS_B BASE_PORT WORKERS WAIT_QUIET; do
    is_uint "${!v}" || die "$v must be a non-negative integer (got '${!v}')"
done
((ROUNDS >= 1 && ROUNDS <= 20)) || die "--rounds must be 1..20"
((DURATION >= 1 && DURATION <= 300)) || die "--duration must be 1..300"
((WARMUP <= 60)) || die "--warmup must be <= 60"
((RATE_A >= 1 && RATE_B >= 1)) || die "--rate-a/--rate-b must be >= 1"
((CONNS_A >= 1 && CONNS_A <= 4096 && CONNS_B >= 1 && CONNS_B <= 4096)) || die "--conns-a/--conns-b must be 1..4096"
((BASE_PORT >= 1024 && BASE_PORT <= 65500)) || die "--base-port must be 1024..65500"
((WORKERS >= 1 && WORKERS <= 64)) || die "--workers must be 1..64"
((WAIT_QUIET <= 3600)) || die "--wait-quiet must be <= 3600"
[[ $MAX_LOAD =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "--max-load must be a number (got '$MAX_LOAD')"

SCEN=()
IFS=',' read -r -a _scen <<<"$SCENARIOS"
for s in "${_scen[@]}"; do
    case $s in
        off|on|alone) [[ " ${SCEN[*]-} " == *" $s "* ]] || SCEN+=("$s") ;;
        "") ;;
        *) die "--scenarios: unknown scenario '$s' (known: off, on, alone)" ;;
    esac
done
((${#SCEN[@]})) || die "--scenarios: nothing to run"

# Ports: stubs a1 a2 a3 b1 b2 b3, then rgate.
STUBS=(a1 a2 a3 b1 b2 b3)
declare -A PORT=()
for i in "${!STUBS[@]}"; do PORT[${STUBS[$i]}]=$((BASE_PORT + i)); done
PORT[rgate]=$((BASE_PORT + 6))

# ----------------------------------------------------- process bookkeeping --
PIDS=()            # every process this script started and has not reaped yet
WORK=""
FAILED=1



cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    local p
    for p in "${PIDS[@]-}"; do
        [[ -n $p ]] && stop_pid "$p"
    done
    if [[ -n $WORK && -d $WORK ]]; then
        if ((KEEP_WORK)) || ((FAILED)); then
            echo "containment.sh: scratch directory (configs, logs, raw outputs) kept: $WORK" >&2
        else
            rm -rf "$WORK"
        fi
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ------------------------------------------------------------------ tools --
export PATH="$PATH:${CARGO_HOME:-$HOME/.cargo}/bin"
for t in python3 curl timeout; do
    command -v "$t" >/dev/null || die "$t is required (Debian: apt-get install -y python3 curl coreutils)"
done
if ! command -v oha >/dev/null; then
    command -v cargo >/dev/null || die "oha is missing and cargo is not available to install it"
    log "installing oha (cargo install oha --locked)"
    cargo install oha --locked
    command -v oha >/dev/null || die "oha still not on PATH after cargo install"
fi
oha --help 2>/dev/null | grep -q -- '--db-url' ||
    die "this oha has no --db-url (per-request records); reinstall with: cargo install oha --locked"

if ((BUILD)); then
    log "cargo build --release --workspace --bins"
    (cd "$REPO" && cargo build --release --workspace --bins)
fi
RGATE_BIN="$REPO/target/release/rgate"
STUB_BIN="$REPO/target/release/rgate-upstream"
[[ -x $RGATE_BIN ]] || die "$RGATE_BIN not found (build failed or --no-build)"
[[ -x $STUB_BIN ]] || die "$STUB_BIN not found (build failed or --no-build)"

# ------------------------------------------------------------------ ports --
for name in "${STUBS[@]}" rgate; do
    port_free "${PORT[$name]}" ||
        die "port 127.0.0.1:${PORT[$name]} ($name) is already taken; free it or pick another --base-port"
done

# ----------------------------------------------------------- quiet machine --
load1() { cut -d' ' -f1 /proc/loadavg; }
busy() { python3 -c "import sys; sys.exit(0 if float('$(load1)') >= float('$MAX_LOAD') else 1)"; }
if ((WAIT_QUIET > 0)); then
    deadline=$((SECONDS + WAIT_QUIET))
    while busy && ((SECONDS < deadline)); do
        log "load average $(load1) >= $MAX_LOAD; waiting (up to ${WAIT_QUIET}s in all)"
        sleep 15
    done
fi
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
busy && log "warning: load average is $LOAD_START (>= $MAX_LOAD): numbers will be noisy"

# ------------------------------------------------------------------ setup --
WORK=$(mktemp -d /tmp/rgate-containment.XXXXXX)
MANIFEST="$WORK/manifest.jsonl"
: >"$MANIFEST"

# Render the configs with this run's ports (the files use 18480..18485) and
# validate them with `rgate check` before anything starts.
for cfg in off on; do
    python3 - "$CONF_DIR/$cfg.yml" "$WORK/$cfg.yml" "$BASE_PORT" <<'PY'
import re, sys
src, dst, base = sys.argv[1], sys.argv[2], int(sys.argv[3])
text = open(src).read()
def sub(m):
    port = int(m.group(1))
    return f"127.0.0.1:{base + port - 18480}" if 18480 <= port <= 18485 else m.group(0)
open(dst, "w").write(re.sub(r"127\.0\.0\.1:(\d+)", sub, text))
PY
    "$RGATE_BIN" check "$WORK/$cfg.yml" >&2 || die "rgate check refused $CONF_DIR/$cfg.yml"
done



declare -A STUB_PID=()
start_stubs() {
    local name seed=0 extra
    for name in "${STUBS[@]}"; do
        seed=$((seed + 1))
        extra=()
        if [[ $name == a* ]]; then extra=(--latency-ms 200 --error-rate 0.3); fi
        "$STUB_BIN" --listen "127.0.0.1:${PORT[$name]}" --name "$name" --seed "$seed" \
            --threads 1 "${extra[@]}" >>"$WORK/$name.log" 2>&1 &
        STUB_PID[$name]=$!
        PIDS+=("${STUB_PID[$name]}")
    done
    for name in "${STUBS[@]}"; do
        wait_ready "$name" "${STUB_PID[$name]}" "http://127.0.0.1:${PORT[$name]}/health"
    done
}

stub_requests() {
    # Requests each stub has seen so far, as "a1=N a2=N ...".
    local name out=()
    for name in "${STUBS[@]}"; do
        out+=("$name=$(curl -s --max-time 5 "http://127.0.0.1:${PORT[$name]}/__stats" |
            python3 -c 'import json,sys; print(int(json.load(sys.stdin)["requests"]))')")
    done
    echo "${out[*]}"
}


RGATE_PID=""
start_rgate() {
    # start_rgate CONFIG LOGNAME: rgate on 127.0.0.1:PORT[rgate], ready once it
    # has logged its "rgate listening addr=" line and /stats answers 200.
    local cfg=$1 name=$2 i
    port_free "${PORT[rgate]}" || die "port 127.0.0.1:${PORT[rgate]} (rgate) was taken meanwhile"
    "$RGATE_BIN" --port "${PORT[rgate]}" --bind 127.0.0.1 --workers "$WORKERS" \
        --config "$WORK/$cfg.yml" --log-level info >"$WORK/$name.log" 2>&1 &
    RGATE_PID=$!
    PIDS+=("$RGATE_PID")
    for ((i = 0; i < 150; i++)); do
        grep -q 'rgate listening addr=' "$WORK/$name.log" && break
        kill -0 "$RGATE_PID" 2>/dev/null || break
        sleep 0.1
    done
    # /stats is answered before routing, so readiness touches neither backend.
    wait_ready "$name" "$RGATE_PID" "http://127.0.0.1:${PORT[rgate]}/stats"
    grep -q 'rgate listening addr=' "$WORK/$name.log" ||
        log "warning: rgate answers but logged no 'rgate listening addr=' line"
}

machine_ticks() {
    # "busy total" clock ticks of all CPUs (busy = user+nice+system+irq+softirq+steal).
    awk '$1 == "cpu" { print $2+$3+$4+$7+$8+$9, $2+$3+$4+$5+$6+$7+$8+$9; exit }' /proc/stat
}


ours_ticks() {
    # CPU ticks of rgate and the six stubs so far.
    local t=0 p
    for p in "$RGATE_PID" "${STUB_PID[@]}"; do t=$((t + $(cpu_ticks "$p"))); done
    echo "$t"
}

LOAD_PIDS=()
start_oha() {
    # start_oha OUTBASE URL RATE CONNS SECONDS: fixed-rate, latency-corrected
    # oha in the background, bounded by `timeout`; JSON summary in OUTBASE.json,
    # per-request records in OUTBASE.db (sqlite).
    local base=$1 url=$2 rate=$3 conns=$4 secs=$5 pid
    rm -f "$base.db"
    timeout --kill-after=5 $((secs + 30)) \
        oha --no-tui --output-format json --db-url "$base.db" \
        -z "${secs}s" -q "$rate" -c "$conns" --latency-correction "$url" \
        >"$base.json" 2>"$base.err" &
    pid=$!
    PIDS+=("$pid")
    LOAD_PIDS+=("$pid")
}

wait_loads() {
    # Wait for every started oha; fail if one failed.
    local pid rc bad=0
    for pid in "${LOAD_PIDS[@]}"; do
        rc=0
        wait "$pid" || rc=$?
        forget_pid "$pid"
        ((rc == 0)) || { log "load generator pid $pid exited with $rc"; bad=1; }
    done
    LOAD_PIDS=()
    return "$bad"
}

run_scenario() {
    # run_scenario SCENARIO ROUND
    local s=$1 r=$2 cfg tag url_a url_b load req0 req1 cpu0 cpu1 t0 t1 m0 m1 o0 o1 k0 k1
    cfg=$s
    [[ $s == alone ]] && cfg=off
    tag="$WORK/r$r-$s"
    url_a="http://127.0.0.1:${PORT[rgate]}/a"
    url_b="http://127.0.0.1:${PORT[rgate]}/b"
    start_rgate "$cfg" "rgate-r$r-$s"
    if ((WARMUP > 0)); then
        log "round $r/$ROUNDS $s: warm-up ${WARMUP}s on /b only"
        start_oha "$tag-warmup" "$url_b" "$RATE_B" "$CONNS_B" "$WARMUP"
        wait_loads || die "warm-up failed: $(tail -n 5 "$tag-warmup.err")"
    fi
    load=$(cut -d' ' -f1-3 /proc/loadavg)
    req0=$(stub_requests)
    cpu0=$(cpu_ticks "$RGATE_PID")
    t0=$(date +%s.%N)
    m0=$(machine_ticks) o0=$(ours_ticks) k0=$(children_ticks)
    if [[ $s == alone ]]; then
        log "round $r/$ROUNDS $s: /b at $RATE_B req/s only, ${DURATION}s (load average $load)"
    else
        log "round $r/$ROUNDS $s: /a at $RATE_A req/s + /b at $RATE_B req/s, ${DURATION}s (load average $load)"
        start_oha "$tag-a" "$url_a" "$RATE_A" "$CONNS_A" "$DURATION"
    fi
    start_oha "$tag-b" "$url_b" "$RATE_B" "$CONNS_B" "$DURATION"
    wait_loads || die "oha failed in round $r, scenario $s; see $tag-*.err"
    m1=$(machine_ticks) o1=$(ours_ticks) k1=$(children_ticks)
    t1=$(date +%s.%N)
    kill -0 "$RGATE_PID" 2>/dev/null || die "rgate died during round $r, scenario $s; see $WORK/rgate-r$r-$s.log"
    cpu1=$(cpu_ticks "$RGATE_PID")
    req1=$(stub_requests)
    curl -s --max-time 5 "http://127.0.0.1:${PORT[rgate]}/stats" >"$tag.stats.json" || true
    stop_pid "$RGATE_PID"
    python3 - "$MANIFEST" "$s" "$r" "$tag" "$load" "$req0" "$req1" "$cpu0" "$cpu1" "$t0" "$t1" \
        "$m0" "$m1" "$o0" "$o1" "$k0" "$k1" <<'PY'
import json, sys
manifest, s, r, tag, load, req0, req1, cpu0, cpu1, t0, t1, m0, m1, o0, o1, k0, k1 = sys.argv[1:]
parse = lambda v: {k: int(n) for k, n in (x.split("=") for x in v.split())}
(b0, tot0), (b1, tot1) = ([int(x) for x in m.split()] for m in (m0, m1))
ours = (int(o1) - int(o0)) + (int(k1) - int(k0))
total = max(tot1 - tot0, 1)
rec = {"scenario": s, "round": int(r), "tag": tag, "loadavg": load,
       "stub_requests": {k: parse(req1)[k] - n for k, n in parse(req0).items()},
       "rgate_cpu_ticks": int(cpu1) - int(cpu0), "wall_s": float(t1) - float(t0),
       # share of all CPUs' time: used by this benchmark's processes, and by anything else
       "bench_cpu_pct": 100.0 * ours / total,
       "other_cpu_pct": max(0.0, 100.0 * (b1 - b0 - ours) / total)}
with open(manifest, "a") as f:
    f.write(json.dumps(rec) + "\n")
PY
    # Let sockets from this scenario close before the next rgate starts.
    sleep 2
}

# -------------------------------------------------------------------- run --
log "scratch dir $WORK; scenarios ${SCEN[*]} x $ROUNDS rounds; ${DURATION}s runs; /a $RATE_A req/s -c $CONNS_A, /b $RATE_B req/s -c $CONNS_B"
start_stubs
for ((r = 1; r <= ROUNDS; r++)); do
    for s in "${SCEN[@]}"; do
        run_scenario "$s" "$r"
    done
done
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)
for name in "${STUBS[@]}"; do stop_pid "${STUB_PID[$name]}"; done

# ----------------------------------------------------------------- report --
STAMP=$(date +%Y-%m-%d-%H%M)
[[ -n $OUT ]] || OUT="$BENCH_DIR/results/$STAMP-containment.md"
mkdir -p "$(dirname "$OUT")"
rgate_rev=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo "no commit")
if [[ -n $(git -C "$REPO" status --porcelain 2>/dev/null | grep -v '^?? bench/' || true) ]]; then
    rgate_rev="$rgate_rev (uncommitted changes)"
fi
export M_DATE M_HOST M_KERNEL M_CPU M_NCPU M_LOAD_START M_LOAD_END M_RGATE M_OHA
M_DATE=$(date '+%Y-%m-%d %H:%M:%S %Z')
M_HOST=$(hostname -s 2>/dev/null || hostname)
M_KERNEL=$(uname -r)
M_CPU=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)
M_NCPU=$(nproc)
M_LOAD_START=$LOAD_START
M_LOAD_END=$LOAD_END
M_RGATE=$rgate_rev
M_OHA=$(oha --version 2>&1 | head -n 1 || true)
python3 "$CONF_DIR/report.py" --manifest "$MANIFEST" --out "$OUT" \
    --rounds "$ROUNDS" --duration "$DURATION" --warmup "$WARMUP" \
    --rate-a "$RATE_A" --rate-b "$RATE_B" --conns-a "$CONNS_A" --conns-b "$CONNS_B" \
    --workers "$WORKERS" --clk-tck "$(getconf CLK_TCK)" --max-load "$MAX_LOAD"
FAILED=0
log "results written to $OUT"
