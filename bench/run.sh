#!/usr/bin/env bash
# bench/run.sh: rgate vs nginx vs HAProxy vs direct, side by side, in one run.
#
# Method (see bench/README.md and shared/PERFORMANCE.md): load generator pinned
# to one CPU, proxy + upstream pinned together to the other; every proxy has
# one worker; targets are interleaved over several rounds (order rotated each
# round) and medians are reported. Loopback (127.0.0.1) only; every load run
# has a fixed duration; every process this script starts is stopped by PID.
#
# Usage: bench/run.sh [--rounds N] [--duration S] [--rate R] [--only LIST]
#                     [--quick] [--upstream stub|nginx] ...   (see --help)
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$BENCH_DIR/.." && pwd)

# ---------------------------------------------------------------- options --
ROUNDS=3
DURATION=10          # seconds of each measured run (wrk max-throughput, oha fixed-rate)
WARMUP=2             # seconds of wrk warm-up before the measured wrk run
RATE=5000            # req/s of the fixed-rate (open model) latency run
CONNS=64             # keep-alive connections of every load run
ONLY="rgate,nginx,haproxy,nginx-fwd,haproxy-fwd"
UPSTREAM_KIND=stub   # stub = target/release/rgate-upstream; nginx = nginx `return 200`
BASE_PORT=18380      # ports BASE..BASE+22: upstream, rgate, nginx, haproxy, nginx-fwd, haproxy-fwd, the rgate-* rows, Redis
LOAD_CPU=0
SERVER_CPU=1
BUILD=1
WAIT_QUIET=0         # seconds to wait for the 1-min load average to drop below 0.5
OUT=""
KEEP_WORK=0

usage() {
    cat <<'EOF'
Usage: bench/run.sh [options]

  --rounds N         interleaved rounds; medians are reported (default 3)
  --duration S       seconds of each measured load run (default 10)
  --warmup S         seconds of wrk warm-up per target and round (default 2)
  --rate R           req/s of the fixed-rate latency run (default 5000)
  --connections C    keep-alive connections of every load run (default 64)
  --only LIST        proxies to measure, comma-separated, from rgate, nginx,
                     haproxy, nginx-fwd, haproxy-fwd (default all; the -fwd
                     peers also do rgate's per-request header work, see
                     bench/README.md; `direct` is always measured: it is the
                     baseline for added latency); `marginal` adds the rows
                     rgate-route1, rgate-shaped, rgate-limited, rgate-routes50,
                     rgate-routes500, rgate-auth-rs256, rgate-auth-es256,
                     rgate-auth-rs256-cold, rgate-auth-es256-cold (every
                     request verified: token_cache 0), rgate-redis,
                     rgate-breaker, rgate-chain, rgate-logged (the access
                     log to a file), rgate-stored (stats kept in SQLite) and
                     rgate-observed (both) (the cost of each feature, and of
                     table size); `headline` is nginx and the passthrough,
                     auth, limit, Redis, breaker and full chain rows;
                     `observability` nginx with and without its access log
                     (nginx-logged: the same JSON line, buffered), the
                     passthrough and the last three
  --quick            smoke test: 1 round, 3 s runs, 1 s warm-up
  --upstream KIND    stub (default: target/release/rgate-upstream --fixed-body-size 100)
                     or nginx (nginx `return 200` with a 100-byte JSON body)
  --base-port P      use 127.0.0.1 ports P..P+22 (default 18380); the script
                     refuses to run if one of them is taken
  --load-cpu N       CPU of the load generator (default 0)
  --server-cpu N     CPU of the proxy and the upstream (default 1)
  --no-build         do not run `cargo build --release --workspace --bins`
  --wait-quiet S     wait up to S seconds for the 1-min load average < 0.5
  --out FILE         results file (default bench/results/<date>-<hostname>.md)
  --keep-work        keep the scratch directory (configs, logs, raw outputs)
  -h, --help         this text
EOF
}

die() { echo "run.sh: error: $*" >&2; exit 1; }
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"


