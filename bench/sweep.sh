#!/usr/bin/env bash
# Time to end every live call with tryvox_hangup_all against tryvox-sim: N calls (default
# 10,000) seeded, then one sweep; REPEAT rounds (default 3), median printed.
# Usage: bench/sweep.sh   (N, PAR, REPEAT tune it). Not part of `make test`.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-10000}; PAR=${PAR:-64}; REPEAT=${REPEAT:-3}
cargo build --release -p tryvox -p tryvox-sim -q
work=$(mktemp -d)
ln -sf "$PWD/target/release/libtryvox.so" "$work/libtryvox.so.0"
ln -sf "$PWD/target/release/libtryvox.so" "$work/libtryvox.so"
cc -std=c99 -D_POSIX_C_SOURCE=200809L -O2 -Wall -Wextra -Werror -Iinclude bench/sweep.c \
  -o "$work/sweep" -L"$work" -Wl,-rpath,"$work" -ltryvox
sim=
cleanup() { [ -n "$sim" ] && { kill $sim 2>/dev/null || true; wait $sim 2>/dev/null || true; }; rm -rf "$work"; }
trap cleanup EXIT
# A fresh simulator each round: its listing scans every call it holds, ended ones too.
for r in $(seq "$REPEAT"); do
  target/release/tryvox-sim --quiet >"$work/sim.out" 2>&1 &
  sim=$!
  for _ in $(seq 100); do [ -s "$work/sim.out" ] && break; sleep 0.05; done
  url=$(head -1 "$work/sim.out")
  account=$(sed -n "s/^account: //p" "$work/sim.out"); key=$(sed -n "s/^api key: \([^ ]*\).*/\1/p" "$work/sim.out")
  curl -sf -X POST -H 'content-type: application/json' \
    -d "{\"count\":$N,\"id_prefix\":\"r$r-\"}" "$url/_sim/seed" >/dev/null
  TRYVOX_API_KEY=$key "$work/sweep" "$url" "$account" "$PAR" | tee -a "$work/results"
  kill $sim; wait $sim 2>/dev/null || true; sim=
done
python3 - "$work/results" "$N" "$PAR" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
secs = statistics.median(r["seconds"] for r in rows)
print(f"tryvox_hangup_all, {int(sys.argv[2]):,} live calls, {sys.argv[3]} in flight: median {secs:.2f} s "
      f"({int(sys.argv[2]) / secs:,.0f} calls/s) over {len(rows)} runs; all OK: {all(r['status'] == 0 for r in rows)}")
PY
