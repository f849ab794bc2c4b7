//! `hangup_many`: a batch of hangups with bounded parallelism, run by the caller's
//! thread with helpers from the client's worker pool.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};

use crate::client::{Core, HangupResult};
use crate::error::Error;
use crate::pool::{WorkerPool, MAX_WORKERS};
use crate::validate;

/// `hangup_many` parallelism when the caller passes 0.
pub const DEFAULT_PARALLEL: usize = 32;

/// Hangs up every id with at most `max_parallel` requests in flight (0 means
/// [`DEFAULT_PARALLEL`]), returning each outcome in order. If any id is invalid, nothing
/// is sent and the error names the first bad one; called from a callback while the client
/// is being dropped, nothing is sent and the error is `Status::Busy`.
pub(crate) fn hangup_many<S: AsRef<str>>(
    core: &Arc<Core>,
    pool: &WorkerPool,
    call_uuids: &[S],
    max_parallel: usize,
) -> Result<Vec<HangupResult>, Error> {
    for (i, id) in call_uuids.iter().enumerate() {
        validate::id("call_uuid", id.as_ref())
            .map_err(|e| Error::invalid(format!("call_uuids[{i}]: {}", e.message())))?;
    }
    // Only a callback can call in while the client is being freed. Its helpers could not
    // be queued, so the batch would run one id at a time while free waits for it: refused
    // instead, as an async hangup is.
    if pool.is_shutting_down() {
        return Err(Error::busy(
            "the hangups were not started: the client is being freed; nothing was sent",
        ));
    }
    let ids: Arc<Vec<String>> =
        Arc::new(call_uuids.iter().map(|s| s.as_ref().to_owned()).collect());
    let n = ids.len();
    let runners = if max_parallel == 0 {
        DEFAULT_PARALLEL
    } else {
        max_parallel
    }
    .min(MAX_WORKERS + 1)
    .min(n);
    let batch = Arc::new(Batch {
        ids,
        next: AtomicUsize::new(0),
        results: (0..n).map(|_| OnceLock::new()).collect(),
        completed: Mutex::new(0),
        all_done: Condvar::new(),
    });
    // Helpers on the pool speed the batch up but are never waited for: the caller's
    // thread runs too, and then waits only for hangups already in flight. A helper
    // that starts late (every worker busy, e.g. in callbacks that themselves call
    // this) finds nothing left and returns, so no wait depends on a free worker.
    for _ in 1..runners {
        let (b, core) = (Arc::clone(&batch), Arc::clone(core));
        if pool.submit(Box::new(move || b.run(&core))).is_err() {
            break;
        }
    }
    batch.run(core);
    batch.wait_all();
    Ok(batch
        .results
        .iter()
        .map(|r| {
            r.get()
                .cloned()
                .unwrap_or_else(|| Err(Error::internal("hangup did not run")))
        })
        .collect())
}

/// One `hangup_many` call: runners take the next index until none is left.
struct Batch {
    ids: Arc<Vec<String>>,
    next: AtomicUsize,
    results: Vec<OnceLock<HangupResult>>,
    /// How many results are set; `all_done` fires when it reaches `ids.len()`.
    completed: Mutex<usize>,
    all_done: Condvar,
}

impl Batch {
    fn run(&self, core: &Core) {
        loop {
            let i = self.next.fetch_add(1, Ordering::Relaxed);
            let Some(id) = self.ids.get(i) else { return };
            let _ = self.results[i].set(core.hangup_guarded(id));
            let mut done = self.completed.lock().unwrap_or_else(|e| e.into_inner());
            *done += 1;
            if *done == self.ids.len() {
                self.all_done.notify_all();
            }
        }
    }

    /// Blocks until every id has its result. Called after the caller's own `run`
    /// returned, so every index is taken: what remains is in flight on a running
    /// thread, each bounded by its deadline.
    fn wait_all(&self) {
        let mut done = self.completed.lock().unwrap_or_else(|e| e.into_inner());
        while *done < self.ids.len() {
            done = self.all_done.wait(done).unwrap_or_else(|e| e.into_inner());
        }
    }
}