while (($#)); do
    case $1 in
        --rounds) ROUNDS=${2:?}; shift 2 ;;
        --duration) DURATION=${2:?}; shift 2 ;;
        --warmup) WARMUP=${2:?}; shift 2 ;;
        --rate) RATE=${2:?}; shift 2 ;;
        --connections) CONNS=${2:?}; shift 2 ;;
        --only) ONLY=${2:?}; shift 2 ;;
        --quick) ROUNDS=1; DURATION=3; WARMUP=1; shift ;;
        --upstream) UPSTREAM_KIND=${2:?}; shift 2 ;;
        --base-port) BASE_PORT=${2:?}; shift 2 ;;
        --load-cpu) LOAD_CPU=${2:?}; shift 2 ;;
        --server-cpu) SERVER_CPU=${2:?}; shift 2 ;;
        --no-build) BUILD=0; shift ;;
        --wait-quiet) WAIT_QUIET=${2:?}; shift 2 ;;
        --out) OUT=${2:?}; shift 2 ;;
        --keep-work) KEEP_WORK=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; die "unknown option: $1" ;;
    esac
done

for v in ROUNDS DURATION WARMUP RATE CONNS BASE_PORT LOAD_CPU SERVER_CPU WAIT_QUIET; do
    is_uint "${!v}" || die "$v must be a non-negative integer (got '${!v}')"
done
((ROUNDS >= 1 && ROUNDS <= 50)) || die "--rounds must be 1..50"
((DURATION >= 1 && DURATION <= 600)) || die "--duration must be 1..600"
((WARMUP <= 600)) || die "--warmup must be <= 600"
((RATE >= 1)) || die "--rate must be >= 1"
((CONNS >= 1 && CONNS <= 10000)) || die "--connections must be 1..10000"
((BASE_PORT >= 1024 && BASE_PORT <= 65530)) || die "--base-port must be 1024..65530"
[[ $UPSTREAM_KIND == stub || $UPSTREAM_KIND == nginx ]] || die "--upstream must be stub or nginx"

PROXIES=()
IFS=',' read -r -a _only <<<"$ONLY"
for t in "${_only[@]}"; do
    case $t in
        rgate|nginx|haproxy|nginx-fwd|haproxy-fwd|rgate-route1|rgate-shaped|rgate-limited|rgate-routes50|rgate-routes500|rgate-auth-rs256|rgate-auth-es256|rgate-auth-rs256-cold|rgate-auth-es256-cold|rgate-redis|rgate-breaker|rgate-chain|rgate-logged|rgate-stored|rgate-observed|nginx-logged)
            [[ " ${PROXIES[*]-} " == *" $t "* ]] || PROXIES+=("$t") ;;
        marginal) for m in rgate-route1 rgate-shaped rgate-limited rgate-routes50 rgate-routes500 rgate-auth-rs256 rgate-auth-es256 rgate-auth-rs256-cold rgate-auth-es256-cold rgate-redis rgate-breaker rgate-chain rgate-logged rgate-stored rgate-observed; do
                [[ " ${PROXIES[*]-} " == *" $m "* ]] || PROXIES+=("$m")
            done ;;
        observability) for m in nginx nginx-logged rgate-route1 rgate-logged rgate-stored rgate-observed; do
                [[ " ${PROXIES[*]-} " == *" $m "* ]] || PROXIES+=("$m")
            done ;;
        headline) for m in nginx rgate-route1 rgate-auth-rs256 rgate-auth-es256 rgate-auth-rs256-cold rgate-auth-es256-cold rgate-limited rgate-redis rgate-breaker rgate-chain; do
                [[ " ${PROXIES[*]-} " == *" $m "* ]] || PROXIES+=("$m")
            done ;;
        direct|"") ;;
        *) die "--only: unknown target '$t' (known: rgate, nginx, haproxy, nginx-fwd, haproxy-fwd, rgate-route1, rgate-shaped, rgate-limited, rgate-routes50, rgate-routes500, rgate-auth-rs256, rgate-auth-es256, rgate-auth-rs256-cold, rgate-auth-es256-cold, rgate-redis, rgate-breaker, rgate-chain, rgate-logged, rgate-stored, rgate-observed, nginx-logged, marginal, headline, observability; direct is implicit)" ;;
    esac
done
TARGETS=(direct "${PROXIES[@]}")

