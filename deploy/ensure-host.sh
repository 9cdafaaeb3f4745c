#!/usr/bin/env bash
# Makes this host able to run Packetary's builds: a Docker daemon that answers,
# mmdebstrap for the registry-free base image, OpenSSH (Gerrit's stream-events), and for the
# test suite's Swarm lab (deploy/swarm-lab.sh) Debian's docker-registry, socat and curl.
# Installs Debian's packages when missing
# (needs root), starts dockerd when no daemon answers. Safe to run again.
# --install-only: install what is missing, start no daemon (tests/fresh-docker.sh starts its own).
set -euo pipefail
install_only=
[ "${1:-}" = "--install-only" ] && install_only=1

log() { echo "ensure-host: $*" >&2; }

need_apt=()
command -v dockerd >/dev/null 2>&1 || need_apt+=(docker.io)
command -v mmdebstrap >/dev/null 2>&1 || need_apt+=(mmdebstrap)
# The Gerrit stream-events tests run a real OpenSSH server on loopback; the service runs
# the system ssh client.
[ -x /usr/sbin/sshd ] || need_apt+=(openssh-server)
command -v ssh >/dev/null 2>&1 || need_apt+=(openssh-client)
command -v ip >/dev/null 2>&1 || need_apt+=(iproute2)
# A real registry and the Swarm lab's forwarders (tests/it/images_push.rs, deploy/swarm-lab.sh).
command -v docker-registry >/dev/null 2>&1 || need_apt+=(docker-registry)
command -v socat >/dev/null 2>&1 || need_apt+=(socat)
command -v curl >/dev/null 2>&1 || need_apt+=(curl)
if [ "${#need_apt[@]}" -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    log "missing ${need_apt[*]}: run as root, or install them with apt-get"; exit 3
  fi
  log "installing ${need_apt[*]} from Debian"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
  # Debian's docker-registry package enables a registry service on port 5000; the Swarm lab
  # runs its own registry only while the tests run, so the service installed here stays off.
  if [[ " ${need_apt[*]} " == *" docker-registry "* ]] && [ -d /run/systemd/system ]; then
    systemctl disable --now docker-registry.service >/dev/null 2>&1 || true
  fi
fi

[ -n "$install_only" ] && exit 0

if ! docker info >/dev/null 2>&1; then
  if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
    log "starting docker.service"
    systemctl start docker || true
  fi
fi
if ! docker info >/dev/null 2>&1; then
  log "no Docker daemon answers; starting dockerd (log: /var/log/packetary-dockerd.log)"
  nohup dockerd >/var/log/packetary-dockerd.log 2>&1 &
  for _ in $(seq 1 60); do
    docker info >/dev/null 2>&1 && break
    sleep 1
  done
fi
if ! docker info >/dev/null 2>&1; then
  log "dockerd did not come up; see /var/log/packetary-dockerd.log"; tail -20 /var/log/packetary-dockerd.log >&2 || true
  exit 3
fi
log "Docker $(docker version --format '{{.Server.Version}}') answers"
