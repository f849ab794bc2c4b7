//! `Client`, the public API: a thin facade. Each method checks its arguments and calls
//! the layer that does the work: the caller's-thread hangup (`blocking`, its retry loop in
//! `state`, the rules in `policy::retry`), the engine for async hangups (`engine`), bulk
//! (`ops::bulk`), sweeps (`ops::sweep`) and scheduled hangups (`ops::scheduled`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::contract::error::{Error, HangupResult};
use crate::contract::options::Options;
use crate::contract::stats::Stats;
use crate::contract::validate;
use crate::engine::{self, Engine};
use crate::host::pool::{WorkerPool, MAX_WORKERS};
use crate::host::process::PerProcess;
use crate::ops::bulk;
use crate::ops::scheduled::{self, ScheduledHangup, Timers};
use crate::ops::sweep::{Progress, Sweep, SweepObserver, SweepReport, Sweeper};
use crate::state::Core;

/// A TryVox client for one account. Cheap to share: `&Client` may be used from any number
/// of threads at once.
pub struct Client {
    pub(crate) core: Arc<Core>,
    /// The client's threads and the work queued on them, of this process: in a forked
    /// child, fresh ones (`host::process`).
    rt: PerProcess<Runtime>,
}

/// What runs on the client's threads: none of it survives a fork.
pub(crate) struct Runtime {
    /// Runs async callbacks (never the loop's thread).
    pub(crate) pool: Arc<WorkerPool>,
    pub(crate) engine: Arc<Engine>,
    timers: Timers,
}

impl Runtime {
    fn new(core: &Arc<Core>) -> Runtime {
        let pool = Arc::new(WorkerPool::new(MAX_WORKERS));
        Runtime {
            engine: Arc::new(Engine::new(Arc::clone(core), Arc::clone(&pool))),
            pool,
            timers: Timers::default(),
        }
    }
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("calls_url", &self.core.calls_url)
            .field("key", &self.core.key)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A client for `auth_id` with the default options (the production API over https).
    pub fn new(auth_id: &str, api_key: &str) -> Result<Client, Error> {
        Client::with_options(auth_id, api_key, &Options::default())
    }

    /// A client for `auth_id` with `options`, which are copied.
    pub fn with_options(auth_id: &str, api_key: &str, options: &Options) -> Result<Client, Error> {
        validate::id("auth_id", auth_id)?;
        validate::token("api_key", api_key.as_bytes())?;
        crate::host::init(crate::contract::stats::init);
        options.check_transport_security()?;

        let core = Arc::new(Core::new(auth_id, api_key, options)?);
        Ok(Client {
            rt: PerProcess::new(Runtime::new(&core)),
            core,
        })
    }

    /// This process's threads and queues: after a fork, the child's first use starts
    /// fresh ones (the parent's are not the child's: its threads do not exist there).
    #[inline]
    pub(crate) fn rt(&self) -> &Runtime {
        self.rt.get(|| Runtime::new(&self.core))
    }

    /// What the client has done so far: hangups by status, attempts, retries by cause,
    /// hangups in flight, connections, latency percentiles. Counters only grow (diff two
    /// snapshots for a window); taking one costs no lock on the hangup path.
    pub fn stats(&self) -> Stats {
        self.core.stats.snapshot()
    }

    /// Hangs up `call_uuid`, blocking until an outcome or the deadline.
    pub fn hangup(&self, call_uuid: &str) -> HangupResult {
        self.core.hangup(call_uuid)
    }

    /// Hands a hangup to the client's engine and returns at once (the caller's thread
    /// only validates and enqueues). `done` runs exactly once, on a callback thread (never
    /// the engine's; outcomes that complete together run there in order, so `done` should
    /// return quickly), with the caller's id (handed back as it was given: a `String`, an
    /// `Arc<str>`, a caller's own type) and the outcome, unless this returns an error (then
    /// it never runs). Dropping the client waits for every queued hangup.
    pub fn hangup_async<I, F>(&self, call_uuid: I, done: F) -> Result<(), Error>
    where
        I: AsRef<str> + Send + 'static,
        F: FnOnce(I, HangupResult) + Send + 'static,
    {
        validate::id("call_uuid", call_uuid.as_ref())?;
        engine::submit_async(&self.rt().engine, call_uuid, done).map_err(|(why, _)| {
            Error::busy(format!(
                "the hangup was not queued: {why}; nothing was sent"
            ))
        })
    }

    /// Schedules a hangup of `call_uuid` after `delay` (a call's maximum duration, a
    /// prepaid balance running out) and returns a handle that can cancel it until it
    /// fires. Pending hangups cost no thread each: one timer thread per client holds them
    /// all. When its time comes the hangup runs as [`Client::hangup_async`]'s would, and
    /// `done` runs exactly once with the outcome, unless [`ScheduledHangup::cancel`]
    /// returned true first. Dropping the client with the hangup still pending delivers
    /// `done` once with `Status::Busy`, nothing sent.
    pub fn hangup_after<I, F>(
        &self,
        call_uuid: I,
        delay: Duration,
        done: F,
    ) -> Result<ScheduledHangup, Error>
    where
        I: AsRef<str> + Send + 'static,
        F: FnOnce(I, HangupResult) + Send + 'static,
    {
        validate::id("call_uuid", call_uuid.as_ref())?;
        let at = Instant::now()
            .checked_add(delay)
            .ok_or_else(|| Error::invalid("the delay is too long"))?;
        let rt = self.rt();
        scheduled::hangup_at(&rt.timers, &rt.engine, &rt.pool, at, call_uuid, done)
    }

