#!/usr/bin/env bash
# A real two-node Docker Swarm on this one machine, for the Swarm executor's tests: two NEW
# dockerds (the host's daemon is never touched), a manager and a worker, each in its own network
# namespace on a bridge of the host, plus a registry both nodes pull from.
#
#   deploy/swarm-lab.sh up            # idempotent; writes $LAB/env (source it)
#   deploy/swarm-lab.sh down          # removes everything `up` made
#   deploy/swarm-lab.sh stop-worker   # SIGKILL the worker (dockerd, containerd, shims, tasks)
#   deploy/swarm-lab.sh start-worker  # the worker again, same state: it rejoins by itself
#   deploy/swarm-lab.sh status
#
# Layout (10.231.7.0/24 is the lab's link; every interface name starts with `pkslab-`, which
# tests/fresh-docker.sh's `pkt??????` bridges cannot clash with):
#   host netns: bridge pkslab-br 10.231.7.1 (the callback host), the registry on 127.0.0.1:PORT
#               and a socat 10.231.7.1:PORT -> 127.0.0.1:PORT (the registry is on no other
#               interface);
#   netns pkslab-mgr: manager dockerd ($LAB/mgr.sock), veth pkslab-m 10.231.7.3;
#   netns pkslab-wrk: worker dockerd ($LAB/wrk.sock), veth pkslab-w 10.231.7.2;
#   each node netns: default route via 10.231.7.1, a socat 127.0.0.1:PORT -> 10.231.7.1:PORT.
# Every node (and the host daemon, which pushes) names the registry 127.0.0.1:PORT: Docker
# treats 127.0.0.0/8 as a plain-http registry without any daemon option.
# The manager has its own netns too: a dockerd starting in the host netns flushes the DOCKER
# and DOCKER-ISOLATION chains there (libnetwork's bridge driver does so at start), which drops
# the host daemon's port mappings.
# Each dockerd has its own data/exec root, socket, containerd namespaces, cgroup parent and a
# bridge made here: never `--bridge none`, with which dockerd deletes the bridge docker0.
# Every task gets a private cgroup namespace (--default-cgroupns-mode private): Swarm on API
# 1.41 cannot ask for one per service, and the agent runs no target with SYS_ADMIN (Mock)
# without it (a task with SYS_ADMIN could otherwise remount the host's cgroup tree).
# State: $PACKETARY_SWARM_LAB_DIR, default /var/tmp/packetary-swarm-lab (not /tmp: overlay2).
set -euo pipefail

LAB=${PACKETARY_SWARM_LAB_DIR:-/var/tmp/packetary-swarm-lab}
BRIDGE=pkslab-br
HOST_IP=10.231.7.1
SUBNET=10.231.7.0/24
NODES=(mgr wrk)
declare -A IP=([mgr]=10.231.7.3 [wrk]=10.231.7.2)
declare -A VETH=([mgr]=pkslab-m [wrk]=pkslab-w)

log() { echo "swarm-lab: $*" >&2; }
die() {
  log "$*"
  exit 3
}
need_root() { [ "$(id -u)" -eq 0 ] || die "the lab's daemons and namespaces are root's: run as root"; }