declare -A PORT=(
    [upstream]=$BASE_PORT
    [rgate]=$((BASE_PORT + 1))
    [nginx]=$((BASE_PORT + 2))
    [haproxy]=$((BASE_PORT + 3))
    [nginx-fwd]=$((BASE_PORT + 4))
    [haproxy-fwd]=$((BASE_PORT + 5))
    [rgate-route1]=$((BASE_PORT + 6))
    [rgate-shaped]=$((BASE_PORT + 7))
    [rgate-routes50]=$((BASE_PORT + 8))
    [rgate-routes500]=$((BASE_PORT + 9))
    [rgate-limited]=$((BASE_PORT + 10))
    [rgate-auth-rs256]=$((BASE_PORT + 11))
    [rgate-auth-es256]=$((BASE_PORT + 12))
    [rgate-redis]=$((BASE_PORT + 13))
    [rgate-breaker]=$((BASE_PORT + 14))
    [rgate-chain]=$((BASE_PORT + 15))
    [redis]=$((BASE_PORT + 16))
    [rgate-auth-rs256-cold]=$((BASE_PORT + 17))
    [rgate-auth-es256-cold]=$((BASE_PORT + 18))
    [rgate-logged]=$((BASE_PORT + 19))
    [rgate-stored]=$((BASE_PORT + 20))
    [rgate-observed]=$((BASE_PORT + 21))
    [nginx-logged]=$((BASE_PORT + 22))
)

# The marginal-cost rows (rgate-*) all send the same traffic: one path that
# a route among 1, 50 or 500 takes, with an Origin as a browser would send,
# so only the config differs between them (see bench/routes.py).
MARGINAL_PATH=/api/svc0007/items
MARGINAL_ORIGIN="Origin: https://app.example.com"
target_path() { if [[ $1 == rgate-* ]]; then echo "$MARGINAL_PATH"; else echo /; fi; }
# target_headers TARGET: sets HDRS, the request headers of TARGET's traffic.
# The auth rows (and the chain) also send a bearer token (bench/jwt.py).
RS256_TOKEN="" ES256_TOKEN=""
target_headers() {
    HDRS=()
    [[ $1 == rgate-* ]] && HDRS+=("$MARGINAL_ORIGIN")
    case $1 in
        rgate-auth-rs256*) HDRS+=("Authorization: Bearer $RS256_TOKEN") ;;
        rgate-auth-es256*|rgate-chain) HDRS+=("Authorization: Bearer $ES256_TOKEN") ;;
    esac
    return 0
}
wants() { [[ " ${PROXIES[*]-} " == *" $1 "* ]]; }

# ----------------------------------------------------- process bookkeeping --
PIDS=()            # every long-running process this script started
WORK=""
POLICY_RC_CREATED=0
FAILED=1


cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    local p
    for p in "${PIDS[@]-}"; do
        [[ -n $p ]] && stop_pid "$p"
    done
    if ((POLICY_RC_CREATED)); then rm -f /usr/sbin/policy-rc.d; fi
    if [[ -n $WORK && -d $WORK ]]; then
        if ((KEEP_WORK)) || ((FAILED)); then
            echo "run.sh: scratch directory (configs, logs, raw outputs) kept: $WORK" >&2
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
install_debian_packages() {
    [[ $(id -u) == 0 ]] || die "missing packages ($*); run as root or: sudo apt-get install -y $*"
    command -v apt-get >/dev/null || die "missing packages ($*) and no apt-get here"
    log "installing Debian packages: $*"
    # Keep the packages' init scripts from starting system-wide daemons
    # (nginx would otherwise bind port 80): the usual policy-rc.d guard.
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod +x /usr/sbin/policy-rc.d
        POLICY_RC_CREATED=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@"
    if ((POLICY_RC_CREATED)); then rm -f /usr/sbin/policy-rc.d; POLICY_RC_CREATED=0; fi
}

export PATH="$PATH:${CARGO_HOME:-$HOME/.cargo}/bin:/usr/sbin:/sbin"

need=()
command -v python3 >/dev/null || need+=(python3)
command -v curl >/dev/null || need+=(curl)
command -v taskset >/dev/null || need+=(util-linux)
command -v wrk >/dev/null || need+=(wrk)
if [[ " ${PROXIES[*]-} " == *" nginx"* || $UPSTREAM_KIND == nginx ]]; then
    command -v nginx >/dev/null || need+=(nginx-light)
fi
if [[ " ${PROXIES[*]-} " == *" haproxy"* ]]; then
    command -v haproxy >/dev/null || need+=(haproxy)
fi
if [[ " ${PROXIES[*]-} " == *" rgate-redis "* ]]; then
    command -v redis-server >/dev/null || need+=(redis-server)
