#!/usr/bin/env bash
# The project's test command: formatting, lints, build, example configs, the
# whole test suite including the Docker end-to-end tests, then the demo as a
# smoke test. On a fresh Debian 12 machine (root) it installs Docker,
# busybox-static, redis-server, prometheus, chromium and docker-compose, and starts dockerd and
# a throwaway Redis itself; promtool (Debian's prometheus) checks the metrics
# and headless Chromium the dashboard. Exits non-zero on any failure; fails
# (never skips) when Docker, Redis, promtool or Chromium cannot be brought up.
#
# Environment:
#   RGATE_SKIP_DEMO=1      skip the final `scripts/demo.sh --once`
#   RGATE_DEMO_PROFILE=debug  run the demo on debug binaries (no release build)
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$RGATE_ROOT"

started=$SECONDS
step() { rgate_log "[$((SECONDS - started))s] $*"; }

command -v cargo >/dev/null 2>&1 || rgate_die "cargo is not installed (rustup: https://rustup.rs)"

# Docker first: the suite must fail, not skip, without it.
step "Docker"
rgate_ensure_docker
# Stop a dockerd and a Redis we started ourselves when we leave, whatever
# the outcome.
trap 'rgate_stop_redis; rgate_stop_own_dockerd' EXIT
rgate_ensure_busybox

# Redis for the shared rate-limit tests: installed when missing, one
# throwaway instance on a free loopback port (RGATE_REDIS_URL).
step "Redis"
rgate_ensure_redis
rgate_start_redis

step "promtool"
rgate_ensure_promtool

step "chromium"
rgate_ensure_chromium

step "docker-compose"
rgate_ensure_compose

if ! cargo nextest --version >/dev/null 2>&1; then
  step "installing cargo-nextest"
  cargo install cargo-nextest --locked
fi

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings

step "cargo build"
cargo build --workspace --bins

step "rgate check config/examples"
shopt -s nullglob
examples=(config/examples/*.yml)
shopt -u nullglob
for example in "${examples[@]}"; do
  target/debug/rgate check "$example" || rgate_die "rgate check $example failed"
done
((${#examples[@]} > 0)) || rgate_log "no config/examples/*.yml to check"

# Build the stub-upstream image up front so a broken image fails here with a
# clear message rather than inside every Docker test.
step "test image"
scripts/build-test-image.sh --if-changed target/debug/rgate-upstream

step "cargo nextest (with the Docker and Redis tests)"
RGATE_DOCKER_TESTS=1 RGATE_REDIS_TESTS=1 RGATE_PROMTOOL_TESTS=1 RGATE_BROWSER_TESTS=1 cargo nextest run --workspace --run-ignored all --no-fail-fast

if [[ ${RGATE_SKIP_DEMO:-} != 1 ]]; then
  step "demo smoke test"
  scripts/demo.sh --once
fi

step "all checks passed"
