#!/usr/bin/env bash
# Figure for the default target (issue 13): how many of a set of ordinary, small,
# Fedora-style specs (deploy/default-target-specs/, unedited between runs) build on
# `bookworm-rpmbuild`, with the upstream tarballs of the same versions taken from
# Debian's mirror (`*.orig.tar.*` of bookworm). Downloads ~7 MB of tarballs and, on the
# first run, the Debian packages their BuildRequires name. Not part of the CI suite.
#
#   deploy/default-target-specs.sh [LABEL] [packetary build options...]
#
# PACKETARY (default target/debug/packetary) picks the binary, e.g. an older build to
# compare with; WORK (default /tmp/packetary-default-target-specs) holds tarballs,
# packages and results; JOBS (default 2) builds at once.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
bin=${PACKETARY:-$here/../target/debug/packetary}
work=${WORK:-/tmp/packetary-default-target-specs}
mirror=${MIRROR:-http://deb.debian.org/debian}
label=${1:-run}
shift || true

# name, tarball in Debian's pool, the file name the spec's Source0 gives
set_list=(
  "bc       b/bc/bc_1.07.1.orig.tar.gz               bc-1.07.1.tar.gz"
  "cmatrix  c/cmatrix/cmatrix_2.0.orig.tar.gz        cmatrix-2.0.tar.gz"
  "crunch   c/crunch/crunch_3.6.orig.tar.gz          crunch-3.6.tgz"
  "dos2unix d/dos2unix/dos2unix_7.4.3.orig.tar.gz    dos2unix-7.4.3.tar.gz"
  "figlet   f/figlet/figlet_2.2.5.orig.tar.gz        figlet-2.2.5.tar.gz"
  "hello    h/hello/hello_2.10.orig.tar.gz           hello-2.10.tar.gz"
  "htop     h/htop/htop_3.2.2.orig.tar.gz            htop-3.2.2.tar.gz"
  "jq       j/jq/jq_1.6.orig.tar.gz                  jq-1.6.tar.gz"
  "nano     n/nano/nano_7.2.orig.tar.xz              nano-7.2.tar.xz"
  "pv       p/pv/pv_1.6.20.orig.tar.bz2              pv-1.6.20.tar.bz2"
  "sl       s/sl/sl_5.02.orig.tar.gz                 sl-5.02.tar.gz"
  "tree     t/tree/tree_2.1.0.orig.tar.gz            tree-2.1.0.tgz"
  "units    u/units/units_2.22.orig.tar.gz           units-2.22.tar.gz"
)

mkdir -p "$work/dl"
rm -rf "$work/pkgs" "$work/out-$label"
for line in "${set_list[@]}"; do
  read -r name pool file <<<"$line"
  [ -s "$work/dl/${pool##*/}" ] || curl -sSf -o "$work/dl/${pool##*/}" "$mirror/pool/main/$pool"
  mkdir -p "$work/pkgs/$name"
  cp "$here/default-target-specs/$name.spec" "$work/pkgs/$name/"
  cp "$work/dl/${pool##*/}" "$work/pkgs/$name/$file"
done

start=$(date +%s)
"$bin" build "$work/pkgs" --out "$work/out-$label" -j "${JOBS:-2}" "$@" > "$work/$label.txt" 2>&1 || true
end=$(date +%s)
grep -E '^(ok|FAILED) ' "$work/$label.txt" | sort -k2 || true
ok=$(grep -c '^ok ' "$work/$label.txt" || true)
echo "$label: $ok of ${#set_list[@]} built in $((end - start))s (results in $work/out-$label)"