fi
if ((${#need[@]})); then install_debian_packages "${need[@]}"; fi

if ! command -v oha >/dev/null; then
    command -v cargo >/dev/null || die "oha is missing and cargo is not available to install it"
    log "installing oha (cargo install oha --locked)"
    cargo install oha --locked
    command -v oha >/dev/null || die "oha still not on PATH after cargo install"
fi

ncpu=$(nproc)
((LOAD_CPU < ncpu && SERVER_CPU < ncpu)) || die "CPUs $LOAD_CPU/$SERVER_CPU not available (nproc=$ncpu)"
((LOAD_CPU != SERVER_CPU)) || log "warning: load generator and servers share CPU $LOAD_CPU"

# ------------------------------------------------------------------ build --
if ((BUILD)); then
    log "cargo build --release --workspace --bins"
    (cd "$REPO" && cargo build --release --workspace --bins)
fi
RGATE_BIN="$REPO/target/release/rgate"
STUB_BIN="$REPO/target/release/rgate-upstream"
if [[ " ${PROXIES[*]-} " == *" rgate"* ]]; then
    [[ -x $RGATE_BIN ]] || die "$RGATE_BIN not found (build failed or --no-build)"
fi
if [[ $UPSTREAM_KIND == stub ]]; then
    [[ -x $STUB_BIN ]] || die "$STUB_BIN not found (build failed or --no-build); or use --upstream nginx"
fi

# ------------------------------------------------------------------ ports --

require_port_free() {
    port_free "$1" || die "port 127.0.0.1:$1 ($2) is already taken; free it or pick another --base-port"
}

require_port_free "${PORT[upstream]}" upstream
for t in "${PROXIES[@]-}"; do
    [[ -n $t ]] && require_port_free "${PORT[$t]}" "$t"
done

# ----------------------------------------------------------- quiet machine --
load1() { cut -d' ' -f1 /proc/loadavg; }
if ((WAIT_QUIET > 0)); then
    deadline=$((SECONDS + WAIT_QUIET))
    while python3 -c "import sys; sys.exit(0 if float('$(load1)') >= 0.5 else 1)" && ((SECONDS < deadline)); do
        log "load average $(load1) >= 0.5; waiting (up to ${WAIT_QUIET}s in all)"
        sleep 15
    done
fi
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
if python3 -c "import sys; sys.exit(0 if float('${LOAD_START%% *}') >= 0.5 else 1)"; then
    log "warning: load average is $LOAD_START: the machine is busy, numbers will be noisy"
fi

# ------------------------------------------------------------------ setup --
WORK=$(mktemp -d /tmp/rgate-bench.XXXXXX)
RAW="$WORK/raw.jsonl"
: >"$RAW"

render() {
    # render TEMPLATE OUT LISTEN [FORWARDING]: substitute @PREFIX@ @LISTEN@
    # @UPSTREAM@, and put the FORWARDING file's lines in place of @FORWARDING@.
    sed -e "s|@PREFIX@|$WORK|g" -e "s|@LISTEN@|$3|g" -e "s|@UPSTREAM@|127.0.0.1:${PORT[upstream]}|g" \
        -e "/@FORWARDING@/{r ${4:-/dev/null}" -e "d}" "$1" >"$2"
}

LAST_PID=""
start_server() {
    # start_server NAME CMD...: run pinned to SERVER_CPU in the background,
    # output to $WORK/NAME.log; sets LAST_PID.
    local name=$1
    shift
    taskset -c "$SERVER_CPU" "$@" >>"$WORK/$name.log" 2>&1 &
    LAST_PID=$!
    PIDS+=("$LAST_PID")
}



check_body() {
    # check_body NAME URL [HEADER...]: the proxied response must be the
    # upstream's 100-byte body.
    local name=$1 url=$2 n header=() h
    for h in "${@:3}"; do header+=(-H "$h"); done
    n=$(curl -s --max-time 2 "${header[@]}" "$url" | wc -c)
    [[ $n == 100 ]] || die "$name: GET $url returned a $n-byte body, expected the upstream's 100 bytes"
}

UP_PID=""
start_upstream() {
    local listen="127.0.0.1:${PORT[upstream]}"
    if [[ $UPSTREAM_KIND == stub ]]; then
        start_server upstream "$STUB_BIN" --listen "$listen" --name bench-upstream --fixed-body-size 100
        UP_PID=$LAST_PID
        wait_ready upstream "$UP_PID" "http://$listen/health"
    else
        mkdir -p "$WORK/nginx-upstream-body"
        render "$BENCH_DIR/nginx-upstream.conf.tmpl" "$WORK/nginx-upstream.conf" "$listen"
        start_server upstream nginx -p "$WORK" -e "$WORK/nginx-upstream.error.log" -c "$WORK/nginx-upstream.conf"
        UP_PID=$LAST_PID
        wait_ready upstream "$UP_PID" "http://$listen/"
    fi
    check_body upstream "http://$listen/"
}

upstream_accepts() {
    # Connections the upstream has accepted so far (includes this query's own).
    local listen="127.0.0.1:${PORT[upstream]}"
    if [[ $UPSTREAM_KIND == stub ]]; then
        curl -s --max-time 5 "http://$listen/__stats" |
            python3 -c 'import json,sys; print(int(json.load(sys.stdin)["connections"]))'
    else
        curl -s --max-time 5 "http://$listen/__nginx_status" |
            awk 'NR==3 {print $1; exit}'
    fi
}

forwarding() {
    # forwarding TARGET PEER: the file of header directives a -fwd target adds.
    if [[ $1 == *-fwd ]]; then echo "$BENCH_DIR/forwarding.$2"; fi
}

start_proxy() {
    # start_proxy TARGET: sets PROXY_PID
    local t=$1 listen="127.0.0.1:${PORT[$1]}"
    require_port_free "${PORT[$t]}" "$t"
    case $t in
        rgate)
            sed -e "s|127\.0\.0\.1:9001|127.0.0.1:${PORT[upstream]}|g" "$BENCH_DIR/rgate.yml" >"$WORK/rgate.yml"
            start_server rgate "$RGATE_BIN" --port "${PORT[rgate]}" --bind 127.0.0.1 \
                --config "$WORK/rgate.yml" --workers 1 --log-level warn
            ;;
        rgate-*)
            local routes=${t#rgate-routes} shaped=()
            case $t in
                rgate-route1) routes=1 ;;
                rgate-shaped) routes=1 shaped=(--shaped) ;;
                rgate-limited) routes=1 shaped=(--limited) ;;
                rgate-auth-*-cold) routes=1 shaped=(--auth "$WORK/jwks.json" --no-token-cache) ;;
                rgate-auth-*) routes=1 shaped=(--auth "$WORK/jwks.json") ;;
                rgate-redis) routes=1 shaped=(--redis "redis://127.0.0.1:${PORT[redis]}/0") ;;
                rgate-breaker) routes=1 shaped=(--breaker) ;;
                rgate-logged) routes=1 shaped=(--access-log "$WORK/access.log") ;;
                rgate-stored) routes=1 shaped=(--stats-store "$WORK/stats.db") ;;
                rgate-observed) routes=1 shaped=(--access-log "$WORK/observed.log" --stats-store "$WORK/observed.db") ;;
                rgate-chain) routes=1 shaped=(--shaped --auth "$WORK/jwks.json" --limited --breaker) ;;
            esac
            python3 "$BENCH_DIR/routes.py" "$routes" "127.0.0.1:${PORT[upstream]}" "${shaped[@]}" >"$WORK/$t.yml"
            start_server "$t" "$RGATE_BIN" --port "${PORT[$t]}" --bind 127.0.0.1 \
                --config "$WORK/$t.yml" --workers 1 --log-level warn
            ;;
        nginx|nginx-fwd|nginx-logged)
            mkdir -p "$WORK/nginx-proxy-body"
            render "$BENCH_DIR/nginx.conf.tmpl" "$WORK/$t.conf" "$listen" "$(forwarding "$t" nginx)"
            if [[ $t == nginx-logged ]]; then
                # The access log in place of `access_log off`.
                sed -e "s|@PREFIX@|$WORK|g" "$BENCH_DIR/nginx-access-log.conf" >"$WORK/$t.log.conf"
                sed -i -e "/^    access_log off;/{r $WORK/$t.log.conf" -e "d}" "$WORK/$t.conf"
            fi
            start_server "$t" nginx -p "$WORK" -e "$WORK/$t.error.log" -c "$WORK/$t.conf"
            ;;
        haproxy|haproxy-fwd)
            render "$BENCH_DIR/haproxy.cfg.tmpl" "$WORK/$t.cfg" "$listen" "$(forwarding "$t" haproxy)"
            start_server "$t" haproxy -db -f "$WORK/$t.cfg"
            ;;
    esac
    PROXY_PID=$LAST_PID
    target_headers "$t"
    wait_ready "$t" "$PROXY_PID" "http://$listen$(target_path "$t")" "${HDRS[@]}"
    check_body "$t" "http://$listen$(target_path "$t")" "${HDRS[@]}"
}


