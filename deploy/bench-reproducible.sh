#!/usr/bin/env bash
# Figure for issue 11: the fraction of rebuilds with identical payload digests. Builds every
# package of examples/ and of the default target's spec set (deploy/default-target-specs/,
# upstream tarballs from Debian's mirror, as deploy/default-target-specs.sh takes them),
# then `packetary rebuild`s each result directory and counts the RPMs (source and binary)
# it calls identical.
#
#   deploy/bench-reproducible.sh            # examples + default-target specs
#   SPECS=0 deploy/bench-reproducible.sh    # examples only (no download)
#
# PACKETARY (default target/debug/packetary) picks the binary; WORK (default
# /tmp/packetary-bench-reproducible) holds tarballs and results; JOBS (default 2).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
bin=${PACKETARY:-$root/target/debug/packetary}
work=${WORK:-/tmp/packetary-bench-reproducible}
mkdir -p "$work"
rm -rf "$work/out" "$work/rebuild.txt"

outs=()
echo "building examples/" >&2
"$bin" build "$root/examples" --out "$work/out/examples" -j "${JOBS:-2}" > "$work/examples.txt" 2>&1 || true
outs+=("$work/out/examples")
if [ "${SPECS:-1}" = 1 ]; then
  echo "building deploy/default-target-specs (tarballs from Debian's mirror)" >&2
  # Reuse the tarballs an earlier run of default-target-specs.sh downloaded, if any.
  mkdir -p "$work/specs/dl"
  cp -n /tmp/packetary-default-target-specs/dl/* "$work/specs/dl/" 2>/dev/null || true
  WORK="$work/specs" PACKETARY="$bin" "$here/default-target-specs.sh" repro >&2 || true
  outs+=("$work/specs/out-repro")
fi

total=0; same=0; builds=0; failed_builds=0
for out in "${outs[@]}"; do
  for dir in "$out"/*/*/; do
    [ -f "$dir/logs/build.json" ] || continue
    grep -q '"state": "succeeded"' "$dir/logs/build.json" || continue
    builds=$((builds + 1))
    rc=0
    "$bin" rebuild "$dir" > "$work/one.txt" 2>&1 || rc=$?
    cat "$work/one.txt" >> "$work/rebuild.txt"
    [ "$rc" -le 1 ] || { failed_builds=$((failed_builds + 1)); echo "rebuild of $dir: exit $rc" >&2; }
    n=$(grep -cE '^(identical|differs) ' "$work/one.txt" || true)
    s=$(grep -c '^identical ' "$work/one.txt" || true)
    total=$((total + n)); same=$((same + s))
    grep -E '^(differs|input changed)' "$work/one.txt" >&2 || true
  done
done
pct=$(awk -v s="$same" -v t="$total" 'BEGIN { if (t == 0) print "n/a"; else printf "%.1f", 100 * s / t }')
echo "reproducible: $same of $total RPMs identical after rebuild ($pct %), $builds builds rebuilt, $failed_builds rebuilds could not run"
