#!/usr/bin/env bash
# Builds workspace crates for wasm32-unknown-unknown with the Debian toolchain set up by setup-wasm.sh.
#
#   scripts/wasm-build.sh -p canopy-tree                      # any `cargo build` arguments
#   scripts/wasm-build.sh -p canopy-tree --features sqlite
#   scripts/wasm-build.sh -p canopy-wasm-smoke                # -> $CARGO_TARGET_DIR/wasm32-unknown-unknown/release/*.wasm
#
# Always adds: --release --target wasm32-unknown-unknown -Zbuild-std=std,panic_abort, and
# profile.release.debug=false (the workspace's release profile keeps line tables for native profiling;
# they would only bloat the .wasm).
# The target dir is ~/.cache/canopy/target-wasm (outside the clone; override with CANOPY_WASM_TARGET_DIR).
# Prints the artefact directory as the last line of stdout.
#
# Lockfile: Debian's cargo (1.96) and rustup's cargo (1.95) read and write the same lockfile format
# (version 4), and an up-to-date Cargo.lock resolves identically under both. But the wasm cargo must never
# rewrite the checkout's Cargo.lock (others may be editing dependencies while it runs, and a stale lock
# would otherwise make it write one). So each build copies Cargo.lock to
# ~/.cache/canopy/wasm-lock/Cargo.lock and points cargo at the copy with the (unstable, hence
# RUSTC_BOOTSTRAP) `resolver.lockfile-path` setting: the checkout's lock is only read, versions are the
# ones it pins, and anything missing from it is resolved into the copy only.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
ROOT=${CANOPY_CACHE:-$HOME/.cache/canopy}
[ -f "$ROOT/wasm-env.sh" ] || scripts/setup-wasm.sh
# shellcheck disable=SC1091
source "$ROOT/wasm-env.sh"
[ -x "$CANOPY_WASM_CARGO" ] || { echo "wasm-build: $CANOPY_WASM_CARGO missing; run scripts/setup-wasm.sh" >&2; exit 1; }

LOCK=$ROOT/wasm-lock/Cargo.lock
mkdir -p "$(dirname "$LOCK")"
cp "$REPO/Cargo.lock" "$LOCK"

"$CANOPY_WASM_CARGO" build \
  --release --target wasm32-unknown-unknown -Zbuild-std=std,panic_abort \
  -Zlockfile-path --config "resolver.lockfile-path=\"$LOCK\"" \
  --config profile.release.debug=false \
  "$@" >&2
cmp -s "$REPO/Cargo.lock" "$LOCK" \
  || echo "wasm-build: note: Cargo.lock lacked entries for this build; resolved into $LOCK only (run a native cargo build to update Cargo.lock)" >&2
echo "$CARGO_TARGET_DIR/wasm32-unknown-unknown/release"