    /// Hangs up every id with at most `max_parallel` requests in flight (0 means
    /// [`DEFAULT_PARALLEL`](crate::DEFAULT_PARALLEL); at most
    /// [`MAX_PARALLEL`](crate::MAX_PARALLEL)), returning each outcome in order. If any id
    /// is invalid, nothing is sent and the error names the first bad one.
    pub fn hangup_many<S: AsRef<str> + Sync>(
        &self,
        call_uuids: &[S],
        max_parallel: usize,
    ) -> Result<Vec<HangupResult>, Error> {
        bulk::hangup_many(&self.rt().engine, call_uuids, max_parallel)
    }

    /// Ends every live call of the account (within the client's tenant, if one is set),
    /// or those `sweep`'s filters select; see the module documentation for how. Returns
    /// the counts, and `Ok(())` only when a final listing found no live call; otherwise
    /// the error says why: TIMEOUT when the sweep's deadline passed (every request of the
    /// sweep ends by it); a listing's own failure; or, when only calls that could not be
    /// ended are left, one of their statuses chosen by a fixed order, so the same failures
    /// give the same status on every run: UNAUTHORIZED, FORBIDDEN, TLS_ERROR,
    /// PROTOCOL_ERROR, INVALID_ARGUMENT, INTERNAL_ERROR, SERVER_ERROR, RATE_LIMITED,
    /// NETWORK_ERROR, TIMEOUT, BUSY. Failures no later sweep cures and the caller must act
    /// on (the key, its rights, a server that is not the API, a bug) come first, then the
    /// passing ones from the most to the least telling (TIMEOUT says only that no answer
    /// came). Among calls of that status the smallest call id is reported: the error
    /// carries its HTTP status and server code, and its message counts the failures by
    /// status and quotes that call's.
    /// `progress` is called on this thread after each listing and each batch of hangups.
    pub fn hangup_all(
        &self,
        sweep: &Sweep,
        progress: Option<&mut dyn FnMut(&SweepReport)>,
    ) -> (SweepReport, Result<(), Error>) {
        self.hangup_all_observed(sweep, &mut Progress(progress))
    }

    /// [`Client::hangup_all`], telling `observer` of each call found and settled, of the
    /// counts at least every 50 ms, and asking it whether to stop. With
    /// `sweep.dry_run`, listings until one finds nothing new (at most 5): each live call
    /// is reported to `observer.listed` once, none is hung up, and the result is `Ok` with
    /// `still_live` the number found. Stopped
    /// (`observer.stop_requested`): no hangup starts after that, those in flight finish
    /// and are reported, and the error is BUSY ("the sweep was stopped").
    pub fn hangup_all_observed(
        &self,
        sweep: &Sweep,
        observer: &mut dyn SweepObserver,
    ) -> (SweepReport, Result<(), Error>) {
        self.sweeper(|s| s.hangup_all_observed(sweep, observer))
    }

    /// Hangs up exactly `call_uuids` (no listing), steered as a sweep is: at most
    /// `sweep.max_parallel` at once (lowered on 429 and raised again), at most
    /// `sweep.max_rate` started a second, none started after `sweep.timeout` (if any) or
    /// once `observer` asks to stop. Every id's outcome goes to `observer.settled` as it
    /// comes and is returned in the ids' order; an id never started has BUSY ("not sent:
    /// stopped") or TIMEOUT ("not sent: the deadline passed"). `found` is the number of
    /// ids, `still_live` those not started. Errors, with nothing sent: an invalid id (the
    /// first bad index named), filters or `dry_run` set (they belong to `hangup_all`), or
    /// BUSY while the client is being freed.
    pub fn hangup_each<S: AsRef<str>>(
        &self,
        call_uuids: &[S],
        sweep: &Sweep,
        observer: &mut dyn SweepObserver,
    ) -> (SweepReport, Result<Vec<HangupResult>, Error>) {
        self.sweeper(|s| s.hangup_each(call_uuids, sweep, observer))
    }

    /// Runs `f` with a sweep's view of this client. The engine is asked for at each use,
    /// never kept: an observer may fork, and the child's sweep must go on with the child's
    /// own engine, not the parent's (its thread does not exist there).
    fn sweeper<T>(&self, f: impl FnOnce(&Sweeper<'_>) -> T) -> T {
        let engine = || -> &Engine { &self.rt().engine };
        f(&Sweeper {
            core: &self.core,
            engine: &engine,
        })
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        // Scheduled hangups whose time has not come are not sent: each callback is
        // delivered once, with BUSY, through the pool. Then every queued hangup finishes
        // (each bounded by its deadline) and delivers its callback before the client is
        // gone.
        // In a forked child, the parent's (if the child never used the client) are left
        // alone: their threads do not exist here and their work is not the child's.
        if let Some(rt) = self.rt.current() {
            for fire in rt.timers.stop() {
                fire(false);
            }
            rt.engine.stop();
            rt.pool.shutdown();
        }
        // This process's keep-alive connections of the caller's-thread path close now:
        // in a forked child the `Core` outlives the client (the parent's leaked runtime
        // holds it), and with it the stack.
        self.core.idle.release();
    }
}
