#!/usr/bin/env bash
# A/B of the per-build cost of two packetary binaries (e.g. before and after a change),
# rounds interleaved in one run: `packetary build` of a trivial noarch spec, median wall
# time of each.
#   A=/path/to/old A_ARGS="--config old.toml" B=target/debug/packetary deploy/bench-ab.sh [ROUNDS]
set -euo pipefail
rounds=${1:-10}
a=${A:?A=binary}; b=${B:-target/debug/packetary}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
. "$(dirname "$0")/bench-lib.sh"
trivial_spec "$work/trivial/trivial.spec" trivial
# shellcheck disable=SC2086
one() { rm -rf "$work/out"; "$1" build "$work/trivial" --out "$work/out" $2 >/dev/null 2>&1; }
one "$a" "${A_ARGS:-}"; one "$b" "${B_ARGS:-}"
: > "$work/ta"; : > "$work/tb"
for _ in $(seq "$rounds"); do
  s=$(now); one "$a" "${A_ARGS:-}"; e=$(now); echo $(( (e - s) / 1000000 )) >> "$work/ta"
  s=$(now); one "$b" "${B_ARGS:-}"; e=$(now); echo $(( (e - s) / 1000000 )) >> "$work/tb"
done
ma=$(median < "$work/ta"); mb=$(median < "$work/tb")
echo "A median ${ma} ms, B median ${mb} ms, B/A $(awk -v a="$ma" -v b="$mb" 'BEGIN{printf "%.3f", b/a}') over $rounds rounds"
