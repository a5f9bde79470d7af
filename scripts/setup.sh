#!/usr/bin/env bash
# Installs the system packages Canopy's build and tests need, idempotently (only what is missing):
#   build-essential (cc for bundled SQLite), pkg-config, sqlite3 (the shell the extension tests drive),
#   nodejs (runs the wasm smoke test; >= 18)
# and checks that rustup's cargo, rustfmt and clippy are there (this machine's crates.io-only network
# cannot install Rust itself: install rustup beforehand).
# Called by scripts/test.sh; needs root (or sudo) only when something is missing.
set -euo pipefail
T0=$(date +%s)
die() {
  echo "setup: ERROR: $*" >&2
  exit 1
}
if [ "$(id -u)" -eq 0 ]; then SUDO=(); elif command -v sudo >/dev/null; then SUDO=(sudo); else SUDO=(); fi

missing=()
command -v cc >/dev/null && command -v make >/dev/null || missing+=(build-essential)
command -v pkg-config >/dev/null || missing+=(pkg-config)
command -v sqlite3 >/dev/null || missing+=(sqlite3)
command -v node >/dev/null || missing+=(nodejs)
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: apt-get install ${missing[*]}"
  LOG=$(mktemp)
  { "${SUDO[@]}" apt-get update -qq && DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get install -y -qq \
    --no-install-recommends "${missing[@]}"; } >"$LOG" 2>&1 || {
    tail -20 "$LOG" >&2
    die "apt-get install ${missing[*]} failed"
  }
  rm -f "$LOG"
fi

node_major=$(node -p 'process.versions.node.split(".")[0]')
[ "$node_major" -ge 18 ] || die "node $(node --version) is too old (need >= 18)"
command -v cargo >/dev/null || die "cargo not found: install Rust with rustup (stable, with rustfmt and clippy)"
cargo fmt --version >/dev/null 2>&1 || rustup component add rustfmt >/dev/null 2>&1 || die "rustfmt missing (rustup component add rustfmt)"
cargo clippy --version >/dev/null 2>&1 || rustup component add clippy >/dev/null 2>&1 || die "clippy missing (rustup component add clippy)"
echo "setup: ok in $(($(date +%s) - T0))s ($(cargo --version), node $(node --version), sqlite3 $(sqlite3 --version | cut -d' ' -f1))"
