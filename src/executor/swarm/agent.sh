# Packetary's agent: the main process (PID 1) of a build's Swarm task (executor::swarm).
# It fetches the build's inputs from the service, switches the network off for spec code
# (where the target gates it), runs the driver with no way to get more privileges, and
# uploads /out when the driver has ended. Its own messages start with "packetary: ".
# $1: the driver script. Environment (root's only, unset before the driver runs):
# PACKETARY_TASK_URL, PACKETARY_TASK_TOKEN, PACKETARY_TASK_EXIT (the exit marker, a secret:
# spec code reads the driver's command line), PACKETARY_GATE (1: only the dependency phase
# may have the network), PACKETARY_PRIVATE_CGROUPNS (1: refuse to run unless the task's
# cgroup namespace is private: a target whose tool keeps SYS_ADMIN, Mock's).
set -u
exec 2>&1
url=$PACKETARY_TASK_URL tok=$PACKETARY_TASK_TOKEN mark=$PACKETARY_TASK_EXIT
gate=${PACKETARY_GATE:-} private_cgroupns=${PACKETARY_PRIVATE_CGROUPNS:-}
unset PACKETARY_TASK_URL PACKETARY_TASK_TOKEN PACKETARY_TASK_EXIT PACKETARY_GATE PACKETARY_PRIVATE_CGROUPNS
driver=$1
say() { echo "packetary: $*"; }
say "task on node ${PACKETARY_NODE:-unknown}"
unset PACKETARY_NODE
# The agent's own failure: not the package's (the image, the node, the service's reach).
# Its marker's code is -1 (AGENT_FAULT in mod.rs): a word there would read as exit status 1,
# the package's failure.
fault() { say "$*"; echo "$mark -1"; exit 97; }

command -v python3 >/dev/null 2>&1 || fault "the image has no python3, with which the build's task fetches its inputs and uploads its results: install it in the image"
command -v setpriv >/dev/null 2>&1 || fault "the image has no setpriv (util-linux): install it in the image"
if [ -n "$private_cgroupns" ]; then
  # In a private cgroup namespace the task's own cgroup is its root: "0::/" or "N:ctrl:/".
  while IFS=: read -r _ _ path; do
    [ "$path" = / ] || fault "this node runs containers in the host's cgroup namespace, where Mock's SYS_ADMIN could reach the host's cgroups: start its dockerd with --default-cgroupns-mode=private (daemon.json \"default-cgroupns-mode\": \"private\")"
  done < /proc/self/cgroup
fi

# get|put URL FILE, with the task's token, a few tries for a service that restarts.
http() {
  PACKETARY_T=$tok python3 - "$@" <<'PY'
import os, sys, time, shutil, urllib.request, urllib.error
verb, url, path = sys.argv[1:4]
headers = {"Authorization": "Bearer " + os.environ.pop("PACKETARY_T")}
for attempt in range(8):
    try:
        if verb == "get":
            with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=120) as r, open(path, "wb") as f:
                shutil.copyfileobj(r, f, 1 << 20)
        else:
            with open(path, "rb") as f:
                h = dict(headers, **{"Content-Length": str(os.path.getsize(path)), "Content-Type": "application/x-tar"})
                with urllib.request.urlopen(urllib.request.Request(url, data=f, method="PUT", headers=h), timeout=600) as r:
                    r.read(1 << 16)
        sys.exit(0)
    except urllib.error.HTTPError as e:
        body = e.read(300).decode("utf-8", "replace").strip().splitlines()
        print("packetary: %s %s: HTTP %d: %s" % (verb, url, e.code, body[0] if body else ""), flush=True)
        # Refusals of what was sent are final; an unknown build or token (401, 404) may be
        # a service that restarts and has not picked its builds up again yet.
        if e.code in (400, 409, 410, 411, 413):
            sys.exit(1)
    except Exception as e:
        print("packetary: %s %s: %s" % (verb, url, e), flush=True)
    time.sleep(min(2 ** attempt, 10))
sys.exit(1)
PY
}

work=$(mktemp -d) || fault "cannot make a temporary directory"
http get "$url/inputs" "$work/in.tar" || fault "cannot fetch the build's inputs from $url/inputs: check [executor] callback_url reaches the service from this node"
tar -x -p -C / -f "$work/in.tar" || fault "cannot unpack the build's inputs"
rm -f "$work/in.tar"

links() { local i; for i in /sys/class/net/*; do [ "${i##*/}" = lo ] || ip link set dev "${i##*/}" "$1" || return 1; done; }
any_up() { local i; for i in /sys/class/net/*; do [ "${i##*/}" = lo ] && continue; (( $(<"$i/flags") & 1 )) && return 0; done; return 1; }
net_off() { links down && ! any_up; }
net_on() {
  links up || return 1
  local r
  while IFS= read -r r; do [ -z "$r" ] || ip -4 route replace $r || return 1; done <<<"$routes"
}
# The gate: the network once, on request, between the driver's `deps` and `end` (or the
# phase's own `off`), never again after. Only root writes the FIFO; root code of the
# dependency phase runs without NET_ADMIN (the driver's bounding set), so it cannot raise
# a link itself, and a request after the phase is ignored.
listen() {
  local state=before msg
  exec 3<>/run/packetary/net
  while IFS= read -r msg <&3; do
    case "$state/$msg" in
      before/deps) state=deps ;;
      deps/on) state=given; if net_on; then say "network given to the dependency phase"; else say "the network could not be given"; fi ;;
      deps/end|given/end|deps/off|given/off)
        [ "$state" = given ] && say "network taken away"
        state=closed; net_off || say "the network could not be switched off" ;;
    esac
  done
}
bounding=
if [ -n "$gate" ]; then
  command -v ip >/dev/null 2>&1 || fault "the image has no ip (iproute2), with which the build's network is switched off for spec code: install it in the image"
  routes=$(ip -4 route show default) || fault "cannot read the task's routes"
  mkdir -p -m 700 /run/packetary && mkfifo -m 600 /run/packetary/net || fault "cannot make the network gate's FIFO"
  net_off || fault "cannot switch the task's network off (does the task have NET_ADMIN?)"
  listen &
  bounding=--bounding-set=-net_admin
fi

# The driver and everything it starts: no new privileges (Swarm on API 1.41 cannot set
# no-new-privileges), no inheritable capabilities, and no NET_ADMIN where the gate is on.
setpriv --no-new-privs --inh-caps=-all $bounding -- bash -c "$driver"
rc=$?
# Nothing the build started lives on, nor gets the network for the upload.
kill -KILL -1 2>/dev/null
wait 2>/dev/null
if [ -n "$gate" ]; then net_on || say "cannot switch the network on for the upload"; fi
if tar -C / -cf "$work/out.tar" out; then
  http put "$url/results" "$work/out.tar" || say "the results could not be uploaded"
else
  say "cannot pack /out"
fi
echo "$mark $rc"
exit "$rc"
