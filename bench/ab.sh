#!/usr/bin/env bash
# The same hangups through two builds of libtryvox, side by side against nginx (204 for
# everything): this tree (A) and git revision REV (B), built in a worktree. Interleaved
# runs; prints the median rate and CPU per hangup of each and their ratio.
# Usage: bench/ab.sh REV   (SEQ, BULK, REPEAT tune it; TLS=1 against nginx over TLS 1.3
# with a private CA). Needs nginx (and openssl for TLS=1). Not part of `make test`.
# Example: the cost of the statistics: bench/ab.sh d15f148^ (the commit before them).
set -euo pipefail
cd "$(dirname "$0")/.."
REV=${1:?usage: bench/ab.sh REV}
SEQ=${SEQ:-20000}; BULK=${BULK:-20000}; REPEAT=${REPEAT:-5}
command -v nginx >/dev/null || { echo "bench/ab.sh: nginx is missing" >&2; exit 1; }
work=$(mktemp -d)
git worktree add -q --detach "$work/b" "$REV"
ngx=
cleanup() {
  [ -n "$ngx" ] && { kill $ngx 2>/dev/null || true; wait $ngx 2>/dev/null || true; }
  git worktree remove --force "$work/b" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
cargo build --release -p tryvox -q
CARGO_TARGET_DIR=target/ab-b cargo build --release -p tryvox -q --manifest-path "$work/b/Cargo.toml"
mkdir -p "$work/A" "$work/B" "$work/nginx/tmp"
ln -sf "$PWD/target/release/libtryvox.so" "$work/A/libtryvox.so.0"
ln -sf "$PWD/target/ab-b/release/libtryvox.so" "$work/B/libtryvox.so.0"
ln -sf "$PWD/target/release/libtryvox.so" "$work/libtryvox.so"
cc -std=c99 -D_POSIX_C_SOURCE=200809L -DBENCH_NO_CURL -O2 -Wall -Wextra -Werror -Iinclude \
  bench/client.c -o "$work/client" -L"$work" -ltryvox
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
if [ "${TLS:-0}" = 1 ]; then
  # As bench/run.sh: a private CA and an ECDSA P-256 certificate for 127.0.0.1.
  t=$work/tls; mkdir -p "$t"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$t/ca.key" \
    -out "$t/ca.pem" -days 2 -subj "/CN=tryvox bench CA" -addext basicConstraints=critical,CA:TRUE \
    -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$t/server.key" \
    -out "$t/server.csr" -subj "/CN=127.0.0.1" 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1\nbasicConstraints=critical,CA:FALSE\nextendedKeyUsage=serverAuth\n' > "$t/ext.cnf"
  openssl x509 -req -in "$t/server.csr" -CA "$t/ca.pem" -CAkey "$t/ca.key" -set_serial 0x1234 \
    -days 2 -extfile "$t/ext.cnf" -out "$t/server.pem" 2>/dev/null
  sed -e "s/PORT/$port/" -e "s|CERT|$t/server.pem|" -e "s|KEY|$t/server.key|" \
    -e 's/^worker_processes 1;/master_process off;/' bench/nginx-tls.conf > "$work/nginx/nginx.conf"
  export BENCH_CA_FILE=$t/ca.pem
  url="https://127.0.0.1:$port"
else
  sed -e "s/PORT/$port/" -e 's/^worker_processes 1;/master_process off;/' bench/nginx.conf \
    > "$work/nginx/nginx.conf"
  url="http://127.0.0.1:$port"
fi
nginx -p "$work/nginx" -c nginx.conf 2>"$work/nginx.log" &
ngx=$!
for _ in $(seq 100); do python3 -c "import socket; socket.create_connection(('127.0.0.1',$port))" 2>/dev/null && break; sleep 0.05; done
results="$work/results.jsonl"
for v in A B; do LD_LIBRARY_PATH="$work/$v" "$work/client" tryvox seq "$url" 2000 warm- >/dev/null; done
for r in $(seq "$REPEAT"); do
  echo "round $r of $REPEAT" >&2
  for v in A B; do
    LD_LIBRARY_PATH="$work/$v" "$work/client" tryvox seq "$url" "$SEQ" s- | sed "s/^{/{\"lib\":\"$v\",/" >> "$results"
    LD_LIBRARY_PATH="$work/$v" "$work/client" tryvox bulk "$url" "$BULK" b- 32 | sed "s/^{/{\"lib\":\"$v\",/" >> "$results"
  done
done
python3 - "$results" "$REV" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
med = lambda lib, what, key: statistics.median(r[key] for r in rows if r["lib"] == lib and r["what"] == what)
print(f"A = this tree, B = {sys.argv[2]}; medians of {len(rows) // 4} interleaved runs against nginx")
print(f"{'':12} {'':>14} {'A':>10} {'B':>10} {'A/B':>7}")
for what in ("tryvox seq", "tryvox bulk"):
    for key, unit in (("per_sec", "hangups/s"), ("cpu_us", "CPU us/hangup")):
        a, b = med("A", what, key), med("B", what, key)
        print(f"{what:12} {unit:>14} {a:>10.2f} {b:>10.2f} {a / b:>7.3f}")
print(f"failed hangups: {sum(r['failed'] for r in rows)}")
PY
