#!/usr/bin/env bash
# Benchmarks of the Swarm executor (issue 21's figures), each against the local executor
# measured in the same run, on the two-node lab of deploy/swarm-lab.sh:
#  1. 16 trivial noarch packages, `packetary build DIR` with [build] parallel = 4, on the
#     swarm vs. the local executor (the same target and image, the host's daemon): wall time;
#  2. per-build overhead: one trivial package, swarm vs. local, wall time of the command and
#     the build's own span from its build.json (prepare's start to collect's end: the job
#     created, run, its results uploaded and taken vs. the local container created, run and
#     its results downloaded);
#  3. the service's own cost: CPU seconds of the `packetary build` process (its rusage, all
#     threads) per build and the bytes between the nodes and the host's side of the
#     lab's bridge (the callback's inputs and uploads; no image is pulled once warm), for a
#     run of COST_N packages, on the swarm and, for reference, locally; and the CPU per second
#     a build's job costs while it exists (16 packages at once whose %build sleeps BENCH_SLOW_S,
#     default 10 s, minus the same trivial).
# Usage: deploy/bench-swarm.sh [ROUNDS] [COST_N]   (defaults 3 and 32; as root: the lab's
# sockets are root's). BENCH_PERF=1 also records one more swarm cost run, and one sleeping
# build, with `perf record` and prints where the process's CPU time goes. Never stops or
# restarts the lab; brings it `up` only when it is not (idempotent).
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${1:-3}"
cost_n="${2:-32}"
parallel=4
many_n=16
slow_s=${BENCH_SLOW_S:-10}
. deploy/bench-lib.sh
phase() { echo "== $*" >&2; }

swarm_lab

phase "cargo build --release"
cargo build --release --quiet
bin=$PWD/target/release/packetary

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
spec() { trivial_spec "$work/$1/$2.spec" "$2" "${3:-true}"; } # spec DIR NAME [%build's body]
spec one/p1 p1
for i in $(seq "$many_n"); do spec "many/p$i" "p$i"; done
for i in $(seq "$cost_n"); do spec "cost/p$i" "p$i"; done
for i in $(seq "$many_n"); do spec "slow/p$i" "p$i" "sleep $slow_s"; done

port=$(python3 -c "import socket; s=socket.socket(); s.bind(('$PACKETARY_SWARM_CALLBACK_HOST', 0)); print(s.getsockname()[1])")
target='[targets.bookworm-rpmbuild]
backend = "rpmbuild"
image = "packetary/rpmbuild:bookworm"
arch = "x86_64"'
cat > "$work/local.toml" <<EOF
[build]
parallel = $parallel

$target
EOF
cat > "$work/swarm.toml" <<EOF
[build]
parallel = $parallel

[server]
listen = "$PACKETARY_SWARM_CALLBACK_HOST:$port"

[executor]
kind = "swarm"
callback_url = "http://$PACKETARY_SWARM_CALLBACK_HOST:$port"
registry = "$PACKETARY_SWARM_REGISTRY"
manager = "$PACKETARY_SWARM_MANAGER"

$target
EOF
# All of the slow set at once (figure 3's cost per second a build runs).
for k in local swarm; do sed "s/^parallel = .*/parallel = $many_n/" "$work/$k.toml" > "$work/$k-all.toml"; done

phase "images push (the builder image into the lab's registry)"
pinned=$("$bin" --config "$work/swarm.toml" images push | sed -n 's/.* -> //p' | head -1)
[ -n "$pinned" ] || { echo "bench-swarm: images push named no pinned image" >&2; exit 1; }
echo "builder image: $pinned" >&2

# build KIND DIR OUT: one `packetary build`; fails the benchmark if a build fails.
build() {
  rm -rf "$3"
  if ! "$bin" --config "$work/$1.toml" build "$work/$2" --out "$3" >"$work/last.log" 2>&1; then
    echo "bench-swarm: $1 build of $2 failed:" >&2
    tail -30 "$work/last.log" >&2
    exit 1
  fi
}

