#!/usr/bin/env bash
# Builds packetary/mock:debian-test, the mock backend's test image, from this recipe and Mock's
# source in ../shared/peers/mock (relative to the project root). Skips the build when an image
# of the same recipe (files, Mock's sources, base image) exists: run it as often as you like.
# Then copies the image's buildroot repository (one RPM holding a Debian tree) out to
# target/mock-debian-test/repo, and writes target/mock-debian-test/packetary.toml, a config
# with the target `debian12-mock` using both: `packetary build --config` that file.
# Usage: images/mock-debian-test/build.sh
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
tag=packetary/mock:debian-test
out="$root/target/mock-debian-test"
base=packetary/debian-base:bookworm
peer="${PACKETARY_MOCK_PEER:-$root/../shared/peers/mock}"
log() { echo "mock-debian-test: $*" >&2; }

tarball=$(ls "$peer"/mock-*.tar.gz 2>/dev/null | head -n1 || true)
wheel=$(ls "$peer"/templated_dictionary-*.whl 2>/dev/null | head -n1 || true)
if [ -z "$tarball" ] || [ -z "$wheel" ]; then
  log "Mock's sources are not in $peer (mock-*.tar.gz and templated_dictionary-*.whl)"
  log "fix: set PACKETARY_MOCK_PEER to the folder holding them"; exit 3
fi
base_id=$(docker image inspect --format '{{.Id}}' "$base" 2>/dev/null || true)
if [ -z "$base_id" ]; then
  log "$base is missing; run \`packetary images ensure\` first"; exit 3
fi
hash=$( { echo "$base_id"; cat "$here/Dockerfile" "$here/buildroot.spec" "$here/build.sh"; \
          sha256sum < "$tarball"; sha256sum < "$wheel"; } | sha256sum | cut -c1-16)
have=$(docker image inspect --format '{{index .Config.Labels "org.packetary.recipe-hash"}}' "$tag" 2>/dev/null || true)
ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
if [ "$have" = "$hash" ]; then
  log "$tag is up to date (recipe $hash)"
else
cp "$here/Dockerfile" "$here/buildroot.spec" "$ctx/"
cp "$tarball" "$ctx/mock.tar.gz"
cp "$wheel" "$ctx/"
  log "building $tag (recipe $hash; a few minutes the first time)"
  t0=$(date +%s)
  if ! docker build --build-arg "BASE=$base" --label "org.packetary.recipe-hash=$hash" \
      -t "$tag" "$ctx" >"$ctx/build.log" 2>&1; then
    tail -40 "$ctx/build.log" >&2; log "building $tag failed"; exit 1
  fi
  log "built $tag in $(( $(date +%s) - t0 )) s"
fi

# The buildroot repository, on the host: targets name repositories by host path or URL.
if [ "$(cat "$out/recipe-hash" 2>/dev/null || true)" != "$hash" ]; then
  rm -rf "$out"; mkdir -p "$out"
  c=$(docker create "$tag" true)
  docker cp "$c:/srv/packetary-buildroot" "$out/repo" && rc=0 || rc=$?
  docker rm -f "$c" >/dev/null
  [ "$rc" -eq 0 ] || { log "could not copy the buildroot repository out of $tag"; exit 1; }
  cat > "$out/packetary.toml" <<TOML
# Written by images/mock-debian-test/build.sh: the mock backend against the real Mock.
[targets.debian12-mock]
backend = "mock"
image = "$tag"
arch = "x86_64"
releasever = "12"
chroot_setup = "install packetary-debian-buildroot"
repos = [{ name = "buildroot", url = "file://$out/repo" }]
TOML
  echo "$hash" > "$out/recipe-hash"
  log "buildroot repository and config in $out"
fi
