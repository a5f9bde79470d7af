#!/usr/bin/env bash
# The main job (README): sets up what is missing, builds the `canopy` binary and runs the sync
# server on an embedded SQLite data directory (zero set-up). Extra arguments go to `canopy serve`,
# e.g. `scripts/run.sh --listen 0.0.0.0:7070 --data /srv/canopy`.
#   Default listen address: 127.0.0.1:7070; default data: $XDG_DATA_HOME/canopy or ~/.local/share/canopy.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --release -p canopy
exec target/release/canopy serve "$@"
