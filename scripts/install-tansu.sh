#!/usr/bin/env bash
# Installs the standalone broker the Tansu end-to-end suite runs against (GUIDE §5): Tansu
# 0.6.0 from crates.io with the sqlite (libsql) storage engine. Building it takes ~10–15 min
# on 2 cores, so the binary is cached outside the checkout and reused by every later run and
# clone on this machine. Prints the binary's path on stdout.
#
#   TANSU_BIN=/path/to/tansu   use that binary, install nothing
#   TIERFLOW_TOOLS_DIR=DIR     cache root (default: ${XDG_CACHE_HOME:-~/.cache}/tierflow)
set -euo pipefail
version=0.6.0
if [ -n "${TANSU_BIN:-}" ]; then
  [ -x "$TANSU_BIN" ] || { echo "TANSU_BIN=$TANSU_BIN is not an executable file" >&2; exit 1; }
  echo "$TANSU_BIN"
  exit 0
fi
root="${TIERFLOW_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/tierflow}/tansu-$version"
bin="$root/bin/tansu"
if [ -x "$bin" ]; then
  echo "$bin"
  exit 0
fi
mkdir -p "$root"
# One installer at a time: concurrent test processes wait for the first one's build.
exec 9>"$root.lock"
flock 9
if [ ! -x "$bin" ]; then
  echo "installing tansu $version into $root (cargo install, ~10-15 min, once per machine)" >&2
  # Without libsql/dynostore no storage engine is compiled in; --locked keeps the build
  # reproducible. The build directory lives in the cache so an interrupted build resumes.
  CARGO_TARGET_DIR="$root/build" cargo install tansu --version "$version" --locked \
    --features libsql,dynostore --root "$root" >&2
  rm -rf "$root/build"
fi
echo "$bin"
