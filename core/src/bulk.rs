//! `hangup_many`: a batch of hangups with bounded parallelism, run by the client's
//! engine beside (never behind) its async queue; the caller's thread waits for the
//! outcomes.

use std::sync::mpsc;
use std::time::Instant;

use crate::client::HangupResult;
use crate::engine::{Engine, Work};
use crate::error::Error;
use crate::validate;

/// `hangup_many` parallelism when the caller passes 0.
pub const DEFAULT_PARALLEL: usize = 32;

/// The most hangups one `hangup_many` call has in flight: larger `max_parallel` values
/// are capped here. Each in-flight hangup holds a connection (a file descriptor): a
/// process that uses the limit needs about this many descriptors free.
pub const MAX_PARALLEL: usize = 1024;

/// Hangs up every id with at most `max_parallel` requests in flight (0 means
/// [`DEFAULT_PARALLEL`]), returning each outcome in order. If any id is invalid, nothing
/// is sent and the error names the first bad one; called from a callback while the client
/// is being dropped, nothing is sent and the error is `Status::Busy`.
pub(crate) fn hangup_many<S: AsRef<str>>(
    engine: &Engine,
    call_uuids: &[S],
    max_parallel: usize,
) -> Result<Vec<HangupResult>, Error> {
    for (i, id) in call_uuids.iter().enumerate() {
        validate::id("call_uuid", id.as_ref())
            .map_err(|e| Error::invalid(format!("call_uuids[{i}]: {}", e.message())))?;
    }
    let results = run_batch(engine, call_uuids, max_parallel, None).map_err(|why| {
        Error::busy(format!(
            "the hangups were not started: {why}; nothing was sent"
        ))
    })?;
    Ok(results
        .into_iter()
        .map(|r| r.unwrap_or_else(|| Err(Error::internal("hangup did not run"))))
        .collect())
}

/// Runs the hangups of validated ids on the engine, at most `max_parallel` at once; none
/// is started after `stop_at` (a sweep's deadline): those come back as None. Refused
/// (nothing sent) while the client is being dropped.
pub(crate) fn run_batch<S: AsRef<str>>(
    engine: &Engine,
    call_uuids: &[S],
    max_parallel: usize,
    stop_at: Option<Instant>,
) -> Result<Vec<Option<HangupResult>>, String> {
    let n = call_uuids.len();
    let mut out: Vec<Option<HangupResult>> = (0..n).map(|_| None).collect();
    if n == 0 {
        return Ok(out);
    }
    let max = if max_parallel == 0 {
        DEFAULT_PARALLEL
    } else {
        max_parallel.min(MAX_PARALLEL)
    }
    .min(descriptor_budget())
    .min(n);
    let (tx, rx) = mpsc::channel();
    let ids = call_uuids.iter().map(|s| s.as_ref().to_owned()).collect();
    engine
        .submit(Work::Batch {
            ids,
            max,
            stop_at,
            results: tx,
        })
        .map_err(|(why, _)| why)?;
    // All outcomes at once, when the last is in. The channel closes without them only
    // if the engine thread itself was lost: every id is then reported as not run.
    if let Ok(all) = rx.recv() {
        for (slot, r) in out.iter_mut().zip(all) {
            *slot = r;
        }
    }
    engine.write_queued_log();
    Ok(out)
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
