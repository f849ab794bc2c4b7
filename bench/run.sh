#!/usr/bin/env bash
# The side-by-side benchmark (make bench): libtryvox vs libcurl vs Python requests vs wrk,
# against nginx (204 for everything, plain and TLS 1.3) and tryvox-sim (plain, with 100 ms
# latency, with injected faults), every measurement REPEAT times in interleaved rounds;
# then threads and memory once. Prints a table; `bench/run.sh --write` also records it in
# BENCHMARKS.md. Needs: nginx (with ssl), wrk, openssl, libcurl4-openssl-dev, python3
# with requests.
#
# Environment:
#   CARGO_TARGET_DIR  where cargo builds (default ./target)
#   REV               measure this git revision instead of the working tree: its tree is
#                     exported (git archive, nothing in .git changes) to
#                     $CARGO_TARGET_DIR/bench-src/SHA and built there; bench/ and the
#                     report stay the working tree's. E.g. REV=HEAD for a "before" run.
#   REPEAT (3) rounds; SEQ (20000) PY (3000) BULK (20000) sequential/bulk ids;
#   LAT_N (10000) LAT_PAR (1000) LAT_MS (100) the latency row; ASYNC (20000) the
#   async-cost row; MEM (1000000) the memory row; AFTER (10) seconds the idle-thread
#   count waits after the bulk; WRK_SECS (5) each wrk run; CMD_TIMEOUT (600) seconds
#   before a measurement is killed (and reported as failed); BENCH_KEEP_RESULTS=FILE
#   keeps the raw JSON lines (python3 bench/report.py FILE prints the table again).
set -euo pipefail
cd "$(dirname "$0")/.."
SEQ=${SEQ:-20000}; PY=${PY:-3000}; BULK=${BULK:-20000}; MEM=${MEM:-1000000}; WRK_SECS=${WRK_SECS:-5}
LAT_N=${LAT_N:-10000}; LAT_PAR=${LAT_PAR:-1000}; LAT_MS=${LAT_MS:-100}; ASYNC=${ASYNC:-20000}
AFTER=${AFTER:-10}
# Each measurement runs REPEAT times, interleaved; the report takes the median.
REPEAT=${REPEAT:-3}
for tool in nginx wrk curl-config python3 openssl git; do
  command -v $tool >/dev/null || { echo "bench: $tool is missing (see the header of bench/run.sh)" >&2; exit 1; }
done
python3 -c "import requests" || { echo "bench: python3 needs requests (pip install requests)" >&2; exit 1; }
# wrk -c$LAT_PAR and the simulator each hold that many sockets.
need=$((LAT_PAR * 2 + 200))
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt $need ]; then
  ulimit -n $need 2>/dev/null || { echo "bench: needs $need file descriptors (ulimit -n)" >&2; exit 1; }
fi
# A measurement that takes longer than this is killed and reported as failed.
CMD_TIMEOUT=${CMD_TIMEOUT:-600}