core_ticks() {
    # core_ticks N: "busy steal total" clock ticks of CPU N from /proc/stat
    # (busy = user+nice+system+irq+softirq).
    awk -v c="cpu$1" '$1 == c { print $2+$3+$4+$7+$8, $9, $2+$3+$4+$5+$6+$7+$8+$9 }' /proc/stat
}


vm_hwm_kib() { awk '/^VmHWM:/ {print $2}' "/proc/$1/status"; }

run_load() {
    # run_load OUTFILE ERRFILE CMD...: run a load generator pinned to LOAD_CPU,
    # bounded by `timeout`. It runs in the background and is waited for, so a
    # SIGTERM/SIGINT to this script is handled at once (the trap stops it).
    local out=$1 err=$2 pid rc=0
    shift 2
    timeout --kill-after=5 "$TIMEOUT_S" taskset -c "$LOAD_CPU" "$@" >"$out" 2>"$err" &
    pid=$!
    PIDS+=("$pid")
    wait "$pid" || rc=$?
    stop_pid "$pid"
    return "$rc"
}

run_wrk() {
    # run_wrk URL SECONDS OUTFILE [HEADER...]
    local header=() h
    for h in "${@:4}"; do header+=(-H "$h"); done
    TIMEOUT_S=$(($2 + 30)) run_load "$3" "$3.err" \
        wrk -t1 -c"$CONNS" -d"$2s" --timeout 5s "${header[@]}" "$1" ||
        die "wrk failed against $1: $(tail -n 5 "$3" "$3.err")"
}

