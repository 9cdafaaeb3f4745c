#!/usr/bin/env bash
# Publishing one package into a release repository that already holds N packages
# (default 5,000), against a full createrepo_c of the same N+1 packages.
#
#   deploy/bench-publish.sh [N] [ROUNDS]
#
# The N small RPMs (one spec with N subpackages, built once with rpmbuild in the builder
# image) and ROUNDS extra packages are cached under target/bench-publish/. Each round
# publishes one new package with `packetary publish` (createrepo_c --update against the
# previous snapshot, in a container); the baseline runs createrepo_c from scratch over
# the same N+1 packages in the same image, with and without its sqlite databases.
# PACKETARY=<binary> picks the binary (default target/debug/packetary).
set -euo pipefail
N=${1:-5000}
ROUNDS=${2:-5}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${PACKETARY:-$ROOT/target/debug/packetary}
IMAGE=packetary/rpmbuild:bookworm
CACHE=$ROOT/target/bench-publish/rpms-$N
TARGET=bookworm-rpmbuild

if [ ! -f "$CACHE/.done" ]; then
    rm -rf "$CACHE"
    mkdir -p "$CACHE/new"
    {
        printf 'Name: bench\nVersion: 1\nRelease: 1\nSummary: b\nLicense: MIT\nBuildArch: noarch\nAutoReqProv: no\n'
        printf '%%define __os_install_post %%{nil}\n%%define _build_id_links none\n'
        printf '%%description\nb\n%%install\nfor i in $(seq 1 %d); do mkdir -p %%{buildroot}/usr/share/bench/p$i; echo $i > %%{buildroot}/usr/share/bench/p$i/f; done\n' "$N"
        printf '%%files\n'
        for i in $(seq 1 "$N"); do
            printf '%%package p%d\nSummary: b\nAutoReqProv: no\n%%description p%d\nb\n%%files p%d\n/usr/share/bench/p%d/f\n' "$i" "$i" "$i" "$i"
        done
    } >"$CACHE/many.spec"
    for r in $(seq 1 "$ROUNDS"); do
        printf 'Name: bench-new%d\nVersion: 1\nRelease: 1\nSummary: b\nLicense: MIT\nBuildArch: noarch\n%%description\nb\n%%install\nmkdir -p %%{buildroot}/usr/share/bench-new%d\necho %d > %%{buildroot}/usr/share/bench-new%d/f\n%%files\n/usr/share/bench-new%d/f\n' \
            "$r" "$r" "$r" "$r" "$r" >"$CACHE/new$r.spec"
    done
    echo "generating $N packages (once; cached in $CACHE)..." >&2
    start=$(date +%s)
    docker run --rm --network none -v "$CACHE:/out" "$IMAGE" sh -c '
        set -e
        rpmbuild -bb --quiet --define "_topdir /tmp/t" /out/many.spec >/dev/null
        mv /tmp/t/RPMS/noarch/*.rpm /out/
        for s in /out/new*.spec; do rpmbuild -bb --quiet --define "_topdir /tmp/n" "$s" >/dev/null; done
        mv /tmp/n/RPMS/noarch/*.rpm /out/new/
        chown -R '"$(id -u):$(id -g)"' /out'
    echo "generated in $(( $(date +%s) - start )) s" >&2
    touch "$CACHE/.done"
fi
count=$(find "$CACHE" -maxdepth 1 -name '*.rpm' | wc -l)

WORK=$(mktemp -d /tmp/bench-publish.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
cat >"$WORK/packetary.toml" <<EOF
[releases.bench]
branches = ["main"]
targets = ["$TARGET"]
EOF
ms() { local s e; s=$(date +%s%N); "$@" >/dev/null; e=$(date +%s%N); echo $(( (e - s) / 1000000 )); }
publish() { "$BIN" --config "$WORK/packetary.toml" publish bench "$TARGET" --data-dir "$WORK/data" "$@"; }
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

initial=$(ms publish "$CACHE")
echo "first publication of $count packages: $initial ms"
rounds=()
for f in "$CACHE"/new/*.rpm; do
    t=$(ms publish "$f")
    rounds+=("$t")
    echo "publish one package into $count+: $t ms"
    count=$((count + 1))
done
one=$(printf '%s\n' "${rounds[@]}" | median)

# Baseline: createrepo_c from scratch over the same packages the latest snapshot holds.
latest=$WORK/data/repos/bench/$TARGET/latest
mkdir "$WORK/full"
find "$latest/" -maxdepth 1 -name '*.rpm' -exec ln {} "$WORK/full/" \;
full_nodb=()
full=()
for _ in 1 2 3; do
    rm -rf "$WORK/full/repodata"
    full_nodb+=("$(ms docker run --rm --network none -v "$WORK/full:/repo" "$IMAGE" createrepo_c --quiet --no-database /repo)")
    rm -rf "$WORK/full/repodata"
    full+=("$(ms docker run --rm --network none -v "$WORK/full:/repo" "$IMAGE" createrepo_c --quiet /repo)")
done
fn=$(printf '%s\n' "${full_nodb[@]}" | median)
fd=$(printf '%s\n' "${full[@]}" | median)
n=$(find "$WORK/full" -maxdepth 1 -name '*.rpm' | wc -l)
echo
echo "| figure | result |"
echo "| --- | --- |"
echo "| publish one package into a repository of $((n - 1)) (median of ${#rounds[@]}) | $one ms |"
echo "| full createrepo_c of the same $n packages, --no-database (median of 3) | $fn ms |"
echo "| full createrepo_c of the same $n packages, defaults (median of 3) | $fd ms |"
echo "| first publication of the $((n - ${#rounds[@]})) packages | $initial ms |"
