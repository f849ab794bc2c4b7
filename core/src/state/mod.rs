//! The state every path of a client shares: credentials, the route to the API, settings,
//! statistics and the engine's log queue ([`Core`]), and the retry loop that drives one
//! operation's attempts within the client's deadline (the rules are in `policy::retry`).

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ureq_proto::http::{HeaderValue, Uri};

use crate::contract::error::{Error, Status};
use crate::contract::options::{LogFn, LogLevel, Options};
use crate::contract::secret::ApiKey;
use crate::contract::stats::{Recorder, RetryCause};
use crate::host::process::PerProcess;
use crate::net::conn::Route;
use crate::net::idle::IdleStack;
use crate::net::resolve::{system_lookup, AddressBook};
use crate::policy::retry::{self, later, Decision, Failure, Stop};

pub(crate) mod attempt;

use attempt::Attempt;

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

impl Core {
    /// The shared state of a client for `auth_id`, from `options` (already checked).
    pub(crate) fn new(auth_id: &str, api_key: &str, options: &Options) -> Result<Core, Error> {
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
            Some(path) => Some(crate::contract::options::read_ca_file(path)?),
            None => None,
        };
        let roots = || {
            let roots =
                crate::net::trust::roots(options.trust_store, ca.as_deref()).map_err(|e| {
                    match &options.ca_file {
                        Some(path) => {
                            Error::new(e.status(), format!("{} ({})", e.message(), path.display()))
                        }
                        None => e,
                    }
                })?;
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
        Ok(Core {
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
        })
    }
}

impl Core {
    /// The engine's queued log lines, of this process (a forked child's start empty).
    fn log_queue(&self) -> &std::sync::Mutex<LogQueue> {
        self.log_queue.get(Default::default)
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
        if crate::host::pool::on_engine_thread() {
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
