#!/usr/bin/env bash
# Benchmark of warm Mock buildroots on the Swarm (issue 21), on the two-node lab of
# deploy/swarm-lab.sh with the real Mock test image (images/mock-debian-test): one trivial
# noarch package per `packetary build`, for the same target and repository
#  - warm: the job runs from the target's warm buildroot, made once on the service's daemon
#    and pushed to the registry (the first build of a repository state pays for that: its
#    time is reported alone);
#  - cold: the same repository with credentials in its URL, for which no warm buildroot is
#    made (see executor::mockroot), so each job installs the buildroot itself, as before;
# interleaved round by round, medians reported, and the warm buildroot's layer size.
# The repository is a directory of this host served over HTTP on the lab's callback host.
# Usage: deploy/bench-swarm-mock.sh [ROUNDS]   (default 5; as root: the lab's sockets are
# root's). Brings the lab up only when it is not; never takes it down.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${1:-5}"
. deploy/bench-lib.sh
phase() { echo "== $*" >&2; }

swarm_lab
host=$PACKETARY_SWARM_CALLBACK_HOST

phase "cargo build --release; the Mock test image"
cargo build --release --quiet
bin=$PWD/target/release/packetary
images/mock-debian-test/build.sh >/dev/null
repo="$PWD/target/mock-debian-test/repo"

work=$(mktemp -d)
free_port() { python3 -c "import socket; s=socket.socket(); s.bind(('$host', 0)); print(s.getsockname()[1])"; }
repo_port=$(free_port)
python3 -m http.server --bind "$host" --directory "$repo" "$repo_port" >/dev/null 2>&1 &
server=$!
trap 'kill $server 2>/dev/null; rm -rf "$work"' EXIT
trivial_spec "$work/one/trivial/trivial.spec" trivial
config() { # config NAME REPO_URL
  local port
  port=$(free_port)
  cat > "$work/$1.toml" <<EOF
[server]
listen = "$host:$port"

[executor]
kind = "swarm"
callback_url = "http://$host:$port"
registry = "$PACKETARY_SWARM_REGISTRY"
manager = "$PACKETARY_SWARM_MANAGER"

[targets.debian12-mock]
backend = "mock"
image = "packetary/mock:debian-test"
arch = "x86_64"
releasever = "12"
chroot_setup = "install packetary-debian-buildroot"
repos = [{ name = "buildroot", url = "$2" }]
EOF
}
config warm "http://$host:$repo_port/"
config cold "http://bench:bench@$host:$repo_port/"

phase "images push (the Mock image into the lab's registry)"
"$bin" --config "$work/warm.toml" images push >/dev/null

# build KIND OUT: one `packetary build`; fails the benchmark if it fails.
build() {
  rm -rf "$2"
  if ! "$bin" --config "$work/$1.toml" build "$work/one" --out "$2" >"$work/last.log" 2>&1; then
    echo "bench-swarm-mock: $1 build failed:" >&2
    tail -30 "$work/last.log" >&2
    exit 1
  fi
}

phase "the first warm build: makes the buildroot, pushes it, the node pulls it"
first=$(time_it build warm "$work/out-w")
root_log=$(cat "$work"/out-w/*/*/logs/root.log)
grep -q "making the warm buildroot" <<<"$root_log" || { echo "bench-swarm-mock: the first build made no warm buildroot:" >&2; echo "$root_log" >&2; exit 1; }
made=$(sed -n 's/.*warm buildroot .* made in \([0-9.]*\)s.*/\1/p' <<<"$root_log")
pushed=$(sed -n 's/.*warm buildroot pushed as .* in \([0-9.]*\)s.*/\1/p' <<<"$root_log")
warm_tag=$(sed -n 's/.*making the warm buildroot \(packetary\/mockroot:[^ ]*\).*/\1/p' <<<"$root_log")
layer=$(docker image inspect --format '{{.Size}}' "$warm_tag")
base=$(docker image inspect --format '{{.Size}}' packetary/mock:debian-test)
echo "first warm build: $first ms (buildroot made in ${made}s, pushed in ${pushed}s; its layer $(( (layer - base) >> 20 )) MiB)" >&2
# Warm-up: each node pulls the warm buildroot and the Mock image once (Swarm spreads
# consecutive jobs over the nodes); a node's first pull is not a round.
for _ in 1 2; do build warm "$work/out-w"; build cold "$work/out-c"; done

phase "$rounds rounds: warm and cold, interleaved"
: > "$work/t-w"; : > "$work/t-c"
for r in $(seq "$rounds"); do
  a=$(time_it build warm "$work/out-w"); echo "$a" >> "$work/t-w"
  grep -q "packetary: warm buildroot packetary/mockroot:" "$work"/out-w/*/*/logs/root.log || { echo "bench-swarm-mock: a warm build ran without its buildroot" >&2; exit 1; }
  b=$(time_it build cold "$work/out-c"); echo "$b" >> "$work/t-c"
  grep -q "no warm buildroot" "$work"/out-c/*/*/logs/root.log || { echo "bench-swarm-mock: a cold build had a warm buildroot" >&2; exit 1; }
  echo "round $r: warm $a ms, cold $b ms (load $(cut -d' ' -f1 /proc/loadavg))" >&2
done
w=$(median < "$work/t-w"); c=$(median < "$work/t-c")
echo
echo "Mock on the swarm, one trivial package per build (median of $rounds, same run):"
echo "  cold (each job installs the buildroot): $c ms"
echo "  warm (from the pushed buildroot):       $w ms   ($(ratio "$w" "$c")x cold)"
echo "  first warm build (make, push, pull):    $first ms (made ${made}s, pushed ${pushed}s, layer $(( (layer - base) >> 20 )) MiB)"
