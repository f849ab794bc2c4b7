#!/usr/bin/env bash
# Clean release build time and library sizes of two revisions, side by side:
#   bench/buildsize.sh [BEFORE [AFTER]]   (defaults: HEAD~1 and the working tree's HEAD)
# Each is exported with git archive and built with `cargo build --release -p tryvox` in a
# fresh target directory under target/buildsize (dependencies fetched first, so the network
# is not timed).
set -euo pipefail
cd "$(dirname "$0")/.."
before=${1:-HEAD~1}
after=${2:-HEAD}
work=$PWD/target/buildsize
for rev in "$before" "$after"; do
  id=$(git rev-parse --short "$rev")
  rm -rf "$work/$id"
  mkdir -p "$work/$id/src"
  git archive "$rev" | tar -x -C "$work/$id/src"
  (cd "$work/$id/src" && cargo fetch --quiet)
  start=$(date +%s.%N)
  (cd "$work/$id/src" && CARGO_TARGET_DIR=$work/$id/target cargo build --quiet --release -p tryvox)
  end=$(date +%s.%N)
  so=$work/$id/target/release/libtryvox.so
  strip -o "$work/$id/stripped.so" "$so"
  printf '%s: clean release build %.0f s; libtryvox.so %s bytes (%s stripped); libtryvox.a %s bytes\n' \
    "$id" "$(echo "$end - $start" | bc)" "$(stat -c %s "$so")" \
    "$(stat -c %s "$work/$id/stripped.so")" "$(stat -c %s "$work/$id/target/release/libtryvox.a")"
  rm -rf "$work/$id"
done
