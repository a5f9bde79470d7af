#!/usr/bin/env bash
# The one test command (README): sets up what it needs and runs every test.
# Idempotent; tool caches live under ~/.cache/canopy, outside the clone. Fails on the first failing phase.
#
# Phases: system packages -> fmt check -> native workspace tests (+ doc tests) -> policy scenarios
#         -> wasm toolchain setup
#         -> wasm32 build of canopy-tree + the Node smoke test (tree/wasm-smoke)
#         -> the same with canopy-tree's `sqlite` feature (SqliteStore on SQLite compiled to wasm)
set -euo pipefail
cd "$(dirname "$0")/.."
T0=$(date +%s)
TP=$T0
SUMMARY=()
phase() {
  local now
  now=$(date +%s)
  [ -z "${PHASE:-}" ] || SUMMARY+=("$(printf '%5ss  %s' $((now - TP)) "$PHASE")")
  PHASE=$*
  TP=$now
  echo "=== [$((now - T0))s] $*"
}
on_exit() {
  local rc=$?
  if [ $rc -ne 0 ]; then
    echo "=== FAILED in phase: ${PHASE:-?} (exit $rc) after $(($(date +%s) - T0))s" >&2
  fi
}
trap on_exit EXIT

phase "setup: system packages"
scripts/setup.sh

phase "rust: fmt check"
cargo fmt --all -- --check

phase "rust: build + tests (workspace)"
cargo test --workspace --all-targets

phase "rust: doc tests (workspace)"
cargo test --workspace --doc

phase "policy scenarios: canopy policy test policy-tests/scenarios (spec/policy-tests.md)"
cargo run -q -p canopy -- policy test policy-tests/scenarios

phase "wasm: toolchain setup (scripts/setup-wasm.sh, idempotent)"
scripts/setup-wasm.sh

phase "wasm: build canopy-caps for wasm32-unknown-unknown (pure core: must build)"
scripts/wasm-build.sh -p canopy-caps >/dev/null

phase "wasm: build canopy-tree + smoke module for wasm32-unknown-unknown"
WASM_OUT=$(scripts/wasm-build.sh -p canopy-tree -p canopy-wasm-smoke | tail -1)

phase "wasm: smoke test under Node (MemoryStore)"
node tree/wasm-smoke/smoke.mjs "$WASM_OUT/canopy_wasm_smoke.wasm"

phase "wasm: build canopy-tree --features sqlite (rusqlite on sqlite-wasm-rs, SQLite's C by clang-19) + smoke"
WASM_OUT=$(scripts/wasm-build.sh -p canopy-tree -p canopy-wasm-smoke \
  --features canopy-tree/sqlite,canopy-wasm-smoke/sqlite | tail -1)

phase "wasm: smoke test under Node (MemoryStore + SqliteStore in wasm)"
node tree/wasm-smoke/smoke.mjs "$WASM_OUT/canopy_wasm_smoke.wasm" --sqlite

phase "sqlite extension: build + tests through an sqlite3 shell (sqlite-ext/, its own lockfile)"
# outside the workspace: rusqlite's loadable_extension must not be unified with bundled
# cargo test alone does not build a cdylib-only crate's library: build libcanopy.so first
cargo build --manifest-path sqlite-ext/Cargo.toml --target-dir target/sqlite-ext
cargo test --manifest-path sqlite-ext/Cargo.toml --target-dir target/sqlite-ext

phase "done"
echo "=== phase timings"
printf '%s\n' "${SUMMARY[@]}"
echo "=== all tests passed in $(($(date +%s) - T0))s"