run_oha() {
    # run_oha URL SECONDS OUTFILE [HEADER...]: fixed request rate, latency corrected for
    # coordinated omission (latency counted from each request's scheduled time).
    local header=() h
    for h in "${@:4}"; do header+=(-H "$h"); done
    TIMEOUT_S=$(($2 + 30)) run_load "$3" "$3.err" \
        oha --no-tui --output-format json -z "$2s" -q "$RATE" -c "$CONNS" --latency-correction "${header[@]}" "$1" ||
        die "oha failed against $1: $(tail -n 5 "$3.err")"
}

CLK_TCK=$(getconf CLK_TCK)

measure() {
    # measure TARGET ROUND: one target's warm-up, max-throughput run and
    # fixed-rate latency run; appends one JSON record to $RAW.
    local t=$1 r=$2 url pid="" cpu0="" cpu1="" ucpu0 ucpu1 acc0 acc1 hwm="" tag="$WORK/r$2-$1"
    local core0 core1 lcore0 lcore1 kids0 kids1
    PROXY_PID=""
    if [[ $t == direct ]]; then
        url="http://127.0.0.1:${PORT[upstream]}/"
    else
        start_proxy "$t"
        pid=$PROXY_PID
        url="http://127.0.0.1:${PORT[$t]}$(target_path "$t")"
    fi
    target_headers "$t"
    acc0=$(upstream_accepts)

    log "round $r/$ROUNDS $t: warm-up ${WARMUP}s"
    ((WARMUP > 0)) && run_wrk "$url" "$WARMUP" "$tag.warmup.txt" "${HDRS[@]}"

    log "round $r/$ROUNDS $t: max throughput, wrk ${CONNS} conns ${DURATION}s"
    [[ -n $pid ]] && cpu0=$(cpu_ticks "$pid")
    ucpu0=$(cpu_ticks "$UP_PID")
    core0=$(core_ticks "$SERVER_CPU") lcore0=$(core_ticks "$LOAD_CPU") kids0=$(children_ticks)
    run_wrk "$url" "$DURATION" "$tag.wrk.txt" "${HDRS[@]}"
    [[ -n $pid ]] && cpu1=$(cpu_ticks "$pid")
    ucpu1=$(cpu_ticks "$UP_PID")
    core1=$(core_ticks "$SERVER_CPU") lcore1=$(core_ticks "$LOAD_CPU") kids1=$(children_ticks)

    log "round $r/$ROUNDS $t: latency at ${RATE} req/s, oha ${CONNS} conns ${DURATION}s"
    run_oha "$url" "$DURATION" "$tag.oha.json" "${HDRS[@]}"

    acc1=$(upstream_accepts)
    if [[ -n $pid ]]; then
        kill -0 "$pid" 2>/dev/null || die "$t (pid $pid) died during the run; see $WORK/$t.log"
        hwm=$(vm_hwm_kib "$pid")
        stop_pid "$pid"
    fi

    python3 - "$RAW" "$t" "$r" "$tag.wrk.txt" "$tag.oha.json" "${cpu0:-}" "${cpu1:-}" \
        "$ucpu0" "$ucpu1" "$acc0" "$acc1" "${hwm:-}" "$CLK_TCK" "$ACC_SELF" \
        "$core0" "$core1" "$lcore0" "$lcore1" "$kids0" "$kids1" <<'PY'
import json, re, sys
(raw, target, rnd, wrk_path, oha_path, cpu0, cpu1, ucpu0, ucpu1,
 acc0, acc1, hwm, clk, acc_self, core0, core1, lcore0, lcore1, kids0, kids1) = sys.argv[1:]
clk = int(clk)
c0, c1, l0, l1 = ([int(x) for x in v.split()] for v in (core0, core1, lcore0, lcore1))
core_total = max(c1[2] - c0[2], 1)
ours = (int(cpu1) - int(cpu0) if cpu0 and cpu1 else 0) + int(ucpu1) - int(ucpu0)
w = open(wrk_path).read()

def num(pattern, default=None, cast=float):
    m = re.search(pattern, w)
    return cast(m.group(1)) if m else default

requests = num(r"(\d+) requests in", cast=int)
rps = num(r"Requests/sec:\s*([\d.]+)")
non2xx = num(r"Non-2xx or 3xx responses:\s*(\d+)", 0, int)
m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", w)
sock_err = sum(int(x) for x in m.groups()) if m else 0
if requests is None or rps is None:
    sys.exit(f"cannot parse wrk output {wrk_path}:\n{w}")

o = json.load(open(oha_path))
summ = o.get("summary", {})
pct = o.get("latencyPercentiles", {})
codes = o.get("statusCodeDistribution", {}) or {}
errs = o.get("errorDistribution", {}) or {}
oha_ok = sum(v for k, v in codes.items() if str(k).startswith("2"))
oha_bad = sum(v for k, v in codes.items() if not str(k).startswith("2"))

def ms(key):
    v = pct.get(key)
    return None if v is None else v * 1000.0

rec = {
    "target": target, "round": int(rnd),
    "requests": requests, "rps": rps, "non2xx": non2xx, "sock_err": sock_err,
    "lat_p50_ms": ms("p50"), "lat_p99_ms": ms("p99"), "lat_p999_ms": ms("p99.9"),
    "oha_rps": summ.get("requestsPerSec"), "oha_ok": oha_ok, "oha_bad": oha_bad,
    # Requests still in flight when -z's deadline hits are aborted by oha;
    # that is the end of the run, not a failure.
    "oha_errors": sum(v for k, v in errs.items() if "deadline" not in k),
    "oha_aborted_at_deadline": sum(v for k, v in errs.items() if "deadline" in k),
    "upstream_conns": int(acc1) - int(acc0) - int(acc_self),
    # Noise on the server core during the wrk window: CPU used by anything
    # but the proxy and the upstream (other processes, and some softirq
    # work), and time stolen by the hypervisor; and steal on the load core.
    "server_core_other_pct": max(0, (c1[0] - c0[0]) - ours) * 100.0 / core_total,
    "server_core_steal_pct": (c1[1] - c0[1]) * 100.0 / core_total,
    "load_core_other_pct": max(0, (l1[0] - l0[0]) - (int(kids1) - int(kids0))) * 100.0
        / max(l1[2] - l0[2], 1),
    "load_core_steal_pct": (l1[1] - l0[1]) * 100.0 / max(l1[2] - l0[2], 1),
    "upstream_cpu_us_per_req": (int(ucpu1) - int(ucpu0)) / clk * 1e6 / requests,
}
if cpu0 and cpu1:
    rec["cpu_us_per_req"] = (int(cpu1) - int(cpu0)) / clk * 1e6 / requests
if hwm:
    rec["rss_mib"] = int(hwm) / 1024.0
with open(raw, "a") as f:
    f.write(json.dumps(rec) + "\n")
print(f"  {target}: {rps:,.0f} req/s"
      + (f", {rec['cpu_us_per_req']:.1f} us/req" if "cpu_us_per_req" in rec else "")
      + f", p50/p99/p99.9 {rec['lat_p50_ms']:.3f}/{rec['lat_p99_ms']:.3f}/{rec['lat_p999_ms']:.3f} ms"
      + f", upstream conns {rec['upstream_conns']}"
      + f", server core other {rec['server_core_other_pct']:.0f}% steal {rec['server_core_steal_pct']:.0f}%"
      + f", load core other {rec['load_core_other_pct']:.0f}% steal {rec['load_core_steal_pct']:.0f}%",
      file=sys.stderr)
PY
}

