#!/usr/bin/env bash
# Benchmarks of `packetary build` (issue 2's figures), measured side by side in one run:
#  1. overhead: `packetary build` of a trivial noarch spec vs. the bare minimum for the same
#     work, a `docker run` of the same image doing the same two rpmbuild steps by hand;
#  2. parallelism: 8 independent trivial packages with -j 2 vs. one at a time (-j 1).
# Usage: deploy/bench-build.sh [ROUNDS]   (default 10; needs Docker and the rpmbuild image)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${1:-10}"
image=packetary/rpmbuild:bookworm
cargo build --release --quiet
bin=target/release/packetary
$bin images ensure >/dev/null 2>&1

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
. "$(dirname "$0")/bench-lib.sh"
spec() { trivial_spec "$work/$1/$2.spec" "$2"; } # spec DIR NAME
spec trivial trivial
mkdir -p "$work/many"
for i in 1 2 3 4 5 6 7 8; do spec "many/p$i" "p$i"; done


# The bare minimum: one `docker run` doing the two rpmbuild steps by hand.
# bare SPECDIR NAME OUTDIR
bare() {
  rm -rf "$3"; mkdir -p "$3"
  docker run --rm --network none --hostname packetary -e OMP_WAIT_POLICY=PASSIVE \
    -v "$1:/src:ro" -v "$3:/out" "$image" bash -c "
    set -e
    rpmbuild -bs --define '_topdir /tmp/b' --define '_sourcedir /src' --define '_srcrpmdir /out' /src/$2.spec >/dev/null 2>&1
    rpmbuild --rebuild --define '_topdir /tmp/b' --define '_rpmdir /out' /out/*.src.rpm >/dev/null 2>&1
    ls /out/noarch/*.rpm >/dev/null"
}
baseline() { bare "$work/trivial" trivial "$work/base-out"; }
ours() {
  rm -rf "$work/ours-out"
  $bin build "$work/trivial" --out "$work/ours-out" >/dev/null 2>&1
}

# Warm up both paths once (page cache, image layers).
baseline; ours
: > "$work/t-base"; : > "$work/t-ours"
for _ in $(seq "$rounds"); do
  s=$(now); baseline; e=$(now); echo $(( (e - s) / 1000000 )) >> "$work/t-base"
  s=$(now); ours;     e=$(now); echo $(( (e - s) / 1000000 )) >> "$work/t-ours"
done
b=$(median < "$work/t-base"); o=$(median < "$work/t-ours")
echo "overhead: docker run baseline median ${b} ms, packetary build median ${o} ms, ratio $(awk -v o="$o" -v b="$b" 'BEGIN{printf "%.3f", o/b}') (target <= 1.05) over $rounds rounds"

par() {
  rm -rf "$work/par-out"
  $bin build "$work/many" --out "$work/par-out" -j "$1" >/dev/null 2>&1
}
# The same 8 packages built by bare `docker run`s, one at a time and in two streams: what
# this machine allows any Docker-based tool, measured in the same run.
bare_par() {
  if [ "$1" = 1 ]; then
    for i in 1 2 3 4 5 6 7 8; do bare "$work/many/p$i" "p$i" "$work/bare-$i"; done
  else
    (for i in 1 2 3 4; do bare "$work/many/p$i" "p$i" "$work/bare-$i"; done) &
    for i in 5 6 7 8; do bare "$work/many/p$i" "p$i" "$work/bare-$i"; done
    wait
  fi
}
par 2; bare_par 2
: > "$work/t-j1"; : > "$work/t-j2"; : > "$work/t-b1"; : > "$work/t-b2"
for _ in $(seq "$rounds"); do
  s=$(now); par 1; e=$(now); echo $(( (e - s) / 1000000 )) >> "$work/t-j1"
  s=$(now); par 2; e=$(now); echo $(( (e - s) / 1000000 )) >> "$work/t-j2"
  s=$(now); bare_par 1; e=$(now); echo $(( (e - s) / 1000000 )) >> "$work/t-b1"
  s=$(now); bare_par 2; e=$(now); echo $(( (e - s) / 1000000 )) >> "$work/t-b2"
done
j1=$(median < "$work/t-j1"); j2=$(median < "$work/t-j2")
b1=$(median < "$work/t-b1"); b2=$(median < "$work/t-b2")
echo "parallel: 8 packages -j1 median ${j1} ms, -j2 median ${j2} ms, ratio $(ratio "$j2" "$j1") (target <= 0.6) over $rounds rounds"
echo "parallel reference: bare docker run, one at a time ${b1} ms, two streams ${b2} ms, ratio $(ratio "$b2" "$b1")"
