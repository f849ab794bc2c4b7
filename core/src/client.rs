//! `Client`, the public API: credentials, settings and the route to the API; the hangup
//! operation with its retry loop (the rules are in `retry.rs`, one attempt in
//! `attempt.rs`, driven on the caller's thread by `blocking.rs`), and the asynchronous
//! form, handed to the client's event-driven engine (`engine.rs`; bulk is in `bulk.rs`).

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ureq_proto::http::{HeaderValue, Uri};

use crate::attempt::Attempt;
use crate::blocking::IdleStack;
use crate::bulk;
use crate::conn::Route;
use crate::engine::{Engine, Work};
use crate::error::{Error, Status};
use crate::options::{LogFn, LogLevel, Options};
use crate::pool::{WorkerPool, MAX_WORKERS};
use crate::process::PerProcess;
use crate::resolve::{system_lookup, AddressBook};
use crate::retry::{self, Decision, Failure, Stop};
use crate::secret::ApiKey;
use crate::stats::{Recorder, RetryCause, Stats};
use crate::timers::{Fire, ScheduledHangup, Timers};
use crate::validate;

/// The outcome of one hangup: the HTTP status of the success (204 from the API), or why
/// the call could not be hung up.
pub type HangupResult = Result<u16, Error>;

/// A TryVox client for one account. Cheap to share: `&Client` may be used from any number
/// of threads at once.
pub struct Client {
    pub(crate) core: Arc<Core>,
    /// The client's threads and the work queued on them, of this process: in a forked
    /// child, fresh ones (`process.rs`).
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

/// Everything a hangup needs; shared with the engine.
pub(crate) struct Core {
    pub(crate) route: Route,
    pub(crate) book: Arc<AddressBook>,
    /// Keep-alive connections of the caller's-thread path.
    pub(crate) idle: IdleStack,
    /// `{base}/v1/voice/accounts/{auth_id}/calls/`
    pub(crate) calls_url: String,
    pub(crate) key: ApiKey,
    pub(crate) tenant: Option<HeaderValue>,
    pub(crate) user_agent: HeaderValue,
    pub(crate) timeout: Duration,
    pub(crate) connect_timeout: Duration,
    max_retries: u32,
    /// The engine's connections to the server at once (a bulk call's larger
    /// `max_parallel` excepted).
    pub(crate) max_connections: usize,
    log: Option<LogFn>,
    log_queue: PerProcess<std::sync::Mutex<LogQueue>>,
    pub(crate) stats: Arc<Recorder>,
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
        crate::process::init();
        options.check_transport_security()?;