tool_version() { "$@" 2>&1 | head -n 1 || true; }

# -------------------------------------------------------------------- run --
log "scratch dir $WORK; upstream=$UPSTREAM_KIND; targets: ${TARGETS[*]}; rounds=$ROUNDS duration=${DURATION}s rate=$RATE conns=$CONNS"
start_upstream
if [[ " ${PROXIES[*]-} " == *" rgate-auth-"* ]] || wants rgate-chain; then
    python3 -c 'import cryptography' 2>/dev/null || {
        log "installing the Python package cryptography (bench/jwt.py signs the tokens)"
        python3 -m pip install -q cryptography
    }
    { read -r RS256_TOKEN; read -r ES256_TOKEN; } < <(python3 "$BENCH_DIR/jwt.py" "$WORK")
    [[ -n $ES256_TOKEN ]] || die "bench/jwt.py wrote no tokens"
fi
if wants rgate-redis; then
    # Pinned with the proxy and the upstream: its CPU is part of the row's cost.
    require_port_free "${PORT[redis]}" redis
    start_server redis redis-server --bind 127.0.0.1 --port "${PORT[redis]}" --save '' \
        --appendonly no --dir "$WORK"
    REDIS_PID=$LAST_PID
    for _ in $(seq 100); do
        [[ $(redis-cli -p "${PORT[redis]}" ping 2>/dev/null) == PONG ]] && break
        sleep 0.1
    done
    [[ $(redis-cli -p "${PORT[redis]}" ping 2>/dev/null) == PONG ]] || die "redis-server did not start"
