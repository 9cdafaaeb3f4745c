#!/usr/bin/env bash
# Benchmark of the mock backend (issue 9's figures), measured side by side in one run, on the
# real Mock (packetary/mock:debian-test, see images/mock-debian-test/):
#  - `packetary build` of a trivial noarch spec for the mock target, warm (the target's
#    buildroot image exists) and cold (it is made first, as after a repository change);
#  - the baseline: a bare `docker run` of the same image doing the two Mock calls by hand,
#    as Mock users run them (`mock --buildsrpm`, then `mock --rebuild`, Mock's defaults:
#    each call makes its buildroot, root cache on), and hand-tuned (root cache off, the
#    second call reusing the first one's buildroot with --no-clean).
# Usage: deploy/bench-mock.sh [WARM_ROUNDS] [COLD_ROUNDS]   (default 5 and 3)
set -euo pipefail
cd "$(dirname "$0")/.."
warm_rounds="${1:-5}"
cold_rounds="${2:-3}"
cargo build --release --quiet
bin=target/release/packetary
$bin images ensure >/dev/null 2>&1
images/mock-debian-test/build.sh
config="$PWD/target/mock-debian-test/packetary.toml"
repo="$PWD/target/mock-debian-test/repo"
image=packetary/mock:debian-test
target=debian12-mock

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
. "$(dirname "$0")/bench-lib.sh"
mkdir -p "$work/cfg"
trivial_spec "$work/trivial/trivial.spec" trivial
# Mock's configuration for the baseline: the same buildroot, isolation and repository as
# Packetary's, Mock's defaults otherwise.
common="config_opts['root'] = 'bench'
config_opts['target_arch'] = 'x86_64'
config_opts['legal_host_arches'] = ('x86_64',)
config_opts['chroot_setup_cmd'] = 'install packetary-debian-buildroot'
config_opts['releasever'] = '12'
config_opts['package_manager'] = 'dnf'
config_opts['isolation'] = 'simple'
config_opts['use_bootstrap'] = False
config_opts['use_bootstrap_image'] = False
config_opts['dnf.conf'] = \"\"\"
[main]
reposdir=/dev/null
gpgcheck=0
assumeyes=1
install_weak_deps=0
[buildroot]
name=buildroot
baseurl=file:///repos/buildroot
\"\"\""
echo "$common" > "$work/cfg/default.cfg"
{ echo "$common"; echo "config_opts['plugin_conf']['root_cache_enable'] = False"; } > "$work/cfg/tuned.cfg"


# bare CFG SECOND_CALL_OPTS: the two Mock calls in a fresh container, as a user would.
bare() {
  docker run --rm --network none --hostname packetary \
    --cap-add SYS_ADMIN --cap-add SYS_CHROOT --cap-add MKNOD \
    --security-opt no-new-privileges --security-opt apparmor=unconfined --cgroupns private \
    -v "$work/trivial:/src:ro" -v "$repo:/repos/buildroot:ro" -v "$work/cfg:/cfg:ro" \
    "$image" bash -c "
    set -e
    export SUDO_USER=mockbuild SUDO_UID=\$(id -u mockbuild) SUDO_GID=\$(id -g mockbuild)
    install -d -o \$SUDO_UID -g \$SUDO_GID /tmp/r1 /tmp/r2
    mock -r /cfg/$1 --buildsrpm --spec /src/trivial.spec --sources /src --resultdir /tmp/r1 >/dev/null 2>&1
    mock -r /cfg/$1 $2 --rebuild /tmp/r1/trivial-1.0-1.src.rpm --resultdir /tmp/r2 >/dev/null 2>&1
    ls /tmp/r2/trivial-1.0-1.noarch.rpm >/dev/null"
}
ours() {
  rm -rf "$work/out"
  $bin --config "$config" build "$work/trivial" --out "$work/out" >/dev/null 2>&1
}
drop_warm() {
  docker images -q --filter "label=org.packetary.mockroot.target=$target" | sort -u | xargs -r docker rmi -f >/dev/null 2>&1 || true
}

# Warm up page cache and image layers once.
ours
: > "$work/t-warm"; : > "$work/t-cold"; : > "$work/t-def"; : > "$work/t-tuned"
for _ in $(seq "$warm_rounds"); do
  time_it ours >> "$work/t-warm"
done
for _ in $(seq "$cold_rounds"); do
  time_it bare default.cfg "" >> "$work/t-def"
  time_it bare tuned.cfg --no-clean >> "$work/t-tuned"
  drop_warm
  time_it ours >> "$work/t-cold"
done
w=$(median < "$work/t-warm"); c=$(median < "$work/t-cold")
d=$(median < "$work/t-def"); t=$(median < "$work/t-tuned")
echo "baseline: bare docker run of the two Mock calls, Mock's defaults, median ${d} ms; hand-tuned (no root cache, --no-clean) median ${t} ms ($cold_rounds rounds)"
echo "warm: packetary build median ${w} ms ($warm_rounds rounds): ratio $(ratio "$w" "$d") to Mock's defaults, $(ratio "$w" "$t") to hand-tuned (target <= 0.5); fixed cost of a trivial package ${w} ms (target <= 3000)"
echo "cold: packetary build (warm buildroot made first) median ${c} ms ($cold_rounds rounds): ratio $(ratio "$c" "$d") to Mock's defaults, $(ratio "$c" "$t") to hand-tuned (target <= 1.05)"
