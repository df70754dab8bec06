#!/usr/bin/env bash
# Builds the local image rgate-test-upstream:latest from the rgate-upstream
# binary, without any registry or base image (there is none on CI): a root
# filesystem holding the binary, the shared libraries ldd names (at their
# paths, plus the dynamic loader) and a static busybox (sh, wget, ... for
# Docker healthchecks), imported with `docker import`.
#
# usage: scripts/build-test-image.sh [--if-changed] [--no-verify] BINARY [TAG]
#   --if-changed  do nothing when TAG was already built from this very binary
#                 (label rgate.upstream.sha256); the Docker tests call it so.
#   --no-verify   skip the check that a container of the image answers.
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

if_changed="" verify=1
while [[ $# -gt 0 ]]; do
  case $1 in
    --if-changed) if_changed=1 ;;
    --no-verify) verify="" ;;
    -h | --help)
      sed -n '2,13p' "$0"
      exit 0
      ;;
    -*) rgate_die "unknown option $1" ;;
    *) break ;;
  esac
  shift
done
[[ $# -ge 1 && $# -le 2 ]] || rgate_die "usage: $0 [--if-changed] [--no-verify] BINARY [TAG]"
binary=$1
tag=${2:-$RGATE_TEST_IMAGE}
[[ -x $binary ]] || rgate_die "$binary is not an executable (build it: cargo build -p rgate-upstream)"

# The content hash of the binary identifies the image built from it.
sum=$(sha256sum "$binary" | cut -d' ' -f1)
image_sum() {
  docker image inspect --format '{{index .Config.Labels "rgate.upstream.sha256"}}' "$tag" 2>/dev/null || true
}
if [[ -n $if_changed && $(image_sum) == "$sum" ]]; then
  exit 0
fi

# Parallel test processes may all find the image stale: one builds, the
# others wait on the lock and then find it up to date.
lockfile="${TMPDIR:-/tmp}/rgate-test-image.lock"
exec 9>>"$lockfile"
flock 9
if [[ -n $if_changed && $(image_sum) == "$sum" ]]; then
  exit 0
fi

rgate_ensure_busybox

rootfs=$(mktemp -d "${TMPDIR:-/tmp}/rgate-image.XXXXXX")
check_label="rgate.test=image-check-$$-$RANDOM"
cleanup() {
  rm -rf "$rootfs"
  local ids
  ids=$(docker ps -aq --filter "label=$check_label" 2>/dev/null || true)
  if [[ -n $ids ]]; then
    # shellcheck disable=SC2086 # one id per word
    docker rm -f $ids >/dev/null 2>&1 || true
  fi
}
trap cleanup EXIT

install -m 0755 "$binary" "$rootfs/rgate-upstream"
# ldd lines are "name => /path (addr)", "/path (addr)" (the loader) or
# "linux-vdso.so.1 (addr)" (in the kernel, nothing to copy).
while read -r lib; do
  [[ -n $lib ]] || continue
  # -L: copy the file a symlink points to, at the symlink's path; --parents:
  # keep the directory, where the loader looks for it.
  cp -L --parents "$lib" "$rootfs/"
done < <(ldd "$binary" 2>/dev/null | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }')

mkdir -p "$rootfs/bin" "$rootfs/tmp" "$rootfs/etc" "$rootfs/proc" "$rootfs/sys" "$rootfs/dev"
chmod 1777 "$rootfs/tmp"
install -m 0755 /bin/busybox "$rootfs/bin/busybox"
# Docker's CMD-SHELL healthchecks run /bin/sh -c; tests use wget and test/touch/rm.
for applet in sh wget test '[' touch rm cat sleep true false echo ls ps kill; do
  ln -s busybox "$rootfs/bin/$applet"
done
printf 'root:x:0:0:root:/:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' >"$rootfs/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$rootfs/etc/group"

old_id=$(docker image inspect --format '{{.Id}}' "$tag" 2>/dev/null || true)
rgate_log "importing $tag from $binary"
tar -C "$rootfs" --owner=0 --group=0 --numeric-owner -c . |
  docker import \
    --change 'ENTRYPOINT ["/rgate-upstream"]' \
    --change 'ENV PATH=/bin' \
    --change "LABEL rgate.upstream.sha256=$sum" \
    - "$tag" >/dev/null
new_id=$(docker image inspect --format '{{.Id}}' "$tag")
if [[ -n $old_id && $old_id != "$new_id" ]]; then
  # Drop the image this one replaces; it stays if a container still uses it.
  docker image rm "$old_id" >/dev/null 2>&1 || true
fi

if [[ -n $verify ]]; then
  # A container of the image must run on the host network and answer on
  # 127.0.0.1, both from outside and through its own wget (healthchecks).
  port=$(rgate_free_port)
  docker run -d --network host --label "$check_label" "$tag" \
    --listen "127.0.0.1:$port" --name image-check >/dev/null
  if ! rgate_wait_http_ok "$port" 15; then
    docker logs "$(docker ps -aq --filter "label=$check_label")" >&2 || true
    rgate_die "a container of $tag did not answer GET /health on 127.0.0.1:$port"
  fi
  reply=$(rgate_raw_get "$port" /health)
  grep -qi '^x-upstream-name: image-check' <<<"$reply" ||
    rgate_die "$tag answered without x-upstream-name: image-check: $reply"
  inner=$(docker exec "$(docker ps -q --filter "label=$check_label")" \
    wget -q -O - "http://127.0.0.1:$port/health") ||
    rgate_die "busybox wget inside $tag could not reach its own /health"
  [[ $inner == ok* ]] || rgate_die "wget inside $tag got '$inner' instead of ok"
  rgate_log "$tag works: answers on 127.0.0.1:$port from the host network"
fi
