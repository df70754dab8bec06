# shellcheck shell=bash
# Shared helpers for scripts/test.sh, scripts/demo.sh and
# scripts/build-test-image.sh: installing what a fresh Debian machine lacks,
# bringing up Docker, building the stub-upstream image. Sourced, never run.

# shellcheck disable=SC2034 # used by the scripts that source this file
RGATE_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# Set by rgate_ensure_docker only when this script started dockerd itself, so
# that rgate_stop_own_dockerd never touches a daemon someone else runs.
RGATE_DOCKERD_PID=""
# shellcheck disable=SC2034 # used by the scripts that source this file
RGATE_TEST_IMAGE="rgate-test-upstream:latest"

rgate_log() { printf '==> %s\n' "$*" >&2; }
rgate_die() {
  printf 'error: %s\n' "$*" >&2
  exit 1
}

# Runs a command as root: apt-get and dockerd need it; sudo only if we are not root.
rgate_as_root() {
  if [[ $(id -u) -eq 0 ]]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo "$@"
  else
    rgate_die "needs root to run: $*"
  fi
}

# Installs the given Debian packages that are not installed yet. apt-get
# update runs first (once per script) because a fresh machine has no lists.
RGATE_APT_UPDATED=""
rgate_apt_install() {
  local missing=() pkg
  for pkg in "$@"; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
      missing+=("$pkg")
    fi
  done
  ((${#missing[@]} > 0)) || return 0
  command -v apt-get >/dev/null 2>&1 ||
    rgate_die "missing ${missing[*]} and no apt-get to install it; install it by hand"
  rgate_log "installing ${missing[*]}"
  if [[ -z $RGATE_APT_UPDATED ]]; then
    rgate_as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q </dev/null
    RGATE_APT_UPDATED=1
  fi
  # With recommends: docker.io's (cgroupfs-mount among them) are what a
  # daemon without systemd needs.
  rgate_as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
    "${missing[@]}" </dev/null
}

# A static /bin/busybox gives the test image a shell and wget for healthchecks
# without copying any more shared libraries into it.
rgate_ensure_busybox() {
  if [[ -x /bin/busybox ]] && ! ldd /bin/busybox >/dev/null 2>&1; then
    return 0 # present and static (ldd fails on a static binary)
  fi
  rgate_apt_install busybox-static
}

# True when the Docker daemon answers; bounded so a hung daemon cannot stall us.
rgate_docker_up() {
  timeout 10 docker info >/dev/null 2>&1
}

# Makes sure a Docker daemon answers: installs docker.io if the engine is
# missing, and starts dockerd in the background if none runs (no systemd on
# CI machines). Bridge networking and iptables are off: every container of
# rgate's tests and demo uses the host network.
rgate_ensure_docker() {
  if ! command -v dockerd >/dev/null 2>&1 || ! command -v docker >/dev/null 2>&1; then
    rgate_apt_install docker.io
  fi
  if rgate_docker_up; then
    return 0
  fi
  local pidfile=/var/run/docker.pid running=""
  if [[ -s $pidfile ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
    running=1 # a daemon is starting (or stuck): wait for it, never start a second one
    rgate_log "dockerd (pid $(cat "$pidfile")) runs but does not answer yet; waiting"
  elif [[ -n ${DOCKER_HOST:-} && ${DOCKER_HOST} != unix:///var/run/docker.sock ]]; then
    rgate_die "DOCKER_HOST=$DOCKER_HOST does not answer (docker info failed)"
  fi
  local logfile="${RGATE_DOCKERD_LOG:-${TMPDIR:-/tmp}/rgate-dockerd.log}"
  local starter=""
  if [[ -z $running ]]; then
    # Without systemd nothing may have mounted the cgroup hierarchies dockerd needs.
    if ! mountpoint -q /sys/fs/cgroup 2>/dev/null && command -v cgroupfs-mount >/dev/null 2>&1; then
      rgate_as_root cgroupfs-mount || true
    fi
    rgate_log "starting dockerd (log: $logfile)"
    # setsid: its own session, so a Ctrl-C in the terminal does not reach it.
    rgate_as_root setsid dockerd --bridge=none --iptables=false --ip-masq=false \
      >"$logfile" 2>&1 </dev/null &
    starter=$!
  fi
  # Bounded readiness loop: at most 90 s, polling every half second.
  local i
  for ((i = 0; i < 180; i++)); do
    if rgate_docker_up; then
      if [[ -n $starter && -s $pidfile ]]; then
        RGATE_DOCKERD_PID="$(cat "$pidfile")"
      fi
      rgate_log "Docker is up ($(docker version --format '{{.Server.Version}}' 2>/dev/null || echo '?'))"
      return 0
    fi
    if [[ -n $starter ]] && ! kill -0 "$starter" 2>/dev/null; then
      tail -n 30 "$logfile" >&2 || true
      rgate_die "dockerd exited during startup (log above, full log in $logfile)"
    fi
    sleep 0.5
  done
  [[ -n $starter ]] && tail -n 30 "$logfile" >&2
  rgate_die "Docker did not answer within 90 s"
}

# Stops the dockerd that rgate_ensure_docker started, and only that one (by PID).
rgate_stop_own_dockerd() {
  [[ -n $RGATE_DOCKERD_PID ]] || return 0
  local pid=$RGATE_DOCKERD_PID i
  RGATE_DOCKERD_PID=""
  rgate_log "stopping the dockerd this script started (pid $pid)"
  rgate_as_root kill -TERM "$pid" 2>/dev/null || return 0
  for ((i = 0; i < 60; i++)); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.5
  done
  rgate_log "dockerd (pid $pid) did not stop within 30 s; killing it"
  rgate_as_root kill -KILL "$pid" 2>/dev/null || true
}

# True when something accepts TCP connections on 127.0.0.1:PORT (bash's
# /dev/tcp, so no extra tool is needed).
rgate_port_in_use() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# Prints a TCP port on 127.0.0.1 that nothing listens on, from 20000-31999:
# below Linux's ephemeral range, so no outgoing connection can take it
# before the container that is given it binds it.
rgate_free_port() {
  local i port
  for ((i = 0; i < 200; i++)); do
    port=$((20000 + RANDOM % 12000))
    if ! rgate_port_in_use "$port"; then
      printf '%s\n' "$port"
      return 0
    fi
  done
  rgate_die "found no free TCP port on 127.0.0.1"
}

# Minimal HTTP GET over /dev/tcp: prints the raw response (status line,
# headers, body). For readiness checks where curl may not be installed yet.
rgate_raw_get() {
  local port=$1 path=$2
  (
    exec 3<>"/dev/tcp/127.0.0.1/$port" || exit 1
    printf 'GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n' "$path" >&3
    timeout 5 cat <&3
  ) 2>/dev/null
}

# Polls until 127.0.0.1:PORT answers GET /health with 200, at most SECONDS.
rgate_wait_http_ok() {
  local port=$1 seconds=${2:-10} i
  for ((i = 0; i < seconds * 10; i++)); do
    if rgate_raw_get "$port" /health | head -n 1 | grep -q ' 200'; then
      return 0
    fi
    sleep 0.1
  done
  return 1
}

# Installs Debian packages whose install would start a system service
# (redis-server, prometheus) without letting it: only instances the tests
# start themselves run, each on a port of their choosing.
rgate_apt_install_no_services() {
  local policy=/usr/sbin/policy-rc.d own_policy=
  if [[ ! -e $policy ]]; then
    rgate_as_root sh -c "printf '#!/bin/sh\nexit 101\n' >$policy && chmod +x $policy"
    own_policy=1
  fi
  rgate_apt_install "$@"
  if [[ -n $own_policy ]]; then
    rgate_as_root rm -f "$policy"
  fi
}

rgate_ensure_redis() {
  if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-cli >/dev/null 2>&1; then
    rgate_apt_install_no_services redis-server
  fi
  command -v redis-server >/dev/null 2>&1 || rgate_die "redis-server is not installed"
}

# promtool (Debian package prometheus) checks the admin plane's /metrics.
# docker-compose (Debian's 1.29) for the compose test.
rgate_ensure_compose() {
  command -v docker-compose >/dev/null 2>&1 || rgate_apt_install_no_services docker-compose
  command -v docker-compose >/dev/null 2>&1 || rgate_die "docker-compose is not installed"
}

# Headless Chromium for the dashboard test (Debian's package).
rgate_ensure_chromium() {
  command -v chromium >/dev/null 2>&1 || rgate_apt_install_no_services chromium
  command -v chromium >/dev/null 2>&1 || rgate_die "chromium is not installed"
}

rgate_ensure_promtool() {
  command -v promtool >/dev/null 2>&1 || rgate_apt_install_no_services prometheus
  command -v promtool >/dev/null 2>&1 || rgate_die "promtool is not installed"
}

# Starts a throwaway redis-server on 127.0.0.1 on a free port (no
# persistence) and exports RGATE_REDIS_URL; rgate_stop_redis stops exactly it.
RGATE_REDIS_PID=
RGATE_REDIS_DIR=
rgate_start_redis() {
  local port i
  port=$(rgate_free_port)
  RGATE_REDIS_DIR=$(mktemp -d)
  redis-server --bind 127.0.0.1 --port "$port" --save '' --appendonly no \
    --dir "$RGATE_REDIS_DIR" --daemonize no >"$RGATE_REDIS_DIR/redis.log" 2>&1 &
  RGATE_REDIS_PID=$!
  for ((i = 0; i < 100; i++)); do
    if [[ $(redis-cli -h 127.0.0.1 -p "$port" ping 2>/dev/null) == PONG ]]; then
      export RGATE_REDIS_URL="redis://127.0.0.1:$port/0"
      rgate_log "redis-server (pid $RGATE_REDIS_PID) on 127.0.0.1:$port"
      return 0
    fi
    kill -0 "$RGATE_REDIS_PID" 2>/dev/null || break
    sleep 0.1
  done
  cat "$RGATE_REDIS_DIR/redis.log" >&2 || true
  rgate_die "redis-server did not answer on 127.0.0.1:$port"
}

rgate_stop_redis() {
  if [[ -n $RGATE_REDIS_PID ]]; then
    kill "$RGATE_REDIS_PID" 2>/dev/null || true
    wait "$RGATE_REDIS_PID" 2>/dev/null || true
    RGATE_REDIS_PID=
  fi
  if [[ -n $RGATE_REDIS_DIR ]]; then
    rm -rf "$RGATE_REDIS_DIR"
    RGATE_REDIS_DIR=
  fi
}