phase "warm-up: one round of each; the image on both nodes"
build local many "$work/out-l"
build swarm many "$work/out-s"
for node in "$PACKETARY_SWARM_MANAGER" "$PACKETARY_SWARM_WORKER"; do
  if ! DOCKER_HOST=$node docker image inspect "$pinned" >/dev/null 2>&1; then
    echo "pulling $pinned on $node" >&2
    DOCKER_HOST=$node docker pull -q "$pinned" >/dev/null
  fi
done
build local one "$work/out-l1"
build swarm one "$work/out-s1"

# spans OUT [EVENTS]: each build's span in ms (first phase's start to the last phase's end,
# from logs/build.json), one a line. With EVENTS (the nodes' `create`/`start` events of the
# build's container, "TIMENANO ACTION" lines), the swarm's stretches instead: job created ->
# container created on its node (scheduling, dispatch) -> started -> driver's first phase
# read through the manager (agent's input fetch, unpacking) and driver's end -> collect
# (the agent's upload, its exit marker through the manager's logs).
spans() {
  python3 - "$1" "${2:-}" <<'PY'
import json, sys, pathlib, datetime
def t(s): return datetime.datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()
ev = {}
if sys.argv[2]:
    for line in open(sys.argv[2]):
        n, a = line.split()
        ev.setdefault(a, int(n) / 1e9)
for f in sorted(pathlib.Path(sys.argv[1]).glob("*/*/logs/build.json")):
    p = json.loads(f.read_text())["phases"]
    start = t(p[0]["started"]); end = t(p[-1]["started"]) + p[-1]["seconds"]
    if not sys.argv[2]:
        print(round((end - start) * 1000))
        continue
    ms = lambda a, b: round((b - a) * 1000)
    created = t(p[0]["started"]) + p[0]["seconds"]
    driven = t(p[-2]["started"]) + p[-2]["seconds"]
    print(ms(created, ev["create"]), ms(ev["create"], ev["start"]), ms(ev["start"], t(p[1]["started"])),
          ms(driven, t(p[-1]["started"])))
PY
}

# events OUT SINCE: the `create` and `start` events of OUT's build's container on both nodes.
events() {
  local id node until
  id=$(python3 -c 'import json, glob, sys; print(json.load(open(glob.glob(sys.argv[1] + "/*/*/logs/build.json")[0]))["id"])' "$1")
  until=$(date +%s.%N)
  for node in "$PACKETARY_SWARM_MANAGER" "$PACKETARY_SWARM_WORKER"; do
    DOCKER_HOST=$node docker events --since "$2" --until "$until" --filter type=container \
      --filter "label=org.packetary.build-id=$id" --format '{{.TimeNano}} {{.Action}}'
  done | grep -E ' (create|start)$' | sort -n
}

# busy: the machine's CPU time in ms so far, every process's (/proc/stat, all but idle and
# iowait): what a run cost the whole machine, the lab's daemons included, and anyone else's.
busy() { awk -v hz="$(getconf CLK_TCK)" '/^cpu /{printf "%d\n", ($2+$3+$4+$7+$8+$9) * 1000 / hz}' /proc/stat; }
phase "figure 1: $many_n packages, parallel $parallel, $rounds rounds"
: > "$work/t-ml"; : > "$work/t-ms"; : > "$work/b-ml"; : > "$work/b-ms"
for r in $(seq "$rounds"); do
  c0=$(busy); a=$(time_it build local many "$work/out-l"); c1=$(busy); echo "$a" >> "$work/t-ml"; echo $((c1 - c0)) >> "$work/b-ml"
  b=$(time_it build swarm many "$work/out-s"); c2=$(busy); echo "$b" >> "$work/t-ms"; echo $((c2 - c1)) >> "$work/b-ms"
  echo "round $r: local $a ms (machine CPU $((c1 - c0)) ms), swarm $b ms (machine CPU $((c2 - c1)) ms) (load $(cut -d' ' -f1 /proc/loadavg))" >&2
done
ml=$(median < "$work/t-ml"); ms=$(median < "$work/t-ms")
bl=$(median < "$work/b-ml"); bs=$(median < "$work/b-ms")