fi
# Calibrate: how many connections does one upstream_accepts query itself add?
a=$(upstream_accepts); b=$(upstream_accepts)
ACC_SELF=$((b - a))

n=${#TARGETS[@]}
for ((r = 1; r <= ROUNDS; r++)); do
    # Rotate the order each round so no target always runs first or last.
    for ((i = 0; i < n; i++)); do
        measure "${TARGETS[$(((i + r - 1) % n))]}" "$r"
    done
done
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)
stop_pid "$UP_PID"
[[ -n ${REDIS_PID:-} ]] && stop_pid "$REDIS_PID"

# ----------------------------------------------------------------- report --
STAMP=$(date +%Y-%m-%d-%H%M)
HOST=$(hostname -s 2>/dev/null || hostname)
[[ -n $OUT ]] || OUT="$BENCH_DIR/results/$STAMP-$HOST.md"
mkdir -p "$(dirname "$OUT")"

rgate_rev=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo "no commit")
if [[ -n $(git -C "$REPO" status --porcelain 2>/dev/null | grep -v '^?? bench/' || true) ]]; then
    rgate_rev="$rgate_rev (uncommitted changes)"
fi

export M_DATE M_HOST M_KERNEL M_CPU M_NCPU M_LOAD_START M_LOAD_END M_RGATE M_NGINX M_HAPROXY M_WRK M_OHA
M_DATE=$(date '+%Y-%m-%d %H:%M:%S %Z')
M_HOST=$HOST
M_KERNEL=$(uname -r)
M_CPU=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)
M_NCPU=$ncpu
M_LOAD_START=$LOAD_START
M_LOAD_END=$LOAD_END
M_RGATE=$rgate_rev
M_NGINX=$(tool_version nginx -v)
M_HAPROXY=$(tool_version haproxy -v)
M_WRK=$(tool_version wrk -v)
M_OHA=$(tool_version oha --version)
# The raw records stay beside the report, so it can be rendered again.
cp "$RAW" "${OUT%.md}.jsonl"
python3 "$BENCH_DIR/report.py" --raw "$RAW" --out "$OUT" \
    --upstream "$UPSTREAM_KIND" --rounds "$ROUNDS" --duration "$DURATION" --warmup "$WARMUP" \
    --rate "$RATE" --conns "$CONNS" --load-cpu "$LOAD_CPU" --server-cpu "$SERVER_CPU" \
    --targets "${TARGETS[*]}"
FAILED=0
log "results written to $OUT"
