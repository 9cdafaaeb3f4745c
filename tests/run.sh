#!/usr/bin/env bash
# The whole test suite, from a fresh machine: host setup, builder images, then cargo test.
# CI runs this through .ci/run; run it yourself the same way: `tests/run.sh`.
set -euo pipefail
cd "$(dirname "$0")/.."

# `tests/run.sh --fresh-daemon`: the same suite against a brand-new Docker daemon state
# (empty data root, a bridge interface that did not exist before), as on a new CI machine.
# Run it so before every submission.
if [ "${1:-}" = "--fresh-daemon" ]; then
  exec tests/fresh-docker.sh tests/run.sh
fi

deploy/ensure-host.sh

echo "tests/run.sh: building packetary" >&2
cargo build --quiet --all-targets

# Images are built once here, so that parallel tests don't race to build them.
target/debug/packetary images ensure
# The mock backend's test image (real Mock from ../shared/peers/mock); skipped when up to date.
images/mock-debian-test/build.sh

# The Swarm executor's tests run on a real two-node Docker Swarm of this machine
# (deploy/swarm-lab.sh): up here, its PACKETARY_SWARM_* variables exported to cargo test, and
# removed however the suite ends. One lab per machine: a second run waits for the first.
if [ "$(id -u)" -eq 0 ]; then
  lab_dir=${PACKETARY_SWARM_LAB_DIR:-/var/tmp/packetary-swarm-lab}
  exec 9>"$lab_dir.lock"
  if ! flock -n 9; then
    echo "tests/run.sh: waiting for another run's Swarm lab ($lab_dir.lock)" >&2
    flock 9
  fi
  # The lab's daemons must not hold the lock (fd 9) once this run ends.
  trap 'deploy/swarm-lab.sh down 9>&- || true' EXIT
  trap 'exit 130' INT TERM
  deploy/swarm-lab.sh up 9>&-
  set -a
  # shellcheck disable=SC1091 # written by swarm-lab.sh up
  . "$lab_dir/env"
  set +a
else
  echo "tests/run.sh: not root, so no Swarm lab (deploy/swarm-lab.sh): the Swarm tests skip, and fail under CI" >&2
fi

echo "tests/run.sh: running the suite" >&2
# The unit tests, the one integration test binary (`it`, tests/it/main.rs) and the doc tests.
# (Not holding the lab's lock, fd 9: a process a test leaves behind must not keep the next
# run waiting.)
cargo test --no-fail-fast -- --test-threads="${TEST_THREADS:-4}" 9>&-