# The path goes into unix:// URLs, dockerd flags and /proc/mounts matching: absolute, no blanks.
case "$LAB" in
/*[[:space:]]* | [!/]* | '') die "PACKETARY_SWARM_LAB_DIR must be an absolute path without blanks, not '$LAB'" ;;
esac

dk() { # NODE args...: the docker CLI against one lab daemon
  local n=$1
  shift
  DOCKER_HOST="unix://$LAB/$n.sock" docker "$@"
}

netns() { echo "pkslab-$1"; }
in_node() { # NODE cmd...: a command in the node's netns
  local n=$1
  shift
  nsenter --net="/run/netns/$(netns "$n")" "$@"
}
cgroup_parent() { echo "packetary-swarm-lab-$1"; }

# pid_alive FILE WORD: the pid in FILE runs and its command line contains WORD (a reused pid
# of some other program is not ours to signal).
pid_alive() {
  local pid
  [ -f "$1" ] || return 1
  pid=$(cat "$1" 2>/dev/null) || return 1
  [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "$2"
}

kill_pidfile() { # FILE WORD
  if pid_alive "$1" "$2"; then kill -9 "$(cat "$1")" 2>/dev/null || true; fi
  rm -f "$1"
}

# --- the network ----------------------------------------------------------------------------
net_up() {
  if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
    local clash
    clash=$(ip -4 route show to match "$HOST_IP" | grep -v '^default' || true)
    [ -z "$clash" ] || die "$SUBNET is already routed on this host ($clash); the lab needs it for itself"
    ip link add name "$BRIDGE" type bridge
    ip addr add "$HOST_IP/24" dev "$BRIDGE"
  fi
  ip link set "$BRIDGE" up
  local n ns
  for n in "${NODES[@]}"; do
    ns=$(netns "$n")
    [ -e "/run/netns/$ns" ] || ip netns add "$ns"
    if ! ip link show "${VETH[$n]}h" >/dev/null 2>&1; then
      ip link add "${VETH[$n]}h" type veth peer name "${VETH[$n]}"
      ip link set "${VETH[$n]}" netns "$ns"
      ip link set "${VETH[$n]}h" master "$BRIDGE"
    fi
    ip link set "${VETH[$n]}h" up
    in_node "$n" ip addr replace "${IP[$n]}/24" dev "${VETH[$n]}"
    in_node "$n" ip link set "${VETH[$n]}" up
    in_node "$n" ip link set lo up
    in_node "$n" ip route replace default via "$HOST_IP"
  done
  # The nodes' traffic beyond the host (the Internet, for builds that fetch): forwarded and
  # masqueraded by the host. dockerd's FORWARD policy is DROP, hence the accepts (they also
  # pass node-to-node frames, which br_netfilter shows to iptables).
  sysctl -qw net.ipv4.ip_forward=1
  iptables -C FORWARD -i "$BRIDGE" -j ACCEPT 2>/dev/null || iptables -I FORWARD -i "$BRIDGE" -j ACCEPT
  iptables -C FORWARD -o "$BRIDGE" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT 2>/dev/null ||
    iptables -I FORWARD -o "$BRIDGE" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
  iptables -t nat -C POSTROUTING -s "$SUBNET" ! -o "$BRIDGE" -j MASQUERADE 2>/dev/null ||
    iptables -t nat -A POSTROUTING -s "$SUBNET" ! -o "$BRIDGE" -j MASQUERADE
}

# --- the daemons ----------------------------------------------------------------------------
daemon_start() { # NODE
  local n=$1 d="$LAB/$1"
  if pid_alive "$d/dockerd.pid" dockerd; then return 0; fi
  mkdir -p "$d"
  in_node "$n" ip link show pkslab-b >/dev/null 2>&1 || in_node "$n" ip link add name pkslab-b type bridge
  # setsid and no inherited descriptors: the daemon outlives this script and holds no pipe of
  # its caller (a test runner waiting for EOF) open.
  nsenter --net="/run/netns/$(netns "$n")" setsid dockerd \
    --data-root "$d/data" --exec-root "$d/exec" --pidfile "$d/dockerd.pid" \
    --host "unix://$LAB/$n.sock" --bridge pkslab-b \
    --containerd-namespace "packetary-swarm-lab-$n" \
    --containerd-plugins-namespace "packetary-swarm-lab-$n-plugins" \
    --exec-opt native.cgroupdriver=cgroupfs --cgroup-parent "/$(cgroup_parent "$n")" \
    --default-cgroupns-mode private \
    </dev/null >>"$d/dockerd.log" 2>&1 9>&- &
}

daemon_wait() { # NODE
  for _ in $(seq 1 300); do
    dk "$1" version >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  tail -20 "$LAB/$1/dockerd.log" >&2
  die "the $1 dockerd did not answer on $LAB/$1.sock within 60 s (log above: $LAB/$1/dockerd.log)"
}

# Every process of a lab daemon, SIGKILLed: dockerd, its containerd, the shims of its
# containerd namespace and the tasks in its cgroup parent. A machine that dies keeps nothing.
daemon_kill() { # NODE
  local n=$1 d="$LAB/$1" cg pids
  kill_pidfile "$d/dockerd.pid" dockerd
  kill_pidfile "$d/exec/containerd/containerd.pid" containerd
  # Shims are reparented to init; their command line names the containerd namespace.
  pids=$(pgrep -f -- "-namespace packetary-swarm-lab-$n( |$)" || true)
  # shellcheck disable=SC2086 # a list of pids
  [ -z "$pids" ] || kill -9 $pids 2>/dev/null || true
  cg=$(cgroup_parent "$n")
  for _ in 1 2 3 4 5; do
    pids=$(find /sys/fs/cgroup/"$cg" /sys/fs/cgroup/*/"$cg" -name cgroup.procs -exec cat {} + 2>/dev/null | sort -u || true)
    [ -z "$pids" ] && break
    # shellcheck disable=SC2086
    kill -9 $pids 2>/dev/null || true
    sleep 0.2
  done
  # What the killed daemons leave mounted (netns files, shm, overlays) would keep the state
  # busy for the next start or for the removal.
  grep -o " $d/[^ ]*" /proc/mounts | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
}

