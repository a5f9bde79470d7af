#!/usr/bin/env bash
# Prints the path of an `sqlite3` shell that can load the extension (SQLite >= 3.45.3, the oldest
# API rusqlite 0.43 binds to). Debian's own `sqlite3` package is used when it is new enough (it is
# installed when missing); Debian 12 ships 3.40.1, and its shell refuses any other libsqlite3
# ("header and source version mismatch"), so on such systems the official SQLite shell is built
# once from the SQLite release sources that the npm package `sqlite3` carries
# (deps/sqlite-autoconf-*.tar.gz), into a cache outside the clone.
set -euo pipefail
MIN=3045003
NPM_PKG=sqlite3@6.0.1           # carries deps/sqlite-autoconf-3520000.tar.gz (SQLite 3.52.0)
AUTOCONF=sqlite-autoconf-3520000
CACHE=${CANOPY_CACHE:-$HOME/.cache/canopy}/sqlite-shell/$AUTOCONF

version_of() { "$1" :memory: 'SELECT sqlite_version()' | awk -F. '{ printf "%d%03d%03d\n", $1, $2, $3 }'; }

if ! command -v sqlite3 >/dev/null; then
  { apt-get update -qq && apt-get install -y -qq --no-install-recommends sqlite3; } >&2
fi
if [ "$(version_of sqlite3)" -ge "$MIN" ]; then
  command -v sqlite3
  exit 0
fi
if [ ! -x "$CACHE/sqlite3" ]; then
  if ! command -v npm >/dev/null; then
    { apt-get update -qq && apt-get install -y -qq --no-install-recommends npm; } >&2
  fi
  echo "sqlite3-shell: system sqlite3 $(sqlite3 --version | cut -d' ' -f1) is older than 3.45.3; building the official shell from $AUTOCONF" >&2
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  (cd "$tmp" && npm pack "$NPM_PKG" --silent >/dev/null && tar xzf sqlite3-*.tgz \
    && tar xzf "package/deps/$AUTOCONF.tar.gz")
  mkdir -p "$CACHE"
  cc -O2 -o "$CACHE/sqlite3.tmp" "$tmp/$AUTOCONF/shell.c" "$tmp/$AUTOCONF/sqlite3.c" \
    -DSQLITE_THREADSAFE=1 -DSQLITE_ENABLE_MATH_FUNCTIONS -DSQLITE_ENABLE_DBSTAT_VTAB \
    -lm -ldl -lpthread >&2
  mv "$CACHE/sqlite3.tmp" "$CACHE/sqlite3"
fi
echo "$CACHE/sqlite3"
