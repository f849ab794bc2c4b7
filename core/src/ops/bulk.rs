//! `hangup_many`: a batch of hangups with bounded parallelism, run by the client's
//! engine beside (never behind) its async queue; the caller's thread waits for the
//! outcomes.

use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use crate::contract::error::Error;
use crate::contract::error::HangupResult;
use crate::contract::validate;
use crate::engine::{BatchControl, Engine, Reply, Work};

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
    let (tx, rx) = mpsc::channel();
    submit(
        engine,
        call_uuids,
        max_parallel,
        stop_at,
        Reply::AtEnd(tx),
        None,
    )?;
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

/// How often a streamed batch's caller hears from it when no outcome arrives (a progress
/// bar's refresh, a stop flag's check).
pub(crate) const TICK: Duration = Duration::from_millis(50);

/// What a streamed batch hands its caller.
pub(crate) enum Streamed {
    /// `ids[index]`'s outcome (None: not started, `stop_at` passed or `control` said stop).
    Outcome(usize, Option<HangupResult>),
    /// No outcome for a [`TICK`].
    Tick,
}

/// Runs the hangups of validated ids on the engine as `run_batch` does, steered by
/// `control` (stop, rate, parallelism lowered on 429), and hands each outcome to `on` on
/// this thread as it comes, with a [`Streamed::Tick`] whenever none came for a [`TICK`].
/// A stop set in `control` (by `on` or anyone) is seen by the engine at once. Refused
/// (nothing sent) while the client is being dropped.
pub(crate) fn run_streamed<S: AsRef<str>>(
    engine: &Engine,
    call_uuids: &[S],
    max_parallel: usize,
    stop_at: Option<Instant>,
    control: &Arc<BatchControl>,
    mut on: impl FnMut(Streamed),
) -> Result<(), String> {
    let n = call_uuids.len();
    if n == 0 {
        return Ok(());
    }
    let (tx, rx) = mpsc::channel();
    let steer = Some(Arc::clone(control));
    submit(
        engine,
        call_uuids,
        max_parallel,
        stop_at,
        Reply::Each(tx),
        steer,
    )?;
    let mut got = vec![false; n];
    let mut left = n;
    let mut nudged = false;
    let mut last = Instant::now();
    // `on` runs the caller's code (a sweep's observer), which may fork: in the child the
    // batch is the parent's, run by an engine thread that does not exist there, and its
    // outcomes never come. The child stops waiting; what did not come was not run here.
    let generation = crate::host::process::generation();
    let mut forked = false;
    while left > 0 {
        match rx.recv_timeout(TICK.saturating_sub(last.elapsed())) {
            Ok((index, result)) => {
                if index < n && !std::mem::replace(&mut got[index], true) {
                    left -= 1;
                    on(Streamed::Outcome(index, result));
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            // The engine thread itself was lost: what did not come was not run.
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
        if last.elapsed() >= TICK {
            last = Instant::now();
            on(Streamed::Tick);
        }
        if crate::host::process::generation() != generation {
            forked = true;
            break;
        }
        if !nudged && control.stop.load(Ordering::Relaxed) {
            nudged = true;
            engine.nudge();
        }
    }
    for (index, done) in got.iter().enumerate() {
        if !done {
            on(Streamed::Outcome(index, None));
        }
    }
    if !forked {
        engine.write_queued_log();
    }
    Ok(())
}

/// Hands a batch of (at least one) validated ids to the engine, its parallelism capped
/// by [`MAX_PARALLEL`], the descriptors free and the number of ids.
fn submit<S: AsRef<str>>(
    engine: &Engine,
    call_uuids: &[S],
    max_parallel: usize,
    stop_at: Option<Instant>,
    reply: Reply,
    control: Option<Arc<BatchControl>>,
) -> Result<(), String> {
    let max = if max_parallel == 0 {
        DEFAULT_PARALLEL
    } else {
        max_parallel.min(MAX_PARALLEL)
    }
    .min(descriptor_budget())
    .min(call_uuids.len());
    let ids = call_uuids.iter().map(|s| s.as_ref().to_owned()).collect();
    engine
        .submit(Work::Batch {
            ids,
            max,
            stop_at,
            reply,
            control,
        })
        .map_err(|(why, _)| why)
}

/// How many hangups may be in flight for the descriptors this process has free: each
/// holds a connection. Half of what is free (the host needs some too), at least one.
fn descriptor_budget() -> usize {
    #[cfg(unix)]
    if let Some(free) = crate::net::transport::free_descriptors() {
        return (free / 2).max(1);
    }
    usize::MAX
}