swarm_up() {
  if [ "$(dk mgr info --format '{{.Swarm.LocalNodeState}}')" != active ]; then
    dk mgr swarm init --advertise-addr "${IP[mgr]}" --listen-addr "${IP[mgr]}:2377" >/dev/null
  fi
  log "swarm initialised on the manager"
  local state mid wid
  state=$(dk wrk info --format '{{.Swarm.LocalNodeState}}')
  if [ "$state" != active ] && [ "$state" != pending ]; then
    dk wrk swarm join --token "$(dk mgr swarm join-token -q worker)" \
      --advertise-addr "${IP[wrk]}" --listen-addr "${IP[wrk]}:2377" "${IP[mgr]}:2377" >/dev/null
  fi
  mid=$(dk mgr info --format '{{.Swarm.NodeID}}')
  for _ in $(seq 1 150); do
    wid=$(dk wrk info --format '{{.Swarm.NodeID}}')
    [ -n "$wid" ] && [ "$(dk mgr node inspect "$wid" --format '{{.Status.State}}' 2>/dev/null)" = ready ] && break
    sleep 0.2
  done
  [ "$(dk mgr node inspect "$wid" --format '{{.Status.State}}' 2>/dev/null)" = ready ] ||
    die "the worker did not become ready in the swarm (see $LAB/wrk/dockerd.log)"
  dk mgr node update --label-add packetary.node=manager --label-add rpm=yes "$mid" >/dev/null
  dk mgr node update --label-add packetary.node=worker --label-add rpm=yes "$wid" >/dev/null
  log "worker joined, nodes labelled"
}

# --- the registry ---------------------------------------------------------------------------
port_free() { # PORT: nothing listens on it, in the host netns nor in a node's
  [ -z "$(ss -Hltn "sport = :$1")" ] && [ -z "$(in_node mgr ss -Hltn "sport = :$1")" ] &&
    [ -z "$(in_node wrk ss -Hltn "sport = :$1")" ]
}

