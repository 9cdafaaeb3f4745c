#!/usr/bin/env bash
# Runs a command (default: the whole suite, tests/run.sh) against a brand-new Docker daemon
# state, the way a new CI machine sees Docker: a second dockerd with an empty data root, its
# own exec root, socket, containerd namespace and a bridge interface that did not exist
# before, so nothing is inherited from the host's daemon (images, volumes, networks, the
# `docker0` address, build caches). The command gets DOCKER_HOST pointing at it. The daemon,
# its bridge, its iptables rules and its state are removed however the command ends.
#
# Usage (as root): tests/fresh-docker.sh [COMMAND [ARG...]]
#   tests/run.sh --fresh-daemon      # the same, spelled from the test command
# Keep the state for a look afterwards with PACKETARY_KEEP_FRESH_DOCKER=1.
set -euo pipefail
cd "$(dirname "$0")/.."
log() { echo "fresh-docker: $*" >&2; }

[ "$(id -u)" -eq 0 ] || { log "a second dockerd needs root; run as root"; exit 3; }
# Docker and the other host tools, installed when missing; no daemon is started for them.
deploy/ensure-host.sh --install-only
command -v ip >/dev/null 2>&1 || { log "needs iproute2's ip (apt-get install iproute2)"; exit 3; }

suffix=$(od -An -N3 -tx1 /dev/urandom | tr -d ' \n')
bridge="pkt${suffix}"          # interface names are at most 15 bytes
# Not /tmp: overlay2 wants a real file system under its data root, and tests make temp dirs.
state=$(mktemp -d "${PACKETARY_FRESH_DOCKER_DIR:-/var/tmp}/packetary-dockerd.XXXXXX")
sock="$state/docker.sock"

cleanup() {
  rc=$?
  if [ -f "$state/docker.pid" ]; then
    pid=$(cat "$state/docker.pid")
    log "stopping dockerd $pid"
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  # dockerd leaves its per-bridge iptables rules behind: remove those naming our bridge.
  for table in filter nat; do
    iptables -t "$table" -S 2>/dev/null | grep -- "$bridge" | sed 's/^-A /-D /' |
      while read -r rule; do eval "iptables -t $table $rule" 2>/dev/null || true; done
  done
  ip link delete "$bridge" 2>/dev/null || true
  if [ -z "${PACKETARY_KEEP_FRESH_DOCKER:-}" ]; then
    # Mounts left by a killed daemon would keep files busy.
    grep -o " $state/[^ ]*" /proc/mounts | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
    rm -rf "$state"
  else
    log "state kept in $state"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A bridge with no address: dockerd picks a free subnet for it, and (like a new machine's
# docker0) reports that subnet in `docker network inspect bridge` without a Gateway.
ip link add name "$bridge" type bridge
log "dockerd with data root $state/data, bridge $bridge (new), socket $sock"
dockerd \
  --data-root "$state/data" \
  --exec-root "$state/exec" \
  --pidfile "$state/docker.pid" \
  --host "unix://$sock" \
  --bridge "$bridge" \
  --containerd-namespace "packetary-$suffix" \
  --containerd-plugins-namespace "packetary-$suffix-plugins" \
  >"$state/dockerd.log" 2>&1 &
for _ in $(seq 1 60); do
  DOCKER_HOST="unix://$sock" docker info >/dev/null 2>&1 && break
  sleep 1
done
if ! DOCKER_HOST="unix://$sock" docker info >/dev/null 2>&1; then
  log "the fresh dockerd did not come up:"; tail -20 "$state/dockerd.log" >&2; exit 3
fi
export DOCKER_HOST="unix://$sock"
log "bridge network as the new daemon reports it: $(docker network inspect bridge --format '{{json .IPAM.Config}}')"
log "images: $(docker images -q | wc -l), volumes: $(docker volume ls -q | wc -l)"

if [ "$#" -eq 0 ]; then set -- tests/run.sh; fi
log "running: $*"
PACKETARY_FRESH_DOCKER=1 "$@"
