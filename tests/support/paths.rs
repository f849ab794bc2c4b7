//! The three ways to hang up (`hangup`, `hangup_async`, `hangup_many`) for the tests that
//! check each of them against the same server.

use std::sync::mpsc;

use tryvox_core::{Client, HangupResult};

#[derive(Clone, Copy, Debug)]
pub enum Path {
    Sync,
    Async,
    Bulk,
}

pub const PATHS: [Path; 3] = [Path::Sync, Path::Async, Path::Bulk];

/// Runs `check` on each path, every path even when one fails, and fails with what each
/// failing path said (so a run shows which of the three paths have the fault).
pub fn each_path(check: impl Fn(Path)) {
    let failed: Vec<String> = PATHS
        .iter()
        .filter_map(|&path| {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(path)))
                .err()
                .map(|e| {
                    let why = e
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_default();
                    format!("{path:?}: {why}")
                })
        })
        .collect();
    assert!(
        failed.is_empty(),
        "failed on {} path(s):\n{}",
        failed.len(),
        failed.join("\n")
    );
}

/// The hangups of `ids` one after the other on `path` (bulk: one in flight).
pub fn run(c: &Client, path: Path, ids: &[&str]) -> Vec<HangupResult> {
    match path {
        Path::Sync => ids.iter().map(|id| c.hangup(id)).collect(),
        Path::Async => ids
            .iter()
            .map(|id| {
                let (tx, rx) = mpsc::channel();
                c.hangup_async(id.to_string(), move |_, r| {
                    let _ = tx.send(r);
                })
                .unwrap();
                rx.recv().unwrap()
            })
            .collect(),
        Path::Bulk => c.hangup_many(ids, 1).unwrap(),
    }
}
