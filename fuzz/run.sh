#!/usr/bin/env bash
# Bounded fuzzing for `make test`: each target for FUZZ_SECONDS (default 60) under
# AddressSanitizer with leak detection, starting from the committed seed corpus (new
# inputs go to target/fuzz-corpus, not into the repository). Fails on any crash or leak.
#
# cargo-fuzz wants nightly for -Zsanitizer; this stable toolchain ships the ASan runtime,
# and RUSTC_BOOTSTRAP=1 lets it accept the flag. Only this fuzz build uses it.
set -euo pipefail
cd "$(dirname "$0")"
secs=${FUZZ_SECONDS:-60}
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
export RUSTC_BOOTSTRAP=1
summary=()
for t in response c_inputs wire; do
  out=../target/fuzz-corpus/$t
  mkdir -p "$out"
  log=$(mktemp)
  if ! cargo fuzz run -O "$t" "$out" "corpus/$t" -- -max_total_time="$secs" -detect_leaks=1 -print_final_stats=1 >"$log" 2>&1; then
    tail -40 "$log"
    echo "fuzz: target $t FAILED (crash or leak); reproducer in fuzz/artifacts/$t/" >&2
    exit 1
  fi
  runs=$(awk '/stat::number_of_executed_units/ {print $2}' "$log")
  cov=$(grep -E '^#[0-9]+.*DONE' "$log" | sed -E 's/.*cov: ([0-9]+).*/\1/')
  summary+=("$t: $runs executions in ${secs}s, coverage $cov, no crash, no leak")
  rm -f "$log"
done
printf 'fuzz: %s\n' "${summary[@]}"
