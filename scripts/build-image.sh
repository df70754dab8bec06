#!/usr/bin/env bash
# Builds rgate's image (default tag rgate:local) from a release build,
# without any registry or base image: a build context holding the Dockerfile
# and rootfs/ with the binary at /usr/local/bin/rgate and the shared
# libraries ldd names (at their paths, plus the dynamic loader), built with
# `docker build`.
#
# usage: scripts/build-image.sh [--binary PATH] [--if-changed] [TAG]
#   --binary PATH  use this rgate binary instead of `cargo build --release`
#   --if-changed   do nothing when TAG was built from this very binary
#                  (label rgate.binary.sha256); the compose test calls it so
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$RGATE_ROOT"

binary="" if_changed=""
while [[ $# -gt 0 ]]; do
  case $1 in
    --binary) binary=${2:?--binary needs a path}; shift 2 ;;
    --if-changed) if_changed=1; shift ;;
    -h | --help) sed -n '2,12p' "$0"; exit 0 ;;
    -*) rgate_die "unknown option $1" ;;
    *) break ;;
  esac
done
tag=${1:-rgate:local}
if [[ -z $binary ]]; then
  rgate_log "cargo build --release --bin rgate"
  cargo build --release --bin rgate
  binary=target/release/rgate
fi
[[ -x $binary ]] || rgate_die "$binary is not an executable"
sum=$(sha256sum "$binary" | cut -d' ' -f1)
built_from() {
  docker image inspect --format '{{index .Config.Labels "rgate.binary.sha256"}}' "$tag" 2>/dev/null || true
}
if [[ -n $if_changed && $(built_from) == "$sum" ]]; then
  exit 0
fi
# Parallel test processes may all find the image stale: one builds.
exec 9>>"${TMPDIR:-/tmp}/rgate-image.lock"
flock 9
if [[ -n $if_changed && $(built_from) == "$sum" ]]; then
  exit 0
fi

context=$(mktemp -d "${TMPDIR:-/tmp}/rgate-image.XXXXXX")
trap 'rm -rf "$context"' EXIT
rootfs=$context/rootfs
install -D -m 0755 "$binary" "$rootfs/usr/local/bin/rgate"
# ldd lines are "name => /path (addr)", "/path (addr)" (the loader) or
# "linux-vdso.so.1 (addr)" (in the kernel, nothing to copy).
while read -r lib; do
  [[ -n $lib ]] || continue
  cp -L --parents "$lib" "$rootfs/"
done < <(ldd "$binary" 2>/dev/null | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }')
# /tmp for the stats store's temporary files; /etc/rgate for the config.
mkdir -p "$rootfs/tmp" "$rootfs/etc/rgate" "$rootfs/var/lib/rgate"
chmod 1777 "$rootfs/tmp"
cp Dockerfile "$context/"
# Docker's own chatter (the legacy-builder notice) only when the build fails.
if ! output=$(docker build --quiet --label "rgate.binary.sha256=$sum" -t "$tag" "$context" 2>&1); then
  printf '%s\n' "$output" >&2
  rgate_die "docker build of $tag failed"
fi
rgate_log "built $tag ($(du -sh "$rootfs" | cut -f1) root filesystem)"
