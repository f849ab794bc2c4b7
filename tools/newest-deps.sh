#!/usr/bin/env bash
# The crates against the newest semver-compatible version of every dependency, as a new
# user meets them: our Cargo.lock hides a release that deprecates or breaks what we use.
#  1. A new cargo project that depends on tryvox-core (no lock file: cargo picks the
#     newest) builds with RUSTFLAGS="-D warnings", as many users' CI does.
#  2. A copy of this workspace, after `cargo update`, lints clean (clippy -D warnings on
#     every target: tests, examples, the simulator).
# Works in target/newest-deps (its own target directory, reused by later runs); needs
# crates.io. Prints the versions that differ from Cargo.lock.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
work=$root/target/newest-deps
export CARGO_TARGET_DIR=$work/target
mkdir -p "$work"
# One run at a time: a second waits (both would rebuild the same copy).
exec 9>"$work/lock"
flock 9
rm -rf "$work/tree" "$work/user"
mkdir -p "$work/tree" "$work/user/src"

# The workspace as the working tree has it (tracked files, and new ones git does not
# ignore), without target/; a tracked file deleted in the working tree is left out.
git ls-files -z --cached --others --exclude-standard | grep -zv '^target/' |
  while IFS= read -r -d '' f; do if [ -e "$f" ]; then printf '%s\0' "$f"; fi; done |
  xargs -0 cp --parents -t "$work/tree"
(cd "$work/tree" && cargo update 2>&1 | sed 's/^/  newest: /')

cat >"$work/user/Cargo.toml" <<TOML
[package]
name = "newest-deps-user"
version = "0.1.0"
edition = "2021"
publish = false

[dependencies]
tryvox-core = { path = "$work/tree/core" }

[workspace]
TOML
cat >"$work/user/src/main.rs" <<'RS'
fn main() {
    let c = tryvox_core::Client::new("AC123456", "tvx_sk_newest_deps").unwrap();
    assert!(c.hangup("../not-an-id").is_err());
}
RS
echo "newest-deps: a new project depending on tryvox-core, RUSTFLAGS=-D warnings"
(cd "$work/user" && RUSTFLAGS="-D warnings" cargo build --quiet && RUSTFLAGS="-D warnings" cargo run --quiet)
echo "newest-deps: the workspace after cargo update: clippy --all-targets -D warnings"
(cd "$work/tree" && cargo clippy --quiet --workspace --all-targets -- -D warnings)
echo "newest-deps: ok"
