//! `hangup_many`: a batch of hangups with bounded parallelism, run by the caller's
//! thread and threads of the batch's own.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use crate::client::{Core, HangupResult};
use crate::error::Error;
use crate::pool::{WorkerPool, WORKER_STACK};
use crate::validate;

/// `hangup_many` parallelism when the caller passes 0.
pub const DEFAULT_PARALLEL: usize = 32;

/// The most hangups one `hangup_many` call has in flight: larger `max_parallel` values
/// are capped here. Each in-flight hangup holds a thread and a connection (a file
/// descriptor): a process that uses the limit needs about this many descriptors free.
pub const MAX_PARALLEL: usize = 1024;

/// Hangs up every id with at most `max_parallel` requests in flight (0 means
/// [`DEFAULT_PARALLEL`]), returning each outcome in order. If any id is invalid, nothing
/// is sent and the error names the first bad one; called from a callback while the client
/// is being dropped, nothing is sent and the error is `Status::Busy`.
pub(crate) fn hangup_many<S: AsRef<str> + Sync>(
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
    Ok(run_batch(core, call_uuids, max_parallel, None)
        .into_iter()
        .map(|r| r.unwrap_or_else(|| Err(Error::internal("hangup did not run"))))
        .collect())
}

/// Runs the hangups of validated ids, at most `max_parallel` at once; none is started
/// after `stop_at` (a sweep's deadline): those come back as None.
pub(crate) fn run_batch<S: AsRef<str> + Sync>(
    core: &Arc<Core>,
    call_uuids: &[S],
    max_parallel: usize,
    stop_at: Option<Instant>,
) -> Vec<Option<HangupResult>> {
    let n = call_uuids.len();
    let runners = if max_parallel == 0 {
        DEFAULT_PARALLEL
    } else {
        max_parallel
    }
    .min(MAX_PARALLEL)
    .min(n)
    .min(descriptor_budget());
    let batch = Batch {
        ids: call_uuids,
        next: AtomicUsize::new(0),
        results: (0..n).map(|_| OnceLock::new()).collect(),
        stop_at,
    };
    // The batch has its own runners: the caller's thread and `runners - 1` scoped
    // threads, all joined before this returns. Nothing waits for the client's worker
    // pool, so a bulk call never queues behind async backlog, and callbacks that call
    // this cannot deadlock on busy workers. A thread that cannot start only lowers the
    // parallelism.
    std::thread::scope(|scope| {
        for _ in 1..runners {
            let started = std::thread::Builder::new()
                .name("tryvox-bulk".into())
                .stack_size(WORKER_STACK)
                .spawn_scoped(scope, || batch.run(core));
            if started.is_err() {
                break;
            }
        }
        batch.run(core);
    });
    batch
        .results
        .into_iter()
        .map(OnceLock::into_inner)
        .collect()
}

/// How many hangups may be in flight for the descriptors this process has free: each
/// holds a connection. Half of what is free (the host needs some too), at least one.
fn descriptor_budget() -> usize {
    #[cfg(unix)]
    if let Some(free) = crate::transport::free_descriptors() {
        return (free / 2).max(1);
    }
    usize::MAX
}

/// One `hangup_many` call: runners take the next index until none is left.
struct Batch<'a, S> {
    ids: &'a [S],
    next: AtomicUsize,
    results: Vec<OnceLock<HangupResult>>,
    stop_at: Option<Instant>,
}

impl<S: AsRef<str>> Batch<'_, S> {
    fn run(&self, core: &Core) {
        loop {
            if self.stop_at.is_some_and(|t| Instant::now() >= t) {
                return;
            }
            let i = self.next.fetch_add(1, Ordering::Relaxed);
            let Some(id) = self.ids.get(i) else { return };
            let _ = self.results[i].set(core.hangup_guarded(id.as_ref()));
        }
    }
}