registry_up() {
  local port='' n p
  if [ -f "$LAB/registry/port" ]; then
    port=$(cat "$LAB/registry/port")
  else
    for p in $(seq 5055 5099); do port_free "$p" && {
      port=$p
      break
    }; done
    [ -n "$port" ] || die "no free TCP port in 5055-5099 for the registry"
    mkdir -p "$LAB/registry/data"
    echo "$port" >"$LAB/registry/port"
  fi
  if ! pid_alive "$LAB/registry/registry.pid" docker-registry; then
    printf '%s\n' 'version: 0.1' 'log:' '  level: warn' 'storage:' '  filesystem:' \
      "    rootdirectory: $LAB/registry/data" '  delete:' '    enabled: true' 'http:' \
      "  addr: 127.0.0.1:$port" >"$LAB/registry/config.yml"
    setsid docker-registry serve "$LAB/registry/config.yml" </dev/null >>"$LAB/registry/log" 2>&1 9>&- &
    echo $! >"$LAB/registry/registry.pid"
  fi
  if ! pid_alive "$LAB/registry/socat-host.pid" socat; then
    setsid socat "TCP-LISTEN:$port,bind=$HOST_IP,fork,reuseaddr" "TCP:127.0.0.1:$port" \
      </dev/null >>"$LAB/registry/socat-host.log" 2>&1 9>&- &
    echo $! >"$LAB/registry/socat-host.pid"
  fi
  for n in "${NODES[@]}"; do
    pid_alive "$LAB/registry/socat-$n.pid" socat && continue
    # A plain command (no function): `$!` is then socat's own pid.
    nsenter --net="/run/netns/$(netns "$n")" setsid socat \
      "TCP-LISTEN:$port,bind=127.0.0.1,fork,reuseaddr" "TCP:$HOST_IP:$port" \
      </dev/null >>"$LAB/registry/socat-$n.log" 2>&1 9>&- &
    echo $! >"$LAB/registry/socat-$n.pid"
  done
  for _ in $(seq 1 100); do
    curl -fsS "http://127.0.0.1:$port/v2/" >/dev/null 2>&1 &&
      in_node mgr curl -fsS "http://127.0.0.1:$port/v2/" >/dev/null 2>&1 &&
      in_node wrk curl -fsS "http://127.0.0.1:$port/v2/" >/dev/null 2>&1 && break
    sleep 0.1
  done
  for n in "${NODES[@]}"; do
    in_node "$n" curl -fsS "http://127.0.0.1:$port/v2/" >/dev/null ||
      die "the registry does not answer on 127.0.0.1:$port in the $n netns (logs: $LAB/registry/)"
  done
  REGISTRY="127.0.0.1:$port"
  log "registry on $REGISTRY (host and both nodes)"
}

# A one-file image pushed by the host's daemon (DOCKER_HOST as given) and pulled by digest on
# the worker: the path build images take. The host daemon keeps nothing of it.
registry_probe() {
  local tmp ref digest
  tmp=$(mktemp -d)
  echo "packetary swarm lab probe" >"$tmp/probe"
  ref="$REGISTRY/lab/probe:$$"
  tar -C "$tmp" -c probe | docker import - "$ref" >/dev/null
  rm -rf "$tmp"
  docker push -q "$ref" >/dev/null
  digest=$(docker image inspect "$ref" --format '{{index .RepoDigests 0}}')
  docker image rm "$ref" >/dev/null
  dk wrk pull -q "$digest" >/dev/null || die "the worker cannot pull $digest from the registry"
  dk wrk image rm "$digest" >/dev/null
  log "probe image pushed by the host daemon, pulled by digest on the worker"
}

write_env() {
  printf '%s\n' "PACKETARY_SWARM_MANAGER=unix://$LAB/mgr.sock" \
    "PACKETARY_SWARM_WORKER=unix://$LAB/wrk.sock" \
    "PACKETARY_SWARM_REGISTRY=$REGISTRY" \
    "PACKETARY_SWARM_CALLBACK_HOST=$HOST_IP" \
    "PACKETARY_SWARM_LAB_DIR=$LAB" >"$LAB/env.tmp"
  mv "$LAB/env.tmp" "$LAB/env"
}

