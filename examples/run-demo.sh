#!/usr/bin/env bash
# Starts the simulator, builds and runs examples/demo.c against it, and stops the
# simulator whatever happens. usage: examples/run-demo.sh [LIBDIR] (default target/release)
set -euo pipefail
cd "$(dirname "$0")/.."
libdir=${1:-target/release}
build=target/demo
mkdir -p "$build/lib"
ln -sf "$PWD/$libdir/libtryvox.so" "$build/lib/libtryvox.so.0"
ln -sf "$PWD/$libdir/libtryvox.so" "$build/lib/libtryvox.so"
${CC:-cc} -std=c99 -D_DEFAULT_SOURCE -Wall -Wextra -Werror -O2 -Iinclude examples/demo.c \
  -o "$build/demo" -L"$build/lib" -Wl,-rpath,"$PWD/$build/lib" -ltryvox

out=$(mktemp)
"$libdir/tryvox-sim" --answer-delay-ms 500 >"$out" 2>&1 &
sim=$!
cleanup() { kill "$sim" 2>/dev/null || true; wait "$sim" 2>/dev/null || true; rm -f "$out"; }
trap cleanup EXIT
for _ in $(seq 100); do [ -s "$out" ] && break; sleep 0.05; done
base=$(head -1 "$out")
case "$base" in http://*) ;; *) echo "simulator did not start: $(cat "$out")" >&2; exit 1;; esac
echo "tryvox-sim listening on $base (pid $sim)"
echo
"$build/demo" "$base" AC123456 tvx_sk_test_simulator
