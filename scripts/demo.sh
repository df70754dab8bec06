#!/usr/bin/env bash
# See rgate do its job: starts labelled containers of the stub upstream,
# starts rgate on 127.0.0.1:8080 with the contract's config, and walks
# through routing, random balancing, label matching, the default response,
# a backend going down (503) and coming back, /stats, the admin plane's
# dashboard, and rgate itself in a container with docker-compose (the
# host-network shape, docker-compose.host.yml).
#
# usage: scripts/demo.sh [--once] [--debug] [--port N]
#   --once   exit after the tour (a smoke test: non-zero if rgate misbehaves)
#            instead of serving until Ctrl-C
#   --debug  use debug binaries instead of a release build (faster to build);
#            RGATE_DEMO_PROFILE=debug does the same
#   --port   the port rgate listens on (default 8080)
# Everything it starts is removed on exit: its containers (label
# rgate.demo=<run id>) and the rgate process it started, by PID.
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$RGATE_ROOT"

once="" profile=${RGATE_DEMO_PROFILE:-release} port=8080
while [[ $# -gt 0 ]]; do
  case $1 in
    --once) once=1 ;;
    --debug) profile=debug ;;
    --port)
      [[ $# -ge 2 ]] || rgate_die "--port needs a value"
      port=$2
      shift
      ;;
    -h | --help)
      sed -n '2,15p' "$0"
      exit 0
      ;;
    *) rgate_die "unknown argument $1 (see --help)" ;;
  esac
  shift
done

# Colours only on a terminal.
if [[ -t 1 ]]; then
  bold=$'\e[1m' dim=$'\e[2m' green=$'\e[32m' red=$'\e[31m' reset=$'\e[0m'
else
  bold="" dim="" green="" red="" reset=""
fi
say() { printf '\n%s%s%s\n' "$bold" "$*" "$reset"; }
failures=0
ok() { printf '   %s✓ %s%s\n' "$green" "$*" "$reset"; }
bad() {
  printf '   %s✗ %s%s\n' "$red" "$*" "$reset"
  failures=$((failures + 1))
}

# The port must be free before anything starts, with a clear message if not.
if rgate_port_in_use "$port"; then
  rgate_die "port $port on 127.0.0.1 is already in use; stop what listens there or pass --port N"
fi

rgate_ensure_docker
command -v curl >/dev/null 2>&1 || rgate_apt_install curl
rgate_ensure_compose

run_id="$(date +%s)-$$"
label="rgate.demo=$run_id"
workdir=$(mktemp -d "${TMPDIR:-/tmp}/rgate-demo.XXXXXX")
rgate_pid=""