need_tools() {
  need_root
  local t missing=()
  for t in dockerd docker ip nsenter iptables socat docker-registry curl ss; do
    command -v "$t" >/dev/null 2>&1 || missing+=("$t")
  done
  [ "${#missing[@]}" -eq 0 ] ||
    die "missing ${missing[*]}: run deploy/ensure-host.sh --install-only (Debian: docker.io iproute2 socat docker-registry curl)"
}

cmd_up() {
  local t0=$SECONDS
  need_tools
  mkdir -p "$LAB"
  net_up
  daemon_start mgr
  daemon_start wrk
  daemon_wait mgr
  log "manager up"
  daemon_wait wrk
  log "worker up"
  swarm_up
  registry_up
  registry_probe
  write_env
  log "up in $((SECONDS - t0)) s; environment in $LAB/env"
}

cmd_stop_worker() {
  need_root
  daemon_kill wrk
  log "worker killed (dockerd, containerd, shims, tasks)"
}

cmd_start_worker() {
  need_root
  [ -e "/run/netns/$(netns wrk)" ] || die "no lab (netns $(netns wrk) missing): run deploy/swarm-lab.sh up"
  daemon_start wrk
  daemon_wait wrk
  log "worker dockerd up again"
}

cmd_down() {
  local t0=$SECONDS n t
  need_root
  for n in "${NODES[@]}"; do kill_pidfile "$LAB/registry/socat-$n.pid" socat; done
  kill_pidfile "$LAB/registry/socat-host.pid" socat
  kill_pidfile "$LAB/registry/registry.pid" docker-registry
  for n in "${NODES[@]}"; do
    daemon_kill "$n"
    # The node's veth end, bridges and iptables rules go with its netns.
    ip netns del "$(netns "$n")" 2>/dev/null || true
    ip link del "${VETH[$n]}h" 2>/dev/null || true
    t=$(cgroup_parent "$n")
    find /sys/fs/cgroup/"$t" /sys/fs/cgroup/*/"$t" -depth -type d -exec rmdir {} \; 2>/dev/null || true
  done
  ip link del "$BRIDGE" 2>/dev/null || true
  # net_up's rules, the only ones the lab writes in the host netns.
  for t in filter nat; do
    iptables -t "$t" -S 2>/dev/null | grep -- "$BRIDGE" | sed 's/^-A /-D /' |
      while read -r rule; do eval "iptables -t $t $rule" 2>/dev/null || true; done
  done
  # Image layers take tens of seconds to delete: the state is moved aside at once and removed
  # in the background (and again by the next `down` if that was cut short).
  if [ -d "$LAB" ]; then mv "$LAB" "$LAB.removing.$$"; fi
  for t in "$LAB".removing.*; do
    [ -d "$t" ] || continue
    grep -o " $t/[^ ]*" /proc/mounts | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
    setsid rm -rf "$t" </dev/null >/dev/null 2>&1 9>&- &
  done
  log "down in $((SECONDS - t0)) s"
}

cmd_status() {
  local n
  for n in "${NODES[@]}"; do
    if pid_alive "$LAB/$n/dockerd.pid" dockerd; then log "$n dockerd: running"; else log "$n dockerd: not running"; fi
  done
  if pid_alive "$LAB/registry/registry.pid" docker-registry; then
    log "registry: running on 127.0.0.1:$(cat "$LAB/registry/port")"
  else
    log "registry: not running"
  fi
  dk mgr node ls 2>/dev/null || true
  [ ! -f "$LAB/env" ] || cat "$LAB/env"
}

case "${1:-}" in
up) cmd_up ;;
down) cmd_down ;;
stop-worker) cmd_stop_worker ;;
start-worker) cmd_start_worker ;;
status) cmd_status ;;
*)
  echo "usage: $0 up|down|stop-worker|start-worker|status" >&2
  exit 2
  ;;
esac