phase "figure 2: one package, $((rounds * 3)) rounds"
: > "$work/t-1l"; : > "$work/t-1s"; : > "$work/s-1l"; : > "$work/s-1s"; : > "$work/g-1s"
for r in $(seq $((rounds * 3))); do
  a=$(time_it build local one "$work/out-l1"); echo "$a" >> "$work/t-1l"; spans "$work/out-l1" >> "$work/s-1l"
  since=$(date +%s.%N)
  b=$(time_it build swarm one "$work/out-s1"); echo "$b" >> "$work/t-1s"; spans "$work/out-s1" >> "$work/s-1s"
  events "$work/out-s1" "$since" > "$work/events"
  spans "$work/out-s1" "$work/events" >> "$work/g-1s"
  echo "round $r: local $a ms (span $(tail -1 "$work/s-1l")), swarm $b ms (span $(tail -1 "$work/s-1s"); job->create, create->start, start->srpm, driver end->collect: $(tail -1 "$work/g-1s") ms)" >&2
done
l1=$(median < "$work/t-1l"); s1=$(median < "$work/t-1s")
sl1=$(median < "$work/s-1l"); ss1=$(median < "$work/s-1s")
g=(); for i in 1 2 3 4; do g+=("$(cut -d' ' -f$i "$work/g-1s" | median)"); done

phase "figure 3: the process's CPU and the bytes moved, $cost_n packages"
# cost KIND [DIR [WRAPPER...]]: "user sys wall_s rx tx" of one `packetary build` of DIR (the
# cost set); rx/tx are the host side of the lab's bridge (bytes the nodes sent to the host /
# the host sent to them).
# rusage FILE CMD...: runs CMD, writes "user sys wall" seconds (its rusage, to the µs) to FILE.
rusage() {
  python3 - "$@" <<'PY'
import resource, subprocess, sys, time
t = time.monotonic()
rc = subprocess.call(sys.argv[2:])
r = resource.getrusage(resource.RUSAGE_CHILDREN)
open(sys.argv[1], "w").write("%.6f %.6f %.3f\n" % (r.ru_utime, r.ru_stime, time.monotonic() - t))
sys.exit(rc)
PY
}
cost() {
  local kind=$1 dir=${2:-cost} rx0 tx0 rx1 tx1 res
  shift; shift || true
  rx0=$(cat /sys/class/net/pkslab-br/statistics/rx_bytes); tx0=$(cat /sys/class/net/pkslab-br/statistics/tx_bytes)
  rm -rf "$work/out-c"
  rusage "$work/rusage" "$@" \
    "$bin" --config "$work/$kind.toml" build "$work/$dir" --out "$work/out-c" >"$work/last.log" 2>&1 ||
    { tail -30 "$work/last.log" >&2; exit 1; }
  rx1=$(cat /sys/class/net/pkslab-br/statistics/rx_bytes); tx1=$(cat /sys/class/net/pkslab-br/statistics/tx_bytes)
  res=$(cat "$work/rusage")
  echo "$res $((rx1 - rx0)) $((tx1 - tx0))"
}
: > "$work/c-l"; : > "$work/c-s"
for r in $(seq "$rounds"); do
  cost local >> "$work/c-l"
  cost swarm >> "$work/c-s"
  echo "round $r: local user sys wall rx tx: $(tail -1 "$work/c-l"); swarm: $(tail -1 "$work/c-s")" >&2
done
cpu() { awk -v n="${2:-$cost_n}" '{printf "%.1f\n", ($1 + $2) * 1000 / n}' "$1" | median; }
cl=$(cpu "$work/c-l"); cs=$(cpu "$work/c-s")
# What the packages weigh (the upload is a tar of the task's /out: them and the backend's logs).
rpmb=$(find "$work/out-c" -name '*.rpm' -printf '%s\n' | awk -v n="$cost_n" '{s+=$1} END{printf "%d", s/n}')
# What a running build costs the process per second its job or container exists (the swarm
# executor polls its task every 500 ms): the $many_n packages at once, each %build sleeping
# $slow_s s, minus the same packages trivial; divided by the difference of their spans' sum
# (build.json), which counts a job waiting for a node's room too.
: > "$work/w-l"; : > "$work/w-s"; : > "$work/o-l"; : > "$work/o-s"
sumspan() { spans "$work/out-c" | awk '{s+=$1} END{print s}'; }
for r in $(seq "$rounds"); do
  for k in local swarm; do
    c=$(cost "$k-all" many); echo "$c $(sumspan)" >> "$work/o-${k:0:1}"
    c=$(cost "$k-all" slow); echo "$c $(sumspan)" >> "$work/w-${k:0:1}"
  done
  echo "round $r: $many_n packages at once, CPU s (user sys wall rx tx span-sum-ms) trivial / sleeping $slow_s s: local $(tail -1 "$work/o-l") / $(tail -1 "$work/w-l"); swarm $(tail -1 "$work/o-s") / $(tail -1 "$work/w-s")" >&2