        let mut ua = format!("libtryvox/{}", env!("CARGO_PKG_VERSION"));
        if let Some(p) = &options.user_agent {
            ua.push(' ');
            ua.push_str(p);
        }
        let user_agent = HeaderValue::from_str(&ua)
            .map_err(|_| Error::invalid("the user agent is not a valid header value"))?;
        let base: Uri = options
            .base_url
            .parse()
            .map_err(|_| Error::invalid("bad base URL"))?;
        let proxy: Option<Uri> = match &options.proxy {
            Some(p) => Some(p.parse().map_err(|_| Error::invalid("bad proxy URL"))?),
            None => None,
        };
        let ca = match &options.ca_file {
            Some(path) => Some(crate::options::read_ca_file(path)?),
            None => None,
        };
        let roots = || {
            let roots =
                crate::trust::roots(options.trust_store, ca.as_deref()).map_err(
                    |e| match &options.ca_file {
                        Some(path) => {
                            Error::new(e.status(), format!("{} ({})", e.message(), path.display()))
                        }
                        None => e,
                    },
                )?;
            // Which roots a client trusts is the first thing an administrator asks when a
            // certificate is refused.
            if let Some(log) = &options.log {
                log(LogLevel::Info, &format!("TLS: trusting {}", roots.source));
                if let Some(w) = &roots.warning {
                    log(LogLevel::Warn, &format!("TLS: {w}"));
                }
            }
            Ok(roots.store)
        };
        let route = Route::new(&base, proxy.as_ref(), roots)?;
        let book = Arc::new(AddressBook::new(
            options.lookup.clone().unwrap_or_else(system_lookup),
        ));
        let stats = Arc::new(Recorder::default());
        let tenant = match &options.tenant_id {
            Some(t) => Some(
                HeaderValue::from_str(t)
                    .map_err(|_| Error::invalid("tenant id is not a valid header value"))?,
            ),
            None => None,
        };
        let core = Arc::new(Core {
            route,
            book,
            idle: IdleStack::default(),
            calls_url: format!("{}/v1/voice/accounts/{auth_id}/calls/", options.base_url),
            key: ApiKey::new(api_key),
            tenant,
            user_agent,
            timeout: options.timeout,
            connect_timeout: options.connect_timeout,
            max_retries: options.max_retries,
            max_connections: options.max_connections,
            log: options.log.clone(),
            log_queue: Default::default(),
            stats,
        });
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
        submit_async(&self.rt().engine, call_uuid, done).map_err(|(why, _)| {
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
        let (engine, pool) = (Arc::clone(&rt.engine), Arc::clone(&rt.pool));
        let fire: Fire = Box::new(move |now: bool| {
            let busy = |why: &str| {
                Err(Error::busy(format!(
                    "the scheduled hangup was not sent: {why}"
                )))
            };
            let (id, done) = if now {
                match submit_async(&engine, call_uuid, done) {
                    Ok(()) => return,
                    Err((why, (id, done))) => {
                        let r = busy(&why);
                        (id, Box::new(move |id: I| done(id, r)) as Deliver<I>)
                    }
                }
            } else {
                let r = busy("the client was freed before its time");
                (call_uuid, Box::new(move |id: I| done(id, r)) as Deliver<I>)
            };
            // Delivered through the callback pool like any outcome; if no thread can take
            // it, here (the timer thread, or the thread dropping the client).
            let slot = Arc::new(std::sync::Mutex::new(Some((id, done))));
            let theirs = Arc::clone(&slot);
            let take = |s: &std::sync::Mutex<Option<(I, Deliver<I>)>>| {
                s.lock().unwrap_or_else(|e| e.into_inner()).take()
            };
            let queued = pool.submit(Box::new(move || {
                if let Some((id, done)) = take(&theirs) {
                    done(id);
                }
            }));
            if queued.is_err() {
                if let Some((id, done)) = take(&slot) {
                    done(id);
                }
            }
        });
        rt.timers.schedule(at, fire).map_err(|fire| {
            drop(fire);
            Error::busy("the hangup was not scheduled: the client is being freed; nothing was sent")
        })
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

impl Core {
    /// The engine's queued log lines, of this process (a forked child's start empty).
    fn log_queue(&self) -> &std::sync::Mutex<LogQueue> {
        self.log_queue.get(Default::default)
    }

    fn hangup(&self, call_uuid: &str) -> HangupResult {
        if let Err(e) = validate::id("call_uuid", call_uuid) {
            self.stats.finished(e.status(), std::time::Duration::ZERO);
            return Err(e);
        }
        self.hangup_valid(call_uuid)
    }

    /// The hangup proper, for an id that passed `validate::id`, counted in the client's
    /// statistics.
    fn hangup_valid(&self, call_uuid: &str) -> HangupResult {
        let _in_flight = self.stats.started();
        let start = Instant::now();
        let result = self.hangup_uncounted(call_uuid);
        let status = match &result {
            Ok(_) => Status::Ok,
            Err(e) => e.status(),
        };
        self.stats.finished(status, start.elapsed());
        result
    }

    fn hangup_uncounted(&self, call_uuid: &str) -> HangupResult {
        // Built once: every attempt of this hangup reuses it. Cannot fail for an id that
        // passed validation under a base URL that passed `Options::set_base_url`.
        let uri: Uri = format!("{}{}", self.calls_url, call_uuid)
            .parse()
            .map_err(|_| Error::internal("the request URL did not parse"))?;
        // Formatted only if a log line is written: no allocation per hangup for it.
        self.retrying(format_args!("hangup {call_uuid}"), true, |deadline| {
            self.stats.attempt();
            self.attempt(&uri, call_uuid, deadline)
        })
    }

    /// Runs `once` (one attempt, bounded by the deadline it is given) until it succeeds
    /// or the retry rules (`retry::decide`) stop, all within the client's one deadline.
    /// `what` names the operation in log lines; `counted`: retries go to the client's
    /// statistics (hangups, not listings).
    pub(crate) fn retrying<T>(
        &self,
        what: std::fmt::Arguments<'_>,
        counted: bool,
        once: impl FnMut(Instant) -> Attempt<T>,
    ) -> Result<T, Error> {
        self.retrying_until(what, counted, None, once)
    }

    /// As `retrying`, ending by `cap` too when one is given (a sweep's deadline: every
    /// request of a sweep ends by it, whatever the client's timeout).
    pub(crate) fn retrying_until<T>(
        &self,
        what: std::fmt::Arguments<'_>,
        counted: bool,
        cap: Option<Instant>,
        mut once: impl FnMut(Instant) -> Attempt<T>,
    ) -> Result<T, Error> {
        let start = Instant::now();
        let deadline = later(start, self.timeout);
        let deadline = cap.map_or(deadline, |cap| deadline.min(cap));
        let mut retries = 0;
        loop {
            if Instant::now() >= deadline {
                return Err(self.deadline_error(start));
            }
            let t0 = Instant::now();
            let attempt = once(deadline);
            let err = match attempt.result {
                Ok(v) => return Ok(v),
                Err(e) => e,
            };
            let wait = self.after_failure(
                what,
                counted,
                err,
                attempt.failure,
                retries,
                deadline,
                t0.elapsed(),
            )?;
            std::thread::sleep(wait);
            retries += 1;
        }
    }

    /// After attempt number `retries` (0 for the first) failed with `err`: the wait before
    /// the next one (the retry counted and logged), or the final error (logged). The one
    /// place the retry rules are applied, for the caller's thread and the engine alike.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn after_failure(
        &self,
        what: std::fmt::Arguments<'_>,
        counted: bool,
        err: Error,
        failure: Failure,
        retries: u32,
        deadline: Instant,
        took: Duration,
    ) -> Result<Duration, Error> {
        let left = deadline.saturating_duration_since(Instant::now());
        let decision = retry::decide(
            failure,
            retries,
            self.max_retries,
            left,
            took,
            retry::jitter(),
        );
        let wait = match decision {
            Decision::RetryAfter(wait) => wait,
            Decision::Stop(why) => {
                let err = match why {
                    Stop::Final => err,
                    Stop::RetriesSpent if retries == 0 => err,
                    Stop::RetriesSpent => err.append(&format!(
                        "; gave up after {retries} {}",
                        if retries == 1 { "retry" } else { "retries" }
                    )),
                    Stop::NoTime { wait } => err.append(&format!(
                        "; a retry in {} ms would not fit in the {} ms left of the {} ms deadline",
                        wait.as_millis(),
                        left.as_millis(),
                        self.timeout.as_millis()
                    )),
                };
                self.log(LogLevel::Info, || format!("{what}: {}", err.message()));
                return Err(err);
            }
        };
        if counted {
            self.stats.retry(match failure {
                Failure::RateLimited { .. } => RetryCause::RateLimited,
                Failure::Unavailable => RetryCause::ServerError,
                Failure::Connection | Failure::Final => RetryCause::Connection,
            });
        }
        self.log(LogLevel::Warn, || {
            format!(
                "{what}: {}; retry {} of {} in {} ms",
                err.message(),
                retries + 1,
                self.max_retries,
                wait.as_millis()
            )
        });
        Ok(wait)
    }

    pub(crate) fn deadline_error(&self, start: Instant) -> Error {
        Error::new(
            Status::Timeout,
            format!(
                "no outcome within the {} ms deadline ({} ms elapsed)",
                self.timeout.as_millis(),
                start.elapsed().as_millis()
            ),
        )
    }

    /// Writes a log line: on the caller's thread at once; on the engine's thread, never
    /// (a log function that blocks, or calls into the library, would stall or deadlock
    /// every async and bulk hangup): the line is queued, in order, and the engine hands
    /// the queue to a callback thread (`Core::drain_log`).
    pub(crate) fn log(&self, level: LogLevel, message: impl FnOnce() -> String) {
        let Some(f) = &self.log else { return };
        if crate::engine::on_engine_thread() {
            let mut q = self.log_queue().lock().unwrap_or_else(|e| e.into_inner());
            if q.lines.len() < MAX_QUEUED_LOG_LINES {
                q.lines.push_back((level, message()));
                q.pushed += 1;
            } else {
                q.dropped += 1;
            }
            return;
        }
        f(level, &message());
    }

    /// True (and marked) if queued log lines need a drainer scheduled: none is queued or
    /// running. `false` after `true` means the scheduling failed: unmark.
    pub(crate) fn schedule_log_drain(&self, mark: bool) -> bool {
        let mut q = self.log_queue().lock().unwrap_or_else(|e| e.into_inner());
        if !mark {
            q.scheduled = false;
            return false;
        }
        if q.lines.is_empty() && q.dropped == 0 || q.scheduled || q.draining {
            return false;
        }
        q.scheduled = true;
        true
    }

    /// How many log lines the engine has queued so far: a mark for `drain_log_until`.
    pub(crate) fn log_mark(&self) -> u64 {
        self.log_queue()
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pushed
    }

    /// True if queued lines wait with no drainer running or scheduled.
    pub(crate) fn log_orphaned(&self) -> bool {
        let q = self.log_queue().lock().unwrap_or_else(|e| e.into_inner());
        let waiting = !q.lines.is_empty() || q.dropped > 0;
        waiting && !q.scheduled && !q.draining
    }

    /// Writes the queued log lines, in order, on this thread (a callback thread, or the
    /// engine's as it exits). One drainer at a time keeps the order.
    pub(crate) fn drain_log(&self) {
        self.drain_log_until(None);
    }

    /// As `drain_log`, stopping once the lines queued before `mark` are written: a
    /// thread that holds callbacks or a bulk caller does not take on a later burst.
    pub(crate) fn drain_log_until(&self, mark: Option<u64>) {
        let Some(f) = &self.log else { return };
        {
            let mut q = self.log_queue().lock().unwrap_or_else(|e| e.into_inner());
            q.scheduled = false;
            if q.draining {
                return;
            }
            q.draining = true;
        }
        loop {
            let (line, dropped) = {
                let mut q = self.log_queue().lock().unwrap_or_else(|e| e.into_inner());
                if mark.is_some_and(|m| q.popped >= m) {
                    q.draining = false;
                    return;
                }
                let dropped = std::mem::take(&mut q.dropped);
                let line = q.lines.pop_front();
                if line.is_none() && dropped == 0 {
                    q.draining = false;
                    return;
                }
                if line.is_some() {
                    q.popped += 1;
                }
                (line, dropped)
            };
            // A panicking log function loses its line, nothing else.
            let write = |level: LogLevel, text: &str| {
                let _ = std::panic::catch_unwind(AssertUnwindSafe(|| f(level, text)));
            };
            if dropped > 0 {
                write(
                    LogLevel::Warn,
                    &format!("{dropped} log lines were dropped: the log function is slower than the engine"),
                );
            }
            if let Some((level, text)) = line {
                write(level, &text);
            }
        }
    }
}

/// `from + d`; a `d` past what the clock can add (a Rust caller's `Duration::MAX` for
/// "no limit") is taken as a century instead of panicking.
pub(crate) fn later(from: Instant, d: Duration) -> Instant {
    const CENTURY: Duration = Duration::from_secs(100 * 365 * 86_400);
    from.checked_add(d.min(CENTURY)).unwrap_or(from)
}

/// `now + d`, as [`later`].
pub(crate) fn deadline_after(d: Duration) -> Instant {
    later(Instant::now(), d)
}

/// Log lines queued by the engine beyond this are counted, not kept.
const MAX_QUEUED_LOG_LINES: usize = 10_000;

/// The engine's log lines, waiting for a callback thread.
#[derive(Default)]
pub(crate) struct LogQueue {
    lines: std::collections::VecDeque<(LogLevel, String)>,
    dropped: u64,
    /// Lines ever queued, and ever taken out to be written.
    pushed: u64,
    popped: u64,
    scheduled: bool,
    draining: bool,
}

/// A scheduled hangup's callback with its outcome bound, waiting for its id.
type Deliver<I> = Box<dyn FnOnce(I) + Send>;

/// Hands one async hangup to the engine; refused, the id and callback come back.
#[allow(clippy::type_complexity)]
fn submit_async<I, F>(engine: &Engine, call_uuid: I, done: F) -> Result<(), (String, (I, F))>
where
    I: AsRef<str> + Send + 'static,
    F: FnOnce(I, HangupResult) + Send + 'static,
{
    // The id travels with its callback; if the engine refuses the work it is taken back.
    let id = call_uuid.as_ref().to_owned();
    let slot = Arc::new(std::sync::Mutex::new(Some((call_uuid, done))));
    let theirs = Arc::clone(&slot);
    let work = Work::One {
        id,
        done: Box::new(move |result| {
            let taken = theirs.lock().unwrap_or_else(|e| e.into_inner()).take();
            if let Some((id, done)) = taken {
                done(id, result);
            }
        }),
    };
    match engine.submit(work) {
        Ok(()) => Ok(()),
        Err((why, work)) => {
            drop(work);
            let back = slot.lock().unwrap_or_else(|e| e.into_inner()).take();
            match back {
                Some(pair) => Err((why, pair)),
                None => Ok(()), // cannot happen: the callback never ran
            }
        }
    }
}
