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

echo "tests/run.sh: running the suite" >&2
# The unit tests, the one integration test binary (`it`, tests/it/main.rs) and the doc tests.
cargo test --no-fail-fast -- --test-threads="${TEST_THREADS:-4}"
