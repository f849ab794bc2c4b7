#!/usr/bin/env bash
# What the C library's key-wiping allocator (feature wipe-freed-memory) costs: the same
# hangups through libtryvox built with and without it, interleaved, against nginx
# answering 204. Prints median wall time and CPU per hangup of each, and their ratio.
# Needs nginx. Not part of `make test`. Usage: bench/wipe.sh   (SEQ, BULK, REPEAT tune it)
set -euo pipefail
cd "$(dirname "$0")/.."
SEQ=${SEQ:-20000}; BULK=${BULK:-20000}; REPEAT=${REPEAT:-5}
command -v nginx >/dev/null || { echo "bench/wipe.sh: nginx is missing" >&2; exit 1; }

cargo build --release -p tryvox -q
CARGO_TARGET_DIR=target/nowipe cargo build --release -p tryvox --no-default-features -q
work=$(mktemp -d)
mkdir -p "$work/wipe" "$work/nowipe" "$work/nginx/tmp"
ln -sf "$PWD/target/release/libtryvox.so" "$work/wipe/libtryvox.so.0"
ln -sf "$PWD/target/nowipe/release/libtryvox.so" "$work/nowipe/libtryvox.so.0"
ln -sf "$PWD/target/release/libtryvox.so" "$work/libtryvox.so"
cc -std=c99 -D_POSIX_C_SOURCE=200809L -DBENCH_NO_CURL -O2 -Wall -Wextra -Werror -Iinclude \
  bench/client.c -o "$work/client" -L"$work" -ltryvox

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
sed -e "s/PORT/$port/" -e 's/^worker_processes 1;/master_process off;/' bench/nginx.conf \
  > "$work/nginx/nginx.conf"
nginx -p "$work/nginx" -c nginx.conf 2>"$work/nginx.log" &
ngx=$!
cleanup() { kill $ngx 2>/dev/null || true; wait $ngx 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
url="http://127.0.0.1:$port"
for _ in $(seq 100); do python3 -c "import socket; socket.create_connection(('127.0.0.1',$port))" 2>/dev/null && break; sleep 0.05; done

results="$work/results.jsonl"
for v in wipe nowipe; do LD_LIBRARY_PATH="$work/$v" "$work/client" tryvox seq "$url" 2000 warm- >/dev/null; done
for r in $(seq $REPEAT); do
  echo "round $r of $REPEAT" >&2
  for v in wipe nowipe; do
    LD_LIBRARY_PATH="$work/$v" "$work/client" tryvox seq "$url" $SEQ s- | sed "s/^{/{\"lib\":\"$v\",/" >> "$results"
    LD_LIBRARY_PATH="$work/$v" "$work/client" tryvox bulk "$url" $BULK b- 32 | sed "s/^{/{\"lib\":\"$v\",/" >> "$results"
  done
done
python3 - "$results" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
def med(lib, what, key):
    return statistics.median(r[key] for r in rows if r["lib"] == lib and r["what"] == what)
print(f"{'':16} {'wipe':>18} {'no wipe':>18} {'wipe/no wipe':>13}")
for what in ("tryvox seq", "tryvox bulk"):
    for key, unit in (("per_sec", "hangups/s"), ("cpu_us", "CPU us/hangup")):
        a, b = med("wipe", what, key), med("nowipe", what, key)
        print(f"{what:12} {unit:>14} {a:>10.2f} {b:>18.2f} {a / b:>13.3f}")
failed = sum(r["failed"] for r in rows)
print(f"runs: {len(rows)}, medians of {len(rows) // 4} each; failed hangups: {failed}")
PY
