#!/usr/bin/env bash
# Runs the Packetary service on this host with the embedded defaults: SQLite under
# ./packetary-data, the local Docker engine (installed and started when missing), and the
# registry-free bookworm-rpmbuild target (its image is built here on first run).
# Pages on http://127.0.0.1:8080/; add a [github] table (config/packetary.example.toml) and
# pass --config FILE to receive webhooks. Extra arguments go to `packetary serve`.
set -euo pipefail
cd "$(dirname "$0")/.."
deploy/ensure-host.sh
cargo build --release --quiet
target/release/packetary images ensure
exec target/release/packetary serve "$@"