# Everything started is killed on the way out, however the script ends.
work=$(mktemp -d)
pids=()
cleanup() {
  local p
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

tgt=${CARGO_TARGET_DIR:-target}
case $tgt in /*) ;; *) tgt=$PWD/$tgt ;; esac
if [ -n "${REV:-}" ]; then
  sha=$(git rev-parse --verify "$REV^{commit}")
  src=$tgt/bench-src/$sha
  if [ ! -e "$src/.exported" ]; then
    rm -rf "$src"; mkdir -p "$src"
    git archive "$sha" | tar -x -C "$src"
    touch "$src/.exported"
  fi
  built="$REV = ${sha:0:12}"
else
  src=$PWD
  built="working tree at $(git rev-parse --short=12 HEAD)$(git diff --quiet HEAD -- . ':!bench' ':!BENCHMARKS.md' || echo ' + uncommitted changes')"
fi
# Another revision builds in a target directory of its own: cargo leaves the path out of
# a path crate's artifact names, so two trees of the workspace in one target directory
# overwrite each other's tryvox-core (the next build of the working tree then failed to
# compile, or could have linked the other revision's crate).
if [ -n "${REV:-}" ]; then tgt=$tgt/bench-rev; fi
(cd "$src" && CARGO_TARGET_DIR=$tgt cargo build --release --workspace -q)
lib=$tgt/release
mkdir -p "$work/lib" "$work/nginx/tmp" "$work/nginx-tls/tmp" "$work/tls"
ln -sf "$lib/libtryvox.so" "$work/lib/libtryvox.so.0"
ln -sf "$lib/libtryvox.so" "$work/lib/libtryvox.so"
cc -std=c99 -D_POSIX_C_SOURCE=200809L -O2 -Wall -Wextra -Werror -I"$src/include" bench/client.c -o "$work/client" \
  -L"$work/lib" -Wl,-rpath,"$work/lib" -ltryvox $(curl-config --libs)
cc -std=c99 -D_GNU_SOURCE -O2 -Wall -Wextra -Werror -pthread -I"$src/include" bench/engine.c -o "$work/engine" \
  -L"$work/lib" -Wl,-rpath,"$work/lib" -ltryvox

# A private CA and a server certificate for 127.0.0.1 (ECDSA P-256), for nginx over TLS 1.3.
tls=$work/tls
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$tls/ca.key" \
  -out "$tls/ca.pem" -days 2 -subj "/CN=tryvox bench CA" -addext basicConstraints=critical,CA:TRUE \
  -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$tls/server.key" \
  -out "$tls/server.csr" -subj "/CN=127.0.0.1" 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n' \
  > "$tls/ext.cnf"
openssl x509 -req -in "$tls/server.csr" -CA "$tls/ca.pem" -CAkey "$tls/ca.key" -set_serial "0x$(openssl rand -hex 8)" \
  -days 2 -extfile "$tls/ext.cnf" -out "$tls/server.pem" 2>/dev/null
ca=$tls/ca.pem

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 100); do python3 -c "import socket; socket.create_connection(('127.0.0.1',$1))" 2>/dev/null && return; sleep 0.05; done
  echo "bench: nothing listens on port $1" >&2; exit 1; }
port=$(free_port)
sed "s/PORT/$port/" bench/nginx.conf > "$work/nginx/nginx.conf"
nginx -p "$work/nginx" -c nginx.conf 2>"$work/nginx.log" &
pids+=($!)
tport=$(free_port)
sed -e "s/PORT/$tport/" -e "s|CERT|$tls/server.pem|" -e "s|KEY|$tls/server.key|" bench/nginx-tls.conf > "$work/nginx-tls/nginx.conf"
nginx -p "$work/nginx-tls" -c nginx.conf 2>"$work/nginx-tls.log" &
pids+=($!)
# The simulators: plain, with latency, with faults (drops, 503s, 429s with Retry-After: 0).
start_sim() {
  local name=$1; shift
  "$lib/tryvox-sim" --no-auto-answer --quiet "$@" >"$work/$name.out" 2>"$work/$name.err" &
  pids+=($!)
}
start_sim sim
start_sim sim-latency --latency-ms "$LAT_MS"
start_sim sim-faults --error-rate 0.10 --rate-limit-rate 0.05 --retry-after 0 --drop-rate 0.05
sim_url() { for _ in $(seq 200); do [ -s "$work/$1.out" ] && break; sleep 0.05; done; head -1 "$work/$1.out"; }
simurl=$(sim_url sim); laturl=$(sim_url sim-latency); faulturl=$(sim_url sim-faults)
[ -n "$simurl" ] && [ -n "$laturl" ] && [ -n "$faulturl" ] || { echo "bench: a simulator did not start" >&2; cat "$work"/sim*.err >&2; exit 1; }
ngxurl="http://127.0.0.1:$port"
tlsurl="https://127.0.0.1:$tport"
wait_port "$port"; wait_port "$tport"
sleep 0.3

seed() { curl -sf -X POST -H 'content-type: application/json' -d "{\"count\":$3,\"id_prefix\":\"$2\"}" "$1/_sim/seed" >/dev/null; }
results="$work/results.jsonl"
round=0
# A failed measurement is reported (stderr, and an "error" line the report lists) and the
# run goes on.
fail() {
  [ "$2" = 124 ] && echo "killed: no result within its timeout (CMD_TIMEOUT=$CMD_TIMEOUT s, or wrk's)" >> "$work/last.err"
  echo "bench: FAILED [$1, round $round] (exit $2): $3" >&2
  [ -s "$work/last.err" ] && tail -5 "$work/last.err" >&2
  python3 -c 'import json, sys; print(json.dumps({"server": sys.argv[1], "round": int(sys.argv[2]), "what": "error",
    "rc": int(sys.argv[3]), "cmd": sys.argv[4], "stderr": sys.argv[5][-400:]}))' \
    "$1" "$round" "$2" "$3" "$(cat "$work/last.err" 2>/dev/null)" >> "$results"
}
# run SERVER COMMAND...: one JSON line from COMMAND, tagged with the server and the round.
run() {
  local server=$1; shift
  local line rc=0
  line=$(timeout --foreground -k 5 "$CMD_TIMEOUT" "$@" 2>"$work/last.err") || rc=$?
  if [ $rc -ne 0 ] || [ "${line:0:1}" != "{" ]; then fail "$server" $rc "$*"; return 0; fi
  [ -s "$work/last.err" ] && cat "$work/last.err" >&2
  echo "$line" | sed "s/^{/{\"server\":\"$server\",\"round\":$round,/" >> "$results"
}
# wrk_run SERVER URL PREFIX THREADS CONNECTIONS: wrk's rate as one JSON line.
wrk_run() {
  local server=$1 url=$2 prefix=$3 t=$4 c=$5
  local out rc=0
  out=$(WRK_PREFIX=$prefix timeout --foreground -k 5 $((WRK_SECS + 60)) \
    wrk -t$t -c$c -d${WRK_SECS}s --timeout 10s -s bench/delete.lua "$url" 2>"$work/last.err") || rc=$?
  local rps; rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
  if [ $rc -ne 0 ] || [ -z "$rps" ]; then fail "$server" $rc "wrk -t$t -c$c $url"; return 0; fi
  local non2xx; non2xx=$(echo "$out" | awk '/Non-2xx/ {print $5}')
  local total; total=$(echo "$out" | awk '/requests in/ {print $1}')
  local errors; errors=$(echo "$out" | awk '/Socket errors/ {gsub(",", ""); print $4 + $6 + $8 + $10}')
  echo "{\"server\":\"$server\",\"round\":$round,\"what\":\"wrk -t$t -c$c\",\"per_sec\":${rps%.*},\"total\":$total,\"non2xx\":${non2xx:-0},\"socket_errors\":${errors:-0}}" >> "$results"
}

echo "warming up..." >&2
"$work/client" tryvox seq "$ngxurl" 2000 warm- >/dev/null
"$work/client" curl seq "$ngxurl" 2000 warm- >/dev/null
BENCH_CA_FILE=$ca "$work/client" tryvox seq "$tlsurl" 2000 warm- >/dev/null
BENCH_CA_FILE=$ca "$work/client" curl seq "$tlsurl" 2000 warm- >/dev/null

# What else ran on the machine meanwhile (the report shows it per round): the CPU time of
# the machine minus that of this script's process tree.
cpumark() { python3 bench/cpumark.py $$ "$work/cpu.state" "$1" | sed "s/^{/{\"server\":\"-\",\"round\":$round,/" >> "$results"; }
started=$(date +%s)
cpumark start
# Live calls for wrk's ids ({prefix}{thread}-{n}): enough for 100,000/s, and for the
# latency simulator 8,000/s per thread (1,000 connections at 100 ms make 10,000/s in all).
wrk_per_thread=$((WRK_SECS * 50000))
lat_wrk_per_thread=$((WRK_SECS * 8000))
for r in $(seq $REPEAT); do
  round=$r
  echo "round $r of $REPEAT: [nginx] sequential, bulk cold and warm, wrk -t2/-t1..." >&2
  run nginx "$work/client" curl seq "$ngxurl" $SEQ r$r-seq-curl-
  run nginx "$work/client" tryvox seq "$ngxurl" $SEQ r$r-seq-tryvox-
  run nginx python3 bench/requests_seq.py "$ngxurl" $PY r$r-seq-py-
  run nginx "$work/engine" cold "$ngxurl" $BULK r$r-cold- 32
  run nginx "$work/engine" bulk "$ngxurl" $BULK r$r-bulk- 32
  wrk_run nginx "$ngxurl" r$r-wrk- 2 32
  wrk_run nginx "$ngxurl" r$r-wrk1- 1 32

  echo "round $r of $REPEAT: [nginx TLS 1.3] sequential, bulk cold and warm, wrk..." >&2
  export BENCH_CA_FILE=$ca
  run nginx-tls "$work/client" curl seq "$tlsurl" $SEQ r$r-seq-curl-
  run nginx-tls "$work/client" tryvox seq "$tlsurl" $SEQ r$r-seq-tryvox-
  run nginx-tls "$work/engine" cold "$tlsurl" $BULK r$r-cold- 32
  run nginx-tls "$work/engine" bulk "$tlsurl" $BULK r$r-bulk- 32
  unset BENCH_CA_FILE
  wrk_run nginx-tls "$tlsurl" r$r-wrk- 2 32

  echo "round $r of $REPEAT: [nginx] the caller's cost of tryvox_hangup_async..." >&2
  run nginx "$work/engine" async "$ngxurl" $ASYNC r$r-async-

  echo "round $r of $REPEAT: [sim] sequential, bulk cold and warm, wrk..." >&2
  # Live calls for this round (a hung-up call cannot be hung up again).
  seed "$simurl" r$r-seq-tryvox- $SEQ; seed "$simurl" r$r-seq-curl- $SEQ; seed "$simurl" r$r-seq-py- $PY
  seed "$simurl" r$r-cold- $BULK; seed "$simurl" r$r-bulk- $BULK; seed "$simurl" r$r-nofault- $BULK
  seed "$simurl" r$r-wrk-0- $wrk_per_thread; seed "$simurl" r$r-wrk-1- $wrk_per_thread
  run sim "$work/client" curl seq "$simurl" $SEQ r$r-seq-curl-
  run sim "$work/client" tryvox seq "$simurl" $SEQ r$r-seq-tryvox-
  run sim python3 bench/requests_seq.py "$simurl" $PY r$r-seq-py-
  run sim "$work/engine" cold "$simurl" $BULK r$r-cold- 32
  run sim "$work/engine" bulk "$simurl" $BULK r$r-bulk- 32
  wrk_run sim "$simurl" r$r-wrk- 2 32

  echo "round $r of $REPEAT: [sim, ${LAT_MS} ms latency] $LAT_N ids at $LAT_PAR in flight, wrk -c$LAT_PAR..." >&2
  seed "$laturl" r$r-lat- $LAT_N
  seed "$laturl" r$r-wrk-0- $lat_wrk_per_thread; seed "$laturl" r$r-wrk-1- $lat_wrk_per_thread
  run sim-latency "$work/engine" bulk "$laturl" $LAT_N r$r-lat- $LAT_PAR
  wrk_run sim-latency "$laturl" r$r-wrk- 2 $LAT_PAR

  # The library's defaults (2 retries, 10 s): FAULT_RETRIES=8 shows the backoff's tail.
  echo "round $r of $REPEAT: [sim with faults] bulk with ${FAULT_RETRIES:-the default} retries, and the same without faults..." >&2
  seed "$faulturl" r$r-fault- $BULK
  [ -n "${FAULT_RETRIES:-}" ] && export BENCH_MAX_RETRIES=$FAULT_RETRIES BENCH_TIMEOUT_MS=60000
  run sim-faults "$work/engine" bulk "$faulturl" $BULK r$r-fault- 32
  unset BENCH_MAX_RETRIES BENCH_TIMEOUT_MS
  run sim-nofaults "$work/engine" bulk "$simurl" $BULK r$r-nofault- 32
  cpumark "round $r"
done
round=0
echo "[nginx] threads: idle, during a bulk of $BULK, ${AFTER} s after..." >&2
export AFTER
run nginx "$work/engine" threads "$ngxurl" $BULK threads- 32
echo "[nginx] memory over $MEM hangups..." >&2
run nginx "$work/client" tryvox mem "$ngxurl" $MEM mem-
cpumark "threads and memory"
elapsed=$(( $(date +%s) - started ))

if [ -n "${BENCH_KEEP_RESULTS:-}" ]; then cp "$results" "$BENCH_KEEP_RESULTS"; fi
BENCH_LAT_MS=$LAT_MS BENCH_BUILT=$built BENCH_ELAPSED=$elapsed BENCH_SETTINGS="REPEAT=$REPEAT SEQ=$SEQ BULK=$BULK LAT_N=$LAT_N LAT_PAR=$LAT_PAR LAT_MS=$LAT_MS ASYNC=$ASYNC MEM=$MEM WRK_SECS=$WRK_SECS" \
  python3 bench/report.py "$results" "$@"
