#!/usr/bin/env bash
# The side-by-side benchmark (make bench): libtryvox vs libcurl vs Python requests, and
# bulk vs wrk, against nginx (204 for everything) and tryvox-sim, in one run; then
# memory over 1,000,000 hangups. Prints a table; `bench/run.sh --write` also records it in
# BENCHMARKS.md. Needs: nginx, wrk, libcurl4-openssl-dev, python3 with requests.
set -euo pipefail
cd "$(dirname "$0")/.."
SEQ=${SEQ:-20000}; PY=${PY:-3000}; BULK=${BULK:-20000}; MEM=${MEM:-1000000}; WRK_SECS=${WRK_SECS:-5}
# Each measurement runs REPEAT times, interleaved; the report takes the median.
REPEAT=${REPEAT:-3}
for tool in nginx wrk curl-config python3; do
  command -v $tool >/dev/null || { echo "bench: $tool is missing (see the header of bench/run.sh)" >&2; exit 1; }
done
python3 -c "import requests" || { echo "bench: python3 needs requests (pip install requests)" >&2; exit 1; }

cargo build --release --workspace -q
work=$(mktemp -d)
mkdir -p "$work/lib" "$work/nginx/tmp"
ln -sf "$PWD/target/release/libtryvox.so" "$work/lib/libtryvox.so.0"
ln -sf "$PWD/target/release/libtryvox.so" "$work/lib/libtryvox.so"
cc -std=c99 -D_POSIX_C_SOURCE=200809L -O2 -Wall -Wextra -Werror -Iinclude bench/client.c -o "$work/client" \
  -L"$work/lib" -Wl,-rpath,"$work/lib" -ltryvox $(curl-config --libs)

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
sed "s/PORT/$port/" bench/nginx.conf > "$work/nginx/nginx.conf"
nginx -p "$work/nginx" -c nginx.conf 2>"$work/nginx.log" &
ngx=$!
target/release/tryvox-sim --no-auto-answer >"$work/sim.out" 2>&1 &
sim=$!
cleanup() { kill $ngx $sim 2>/dev/null || true; wait $ngx $sim 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
for _ in $(seq 100); do [ -s "$work/sim.out" ] && break; sleep 0.05; done
simurl=$(head -1 "$work/sim.out")
ngxurl="http://127.0.0.1:$port"
sleep 0.3

seed() { curl -sf -X POST -H 'content-type: application/json' -d "{\"count\":$2,\"id_prefix\":\"$1\"}" "$simurl/_sim/seed" >/dev/null; }
results="$work/results.jsonl"
run() { local server=$1; shift; "$@" | sed "s/^{/{\"server\":\"$server\",/" >> "$results"; }
wrk_run() {
  local server=$1 url=$2 prefix=$3
  local out; out=$(WRK_PREFIX=$prefix wrk -t2 -c32 -d${WRK_SECS}s -s bench/delete.lua "$url")
  local rps; rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
  local non2xx; non2xx=$(echo "$out" | awk '/Non-2xx/ {print $5}')
  local total; total=$(echo "$out" | awk '/requests in/ {print $1}')
  echo "{\"server\":\"$server\",\"what\":\"wrk -c32\",\"per_sec\":${rps%.*},\"total\":$total,\"non2xx\":${non2xx:-0}}" >> "$results"
}

echo "warming up..." >&2
"$work/client" tryvox seq "$ngxurl" 2000 warm- >/dev/null
"$work/client" curl seq "$ngxurl" 2000 warm- >/dev/null

for server in nginx sim; do
  for r in $(seq $REPEAT); do
    if [ $server = nginx ]; then url=$ngxurl; else url=$simurl
      # Live calls for this round (a hung-up call cannot be hung up again).
      seed r$r-seq-tryvox- $SEQ; seed r$r-seq-curl- $SEQ; seed r$r-seq-py- $PY; seed r$r-bulk- $BULK
      seed r$r-wrk-0- 250000; seed r$r-wrk-1- 250000
    fi
    echo "[$server] round $r of $REPEAT: sequential, bulk..." >&2
    run $server "$work/client" curl seq "$url" $SEQ r$r-seq-curl-
    run $server "$work/client" tryvox seq "$url" $SEQ r$r-seq-tryvox-
    run $server python3 bench/requests_seq.py "$url" $PY r$r-seq-py-
    run $server "$work/client" tryvox bulk "$url" $BULK r$r-bulk- 32
    wrk_run $server "$url" "r$r-wrk-"
  done
done
echo "[nginx] memory over $MEM hangups..." >&2
run nginx "$work/client" tryvox mem "$ngxurl" $MEM mem-

python3 bench/report.py "$results" "$@"
