#!/usr/bin/env bash
# The one test command (README): sets up what it needs and runs every test.
# Idempotent; tool caches live under ~/.cache/canopy, outside the clone.
set -euo pipefail
cd "$(dirname "$0")/.."
T0=$(date +%s)
phase() { echo "=== [$(( $(date +%s) - T0 ))s] $*"; }

phase "rust: fmt check"
cargo fmt --all -- --check

phase "rust: build + tests (workspace)"
cargo test --workspace --all-targets

phase "done in $(( $(date +%s) - T0 ))s"
