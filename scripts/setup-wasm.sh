#!/usr/bin/env bash
# Installs what Canopy's wasm32-unknown-unknown builds need, idempotently, and writes an env file.
#
#   scripts/setup-wasm.sh            # ROOT defaults to ~/.cache/canopy (override: CANOPY_CACHE=/some/dir)
#
# Why this shape (see /work/shared/TOOLCHAIN.md): rustup on these machines has only the x86_64 target and
# cannot download the wasm32 std. Debian's `rustc-web`/`cargo-web` (1.96, bookworm-security) plus its
# library sources (`rust-web-src`) can build std for wasm32 from source (`-Zbuild-std`). Those packages are
# only *unpacked* (`dpkg -x`) under $ROOT/debroot, never `dpkg -i`-installed, so nothing shadows rustup's
# toolchain, which keeps doing every native build. Debian clang-19/lld-19/llvm-19 compile SQLite's C for
# wasm32 (sqlite-wasm-rs) and link wasm modules.
#
# What it does, each step only when needed (a second run takes about a second):
#   1. apt: clang-19, lld-19, llvm-19 (only if `clang-19`/`wasm-ld-19`/`llvm-ar-19` are missing)
#   2. apt-get download + dpkg -x: rustc-web, cargo-web, libstd-rust-web-<v>, libstd-rust-web-dev,
#      rust-web-src into $ROOT/debroot (skipped if the unpacked rustc/cargo already run at the pinned
#      upstream version)
#   3. apt: the runtime libraries those binaries link against (libllvmNN, libgit2, libcurl, libssh2, ...),
#      only the ones `ldd` reports missing
#   4. $ROOT/wasm-env.sh: the environment for wasm builds (sourced by scripts/wasm-build.sh)
# Every step prints how long it took. Needs root (or sudo) only when it has to install apt packages.
set -euo pipefail

ROOT=${CANOPY_CACHE:-$HOME/.cache/canopy}
CLANG_V=${CLANG_V:-19}
# Minimum upstream version of Debian's rustc-web (bookworm-security ships 1.96 now). Whatever version is
# unpacked stays in use until it is removed (rm -rf $ROOT/debroot): a newer security upload is picked up
# on purpose, not by surprise. Debian's rustc always matches its own rust-web-src, so any version works.
RUST_WEB_V=${RUST_WEB_V:-1.96}
DEB=$ROOT/debroot
mkdir -p "$ROOT"/{debs,logs}
# one setup at a time per cache (two test runs may start together)
exec 9>"$ROOT/.setup-wasm.lock"
flock 9

T0=$(date +%s)
TS=$T0
step() {
  local now
  now=$(date +%s)
  echo "=== setup-wasm [+$((now - TS))s, total $((now - T0))s] $*"
  TS=$now
}
die() {
  echo "setup-wasm: ERROR: $*" >&2
  exit 1
}

