#!/usr/bin/env bash
# Runs Packetary on this host with the embedded defaults (SQLite-free for now, the local
# Docker engine, the registry-free bookworm-rpmbuild target): sets the host up, then builds
# the example packages shipped in examples/ into ./packetary-out.
set -euo pipefail
cd "$(dirname "$0")/.."
deploy/ensure-host.sh
exec cargo run --release --quiet -- build examples "$@"
