# Shell helpers shared by the deploy/bench-*.sh scripts: source it, don't run it.
# now: nanoseconds; median: of the numbers on stdin; ratio A B: A/B to 3 places;
# time_it CMD...: runs CMD and prints its wall time in ms; trivial_spec FILE NAME [BUILD]:
# writes a trivial noarch spec; swarm_lab: the lab of deploy/swarm-lab.sh, up.
now() { date +%s%N; }
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.3f", a/b}'; }
time_it() { local s e; s=$(now); "$@"; e=$(now); echo $(( (e - s) / 1000000 )); }
# trivial_spec FILE NAME [BUILD]: a trivial noarch spec of package NAME at FILE (its
# directory made), with BUILD as its %build when given.
trivial_spec() {
  mkdir -p "$(dirname "$1")"
  {
    printf 'Name: %s\nVersion: 1.0\nRelease: 1\nSummary: trivial\nLicense: MIT\nBuildArch: noarch\n%%description\ntrivial\n' "$2"
    [ -z "${3:-}" ] || printf '%%build\n%s\n' "$3"
    printf '%%install\nmkdir -p %%{buildroot}/usr/share/%s && echo %s > %%{buildroot}/usr/share/%s/f\n%%files\n/usr/share/%s/f\n' "$2" "$2" "$2" "$2"
  } > "$1"
}
# swarm_lab: brings the two-node lab of deploy/swarm-lab.sh up unless it is (never down),
# and sets its PACKETARY_SWARM_* variables.
swarm_lab() {
  local env=${PACKETARY_SWARM_LAB_DIR:-/var/tmp/packetary-swarm-lab}/env v
  if ! deploy/swarm-lab.sh status >/dev/null 2>&1 || [ ! -f "$env" ]; then
    echo "== the lab is not up: deploy/swarm-lab.sh up" >&2
    deploy/swarm-lab.sh up
  fi
  # shellcheck disable=SC1090 # written by swarm-lab.sh up
  . "$env"
  for v in PACKETARY_SWARM_MANAGER PACKETARY_SWARM_WORKER PACKETARY_SWARM_REGISTRY PACKETARY_SWARM_CALLBACK_HOST; do
    [ -n "${!v:-}" ] || { echo "$v is not set by $env" >&2; return 2; }
  done
}