if [ "$(id -u)" -eq 0 ]; then SUDO=(); elif command -v sudo >/dev/null; then SUDO=(sudo); else SUDO=(); fi
APT_UPDATED=0
apt_update() {
  if [ "$APT_UPDATED" = 0 ]; then
    echo "    apt-get update"
    "${SUDO[@]}" apt-get update -qq >>"$ROOT/logs/apt.log" 2>&1 || die "apt-get update failed (see $ROOT/logs/apt.log)"
    APT_UPDATED=1
  fi
}
apt_install() {
  [ $# -gt 0 ] || return 0
  apt_update
  echo "    apt-get install $*"
  DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get install -y -qq --no-install-recommends "$@" \
    >>"$ROOT/logs/apt.log" 2>&1 || {
    tail -20 "$ROOT/logs/apt.log" >&2
    die "apt-get install $* failed"
  }
}

# ---------------------------------------------------------------------------------------------------------
step "1/4 apt: clang-$CLANG_V lld-$CLANG_V llvm-$CLANG_V (C for wasm32, wasm-ld, llvm-ar)"
missing=()
command -v "clang-$CLANG_V" >/dev/null || missing+=("clang-$CLANG_V")
command -v "wasm-ld-$CLANG_V" >/dev/null || missing+=("lld-$CLANG_V")
command -v "llvm-ar-$CLANG_V" >/dev/null || missing+=("llvm-$CLANG_V")
if [ ${#missing[@]} -gt 0 ]; then apt_install "${missing[@]}"; else echo "    already installed"; fi

# ---------------------------------------------------------------------------------------------------------
# Does the unpacked toolchain run, with std sources, at RUST_WEB_V or newer? (also the check after unpacking)
deb_toolchain_ok() {
  local v
  [ -x "$DEB/usr/bin/rustc" ] && [ -x "$DEB/usr/bin/cargo" ] || return 1
  [ -d "$DEB/usr/lib/rustlib/src/rust/library/std" ] || return 1
  v=$(LD_LIBRARY_PATH="$DEB/usr/lib/x86_64-linux-gnu" "$DEB/usr/bin/rustc" -V 2>/dev/null | awk '{print $2}') || return 1
  [ -n "$v" ] && dpkg --compare-versions "$v" ge "$RUST_WEB_V" || return 1
  LD_LIBRARY_PATH="$DEB/usr/lib/x86_64-linux-gnu" "$DEB/usr/bin/cargo" -V >/dev/null 2>&1 || return 1
}
# Shared libraries the unpacked binaries need that the system lacks (names as ldd prints them).
missing_libs() {
  local b
  for b in "$DEB/usr/bin/rustc" "$DEB/usr/bin/cargo" "$DEB"/usr/lib/x86_64-linux-gnu/librustc_driver-*.so; do
    [ -e "$b" ] || continue
    LD_LIBRARY_PATH="$DEB/usr/lib/x86_64-linux-gnu" ldd "$b" 2>/dev/null | awk '/not found/ {print $1}'
  done | sort -u
}

step "2/4 Debian rustc-web/cargo-web/rust-web-src (>= $RUST_WEB_V), unpacked (dpkg -x) into $DEB"
if [ -x "$DEB/usr/bin/rustc" ] && [ -z "$(missing_libs)" ] && deb_toolchain_ok; then
  echo "    already unpacked: $(LD_LIBRARY_PATH="$DEB/usr/lib/x86_64-linux-gnu" "$DEB/usr/bin/rustc" -V)"
else
  apt_update # the security suite's rustc-web moves; the candidate must be the current one
  cand=$(apt-cache policy rustc-web | awk '/Candidate:/ {print $2}')
  [ -n "$cand" ] && [ "$cand" != "(none)" ] && dpkg --compare-versions "$cand" ge "$RUST_WEB_V" \
    || die "apt candidate for rustc-web is '$cand', need >= $RUST_WEB_V (is bookworm-security in the apt sources?)"
  echo "    rustc-web $cand"
  rm -rf "$ROOT/debs" "$DEB.new"
  mkdir -p "$ROOT/debs" "$DEB.new"
  (
    cd "$ROOT/debs"
    # as root apt-get download warns that it downloads unsandboxed; that warning is harmless
    apt-get download rustc-web cargo-web libstd-rust-web-dev rust-web-src >>"$ROOT/logs/apt.log" 2>&1 \
      || die "apt-get download rustc-web cargo-web libstd-rust-web-dev rust-web-src failed"
    # libstd-rust-web-dev depends on the versioned runtime package (libstd-rust-web-1.96, ...)
    libstd=$(dpkg-deb -f libstd-rust-web-dev_*.deb Depends | tr ',' '\n' | grep -o 'libstd-rust-web-[0-9.]*' | head -1)
    [ -n "$libstd" ] || die "cannot find the versioned libstd-rust-web package in libstd-rust-web-dev's Depends"
    apt-get download "$libstd" >>"$ROOT/logs/apt.log" 2>&1 || die "apt-get download $libstd failed"
    for f in *.deb; do dpkg -x "$f" "$DEB.new"; done
  )
  rm -rf "$DEB"
  mv "$DEB.new" "$DEB"
  # std sources: usr/lib/rustlib/src/rust -> ../../../src/rustc-X.Y.Z (a relative symlink inside $DEB)
  [ -d "$DEB/usr/lib/rustlib/src/rust/library/std" ] || die "rust-web-src did not provide library/std under $DEB/usr/lib/rustlib/src/rust"
fi

# ---------------------------------------------------------------------------------------------------------
step "3/4 apt: runtime libraries of the unpacked rustc/cargo"
libs=$(missing_libs)
if [ -n "$libs" ]; then
  echo "    missing: $(echo "$libs" | tr '\n' ' ')"
  # Map each missing soname to its Debian package via the packages' own Depends (libllvmNN, libgit2-1.5,
  # libcurl4, libssh2-1, libsqlite3-0, ...), then install only those.
  deps=$(
    for f in "$ROOT"/debs/libstd-rust-web-[0-9]*.deb "$ROOT"/debs/cargo-web_*.deb "$ROOT"/debs/rustc-web_*.deb; do
      [ -e "$f" ] && dpkg-deb -f "$f" Depends
      echo ,
    done | tr ',' '\n' | sed 's/(.*//; s/|.*//; s/ //g' | grep -E '^lib' | grep -v '^libstd-rust' | sort -u
  )
  # install only packages that are not installed yet (never upgrade libc6 & co. as a side effect)
  todo=()
  for d in $deps; do
    dpkg-query -W -f='${Status}' "$d" 2>/dev/null | grep -q 'install ok installed' || todo+=("$d")
  done
  apt_install "${todo[@]}"
  libs=$(missing_libs)
  [ -z "$libs" ] || die "still missing shared libraries: $libs"
else
  echo "    all present"
fi
deb_toolchain_ok || die "the unpacked toolchain under $DEB does not run or is not $RUST_WEB_V"

# ---------------------------------------------------------------------------------------------------------
step "4/4 env file $ROOT/wasm-env.sh"
cat >"$ROOT/wasm-env.sh.new" <<EOF
# Generated by scripts/setup-wasm.sh. Source this only for wasm32 builds (scripts/wasm-build.sh does);
# native builds keep using rustup's cargo/rustc.
export CANOPY_WASM_ROOT=$ROOT
export CANOPY_WASM_DEB=$DEB
export CANOPY_WASM_CARGO=$DEB/usr/bin/cargo
export LD_LIBRARY_PATH=$DEB/usr/lib/x86_64-linux-gnu\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}
export RUSTC=$DEB/usr/bin/rustc
export RUSTDOC=$DEB/usr/bin/rustdoc
# lets Debian's stable rustc/cargo accept -Zbuild-std (std for wasm32 is compiled from rust-web-src)
export RUSTC_BOOTSTRAP=1
export CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_LINKER=wasm-ld-$CLANG_V
# SQLite's C (sqlite-wasm-rs) is compiled for wasm32 with Debian clang
export CC_wasm32_unknown_unknown=clang-$CLANG_V
export AR_wasm32_unknown_unknown=llvm-ar-$CLANG_V
# wasm artefacts live outside the clone
export CARGO_TARGET_DIR=\${CANOPY_WASM_TARGET_DIR:-$ROOT/target-wasm}
EOF
mv "$ROOT/wasm-env.sh.new" "$ROOT/wasm-env.sh"
(
  # shellcheck disable=SC1091
  source "$ROOT/wasm-env.sh"
  echo "    $("$RUSTC" -V) / $("$CANOPY_WASM_CARGO" -V) / $("clang-$CLANG_V" --version | head -1)"
)
step "done"