# shellcheck disable=SC2317 # called by the EXIT trap
cleanup() {
  local status=$? ids i
  trap - EXIT INT TERM
  if [[ -n $rgate_pid ]] && kill -0 "$rgate_pid" 2>/dev/null; then
    kill -TERM "$rgate_pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do
      kill -0 "$rgate_pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$rgate_pid" 2>/dev/null || true
  fi
  # The compose project of this run, then exactly this run's containers.
  if [[ -n ${compose_project:-} ]]; then
    docker-compose -p "$compose_project" -f "$RGATE_ROOT/docker-compose.host.yml" \
      down --volumes --timeout 10 >/dev/null 2>&1 || true
  fi
  ids=$(docker ps -aq --filter "label=$label" 2>/dev/null || true)
  if [[ -n $ids ]]; then
    # shellcheck disable=SC2086 # one id per word
    docker rm -f $ids >/dev/null 2>&1 || true
  fi
  rm -rf "$workdir"
  rgate_stop_own_dockerd
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

say "Building rgate and the stub upstream ($profile)"
if [[ $profile == release ]]; then
  cargo build --release --workspace --bins
  bindir=target/release
else
  cargo build --workspace --bins
  bindir=target/debug
fi
scripts/build-test-image.sh --if-changed "$bindir/rgate-upstream"

say "Starting containers (host network, 127.0.0.1, label $label)"
declare -A container_of=()
start_container() {
  local name=$1 app=$2 env=$3 cport
  cport=$(rgate_free_port)
  container_of[$name]="rgate-demo-$run_id-$name"
  docker run -d --name "${container_of[$name]}" --network host \
    --label "$label" --label "app_name=$app" --label "env=$env" --label "rgate.port=$cport" \
    "$RGATE_TEST_IMAGE" --listen "127.0.0.1:$cport" --name "$name" >/dev/null
  # Wait until it answers, so the next free-port pick cannot collide with it.
  rgate_wait_http_ok "$cport" 15 || rgate_die "container $name did not answer on 127.0.0.1:$cport"
  printf '   %-16s app_name=%-8s env=%-10s listens on 127.0.0.1:%s\n' "$name" "$app" "$env" "$cport"
}
start_container payment-1 payment production
start_container payment-2 payment production
start_container orders-1 orders production
start_container payment-staging payment staging

config="$workdir/config.yml"
# The contract's config file, exactly as committed.
cp "$RGATE_ROOT/config/examples/contract.yml" "$config"
say "The config (the contract's, unchanged)"
sed 's/^/   /' "$config"

# The admin plane (and its dashboard) on 9901 unless something has it.
admin_port=9901
rgate_port_in_use "$admin_port" && admin_port=$(rgate_free_port)
say "Starting rgate --port $port --bind 127.0.0.1 --admin 127.0.0.1:$admin_port"
rgate_log_file="$workdir/rgate.log"
"$bindir/rgate" --port "$port" --bind 127.0.0.1 --admin "127.0.0.1:$admin_port" \
  --config "$config" 2>"$rgate_log_file" &
rgate_pid=$!
for ((i = 0; i < 300; i++)); do
  grep -q 'rgate listening addr=' "$rgate_log_file" && break
  if ! kill -0 "$rgate_pid" 2>/dev/null; then
    cat "$rgate_log_file" >&2
    rgate_die "rgate exited during startup (log above)"
  fi
  sleep 0.1
done
grep -q 'rgate listening addr=' "$rgate_log_file" || {
  cat "$rgate_log_file" >&2
  rgate_die "rgate did not log 'rgate listening addr=' within 30 s"
}
printf '   %s%s%s\n' "$dim" "$(grep -m1 'rgate listening addr=' "$rgate_log_file")" "$reset"
base="http://127.0.0.1:$port"

# get PATH: sets $status, $upstream (x-upstream-name) and $body.
get() {
  local headers="$workdir/headers" bodyfile="$workdir/body"
  : >"$headers"
  : >"$bodyfile"
  status=$(curl -s -m 5 -o "$bodyfile" -D "$headers" -w '%{http_code}' "$base$1") || status=000
  upstream=$(tr -d '\r' <"$headers" | awk -F': ' 'tolower($1) == "x-upstream-name" { print $2 }')
  body=$(cat "$bodyfile")
}

say "1. Routing: /api/payment/* goes to a random production payment container"
declare -A seen=()
for ((i = 1; i <= 20; i++)); do
  get "/api/payment/charge?n=$i"
  seen[${upstream:-none ($status)}]=$((${seen[${upstream:-none ($status)}]:-0} + 1))
  if ((i <= 5)); then
    printf '   curl %s/api/payment/charge?n=%s  →  %s from %s\n' "$base" "$i" "$status" "${upstream:-?}"
  fi
done
printf '   20 requests answered by:'
for name in "${!seen[@]}"; do printf ' %s=%s' "$name" "${seen[$name]}"; done
printf '\n'
if [[ ${seen[payment-1]:-0} -gt 0 && ${seen[payment-2]:-0} -gt 0 &&
  $((${seen[payment-1]:-0} + ${seen[payment-2]:-0})) -eq 20 ]]; then
  ok "both production payment containers took traffic, nothing else did"
else
  bad "expected all 20 answered by payment-1 and payment-2, both"
fi
if [[ ${seen[payment-staging]:-0} -eq 0 ]]; then
  ok "payment-staging (env=staging) got none: a container needs ALL the labels"
else
  bad "payment-staging got traffic although it lacks env=production"
fi

say "2. /api/orders/* goes to the orders backend"
get /api/orders/42
printf '   curl %s/api/orders/42  →  %s from %s\n' "$base" "$status" "${upstream:-?}"
if [[ $status == 200 && $upstream == orders-1 ]]; then
  ok "answered by orders-1"
else
  bad "expected 200 from orders-1"
fi

say "3. No route matches: the default response"
get /admin
printf '   curl %s/admin  →  %s %s\n' "$base" "$status" "$body"
if [[ $status == 403 && $body == "This is not reachable" ]]; then
  ok "403 This is not reachable"
else
  bad "expected 403 'This is not reachable'"
fi

say "4. docker stop orders-1: the orders backend has no container left"
docker stop -t 5 "${container_of[orders-1]}" >/dev/null
deadline=$((SECONDS + 5))
while :; do
  get /api/orders/42
  [[ $status == 503 && $body == *no_endpoints* ]] && break
  ((SECONDS < deadline)) || break
  sleep 0.1
done
printf '   curl %s/api/orders/42  →  %s %s\n' "$base" "$status" "$body"
if [[ $status == 503 && $body == *'"backend":"orders"'* ]]; then
  ok "503 with a JSON error naming the backend"
else
  bad "expected 503 {\"error\":\"no_endpoints\",\"backend\":\"orders\"}"
fi

say "5. docker start orders-1: traffic comes back, no rgate restart"
docker start "${container_of[orders-1]}" >/dev/null
deadline=$((SECONDS + 5))
while :; do
  get /api/orders/42
  [[ $status == 200 ]] && break
  ((SECONDS < deadline)) || break
  sleep 0.1
done
printf '   curl %s/api/orders/42  →  %s from %s\n' "$base" "$status" "${upstream:-?}"
if [[ $status == 200 && $upstream == orders-1 ]]; then
  ok "orders-1 serves again"
else
  bad "expected 200 from orders-1 within 5 s"
fi

say "6. GET /stats: the traffic so far (success = 2xx/3xx, error = 4xx/5xx)"
get /stats
printf '   %s\n' "$body"
if [[ $status == 200 && $body == *'"requests_count"'* && $body == *'"latency_ms"'* ]]; then
  ok "stats served"
else
  bad "expected 200 with requests_count and latency_ms"
fi

say "7. The admin plane: the dashboard at http://127.0.0.1:$admin_port/"
admin_status=$(curl -s -m 5 -o "$workdir/dashboard.html" -w '%{http_code}' "http://127.0.0.1:$admin_port/") || admin_status=000
readiness=$(curl -s -m 5 "http://127.0.0.1:$admin_port/readyz") || readiness=""
printf '   /readyz → %s\n' "$readiness"
if [[ $admin_status == 200 ]] && grep -q '<title>rgate</title>' "$workdir/dashboard.html"; then
  ok "dashboard served (open it in a browser: containers, their state, and why one is not routed)"
else
  bad "expected the dashboard page on the admin port"
fi

say "8. rgate in a container, with docker-compose (docker-compose.host.yml)"
scripts/build-image.sh --if-changed --binary "$bindir/rgate" rgate:demo
compose_project="rgate-demo-${run_id//-/}"
compose_port=$(rgate_free_port)
compose_app="payment-demo-$run_id"
cat >"$workdir/compose-rgate.yml" <<YAML
routes:
  - {path_prefix: /api/payment, backend: payment}
default_response: {body: "no route", status_code: 404}
backends:
  - {name: payment, match_labels: [app_name=$compose_app, env=production]}
docker: {host_address: 127.0.0.1}
stats: {store: /var/lib/rgate/stats.db}
YAML
compose_env=(
  RGATE_IMAGE=rgate:demo UPSTREAM_IMAGE="$RGATE_TEST_IMAGE" RGATE_CONFIG="$workdir/compose-rgate.yml"
  RGATE_PORT="$compose_port" RGATE_ADMIN_PORT="$(rgate_free_port)" APP_NAME="$compose_app"
  PAYMENT_1_PORT="$(rgate_free_port)" PAYMENT_2_PORT="$(rgate_free_port)"
)
env "${compose_env[@]}" docker-compose -p "$compose_project" -f docker-compose.host.yml up -d 2>&1 |
  sed 's/^/   /'
compose_seen=""
for ((i = 0; i < 100; i++)); do
  reply=$(curl -s -m 2 -D - -o /dev/null "http://127.0.0.1:$compose_port/api/payment/x" | tr -d '\r') || reply=""
  name=$(awk -F': ' 'tolower($1) == "x-upstream-name" { print $2 }' <<<"$reply")
  [[ -n $name && $compose_seen != *"$name"* ]] && compose_seen="$compose_seen $name"
  [[ $compose_seen == *payment-1* && $compose_seen == *payment-2* ]] && break
  sleep 0.1
done
printf '   through rgate'"'"'s container on 127.0.0.1:%s: answered by%s\n' "$compose_port" "${compose_seen:- nobody}"
if [[ $compose_seen == *payment-1* && $compose_seen == *payment-2* ]]; then
  ok "rgate in a container routes to both compose services"
else
  bad "expected answers from payment-1 and payment-2 through the compose project"
fi
env "${compose_env[@]}" docker-compose -p "$compose_project" -f docker-compose.host.yml \
  down --volumes --timeout 10 >/dev/null 2>&1
compose_project=""

if ((failures > 0)); then
  printf '\n%s%s check(s) failed; rgate log:%s\n' "$red" "$failures" "$reset" >&2
  tail -n 40 "$rgate_log_file" >&2
  [[ -n $once ]] && exit 1
fi

if [[ -n $once ]]; then
  say "Tour done (--once): cleaning up"
  exit 0
fi

say "rgate keeps serving on $base — press Ctrl-C to stop and clean up"
cat <<HINT
   try:  curl -i $base/api/payment/hello
         curl -i $base/api/orders/1
         curl -s $base/stats
         docker stop ${container_of[payment-1]}   # and watch traffic move
HINT
# Ctrl-C is the normal way out from here on: clean up and exit 0.
trap 'exit 0' INT TERM
wait "$rgate_pid" || true
rgate_pid=""
rgate_die "rgate exited (log: see above)"