done
# per_s TRIVIAL SLOW: the median over rounds of (CPU ms difference) / (span-sum s difference).
per_s() { paste -d' ' "$1" "$2" | awk '{printf "%.2f\n", (($7 + $8) - ($1 + $2)) * 1000 / (($12 - $6) / 1000)}' | median; }
rxs=$(awk -v n="$cost_n" '{printf "%d\n", $4 / n}' "$work/c-s" | median)
txs=$(awk -v n="$cost_n" '{printf "%d\n", $5 / n}' "$work/c-s" | median)

if [ "${BENCH_PERF:-}" = 1 ]; then
  phase "where the swarm process's CPU goes (one more swarm cost run under perf record)"
  cost swarm cost perf record -q -F 1999 -o "$work/perf.data" -- > /dev/null
  perf report -q -i "$work/perf.data" --no-children --sort comm --percent-limit 1 2>/dev/null | head -20
  perf report -q -i "$work/perf.data" --no-children --sort dso --percent-limit 1 2>/dev/null | head -20
  perf report -q -i "$work/perf.data" --no-children --sort sym --percent-limit 0.7 2>/dev/null | head -60
  phase "where waiting swarm builds' CPU goes ($many_n packages sleeping $slow_s s, under perf record)"
  cost swarm-all slow perf record -q -F 1999 -o "$work/perf-slow.data" -- > /dev/null
  perf report -q -i "$work/perf-slow.data" --no-children --sort comm --percent-limit 1 2>/dev/null | head -20
  perf report -q -i "$work/perf-slow.data" --no-children --sort sym --percent-limit 1 2>/dev/null | head -40
fi

echo
echo "| figure | local | swarm | ratio / difference |"
echo "| --- | --- | --- | --- |"
echo "| $many_n packages, parallel $parallel, wall (median of $rounds) | $ml ms | $ms ms | $(ratio "$ms" "$ml")x |"
echo "| the same runs: the machine's CPU time (every process, /proc/stat) per build | $((bl / many_n)) ms | $((bs / many_n)) ms | $(ratio "$bs" "$bl")x |"
echo "| 1 package, wall of the command (median of $((rounds * 3))) | $l1 ms | $s1 ms | +$((s1 - l1)) ms |"
echo "| 1 package, build span (build.json: prepare start to collect end) | $sl1 ms | $ss1 ms | +$((ss1 - sl1)) ms |"
echo "| swarm, medians: job created -> container created on a node -> started -> driver's first phase read; driver's end -> collect | - | ${g[0]} + ${g[1]} + ${g[2]} ms; ${g[3]} ms | - |"
echo "| process CPU per build, $cost_n packages (median of $rounds) | $cl ms | $cs ms | $(ratio "$cs" "$cl")x |"
echo "| bytes per build, nodes -> host / host -> nodes (lab bridge) | - | $rxs / $txs | the two RPMs: $rpmb bytes per build |"
echo "| process CPU per second a build's job/container exists ($many_n at once, %build sleeping $slow_s s vs trivial; median of $rounds) | $(per_s "$work/o-l" "$work/w-l") ms | $(per_s "$work/o-s" "$work/w-s") ms | - |"
echo "| builds per minute one core drives (60 s / CPU per build) | $(awk -v c="$cl" 'BEGIN{printf "%d", 60000/c}') | $(awk -v c="$cs" 'BEGIN{printf "%d", 60000/c}') | goal >= 600 |"
