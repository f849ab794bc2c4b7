//! `Client`, the public API: credentials, settings and one pooled HTTP agent; the hangup
//! operation with its retry loop (the rules are in `retry.rs`, one attempt in
//! `attempt.rs`), and the asynchronous form on the client's worker pool (bulk is in
//! `bulk.rs`).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ureq::http::{HeaderValue, Uri};
use ureq::tls::{Certificate, PemItem, RootCerts, TlsConfig};
use ureq::unversioned::transport::{ConnectProxyConnector, Connector, RustlsConnector};
use ureq::Agent;

use crate::attempt::Attempt;
use crate::bulk;
use crate::error::{Error, Status};
use crate::options::{LogFn, LogLevel, Options};
use crate::pool::{WorkerPool, MAX_WORKERS};
use crate::resolve::{system_lookup, AddressBook, BookResolver};
use crate::retry::{self, Decision, Failure, Stop};
use crate::secret::ApiKey;
use crate::stats::{Recorder, RetryCause, Stats};
use crate::timers::{Fire, ScheduledHangup, Timers};
use crate::validate;

/// The largest response head accepted; a larger one is `Status::ProtocolError`.
const MAX_HEAD: usize = 16 * 1024;

/// The outcome of one hangup: the HTTP status of the success (204 from the API), or why
/// the call could not be hung up.
pub type HangupResult = Result<u16, Error>;

/// A TryVox client for one account. Cheap to share: `&Client` may be used from any number
/// of threads at once, and they all share one connection pool.
pub struct Client {
    pub(crate) core: Arc<Core>,
    pub(crate) pool: Arc<WorkerPool>,
    timers: Timers,
}

/// Everything a hangup needs; shared with the worker pool's jobs.
pub(crate) struct Core {
    pub(crate) agent: Agent,
    /// `{base}/v1/voice/accounts/{auth_id}/calls/`
    pub(crate) calls_url: String,
    pub(crate) key: ApiKey,
    pub(crate) tenant: Option<HeaderValue>,
    timeout: Duration,
    max_retries: u32,
    log: Option<LogFn>,
    stats: Arc<Recorder>,
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
        options.check_transport_security()?;

        let mut ua = format!("libtryvox/{}", env!("CARGO_PKG_VERSION"));
        if let Some(p) = &options.user_agent {
            ua.push(' ');
            ua.push_str(p);
        }
        let proxy = match &options.proxy {
            Some(p) => Some(
                ureq::Proxy::new(p).map_err(|e| Error::invalid(format!("bad proxy URL: {e}")))?,
            ),
            None => None,
        };
        let mut tls = TlsConfig::builder();
        if let Some(path) = &options.ca_file {
            tls = tls.root_certs(load_roots(path)?);
        }
        let config = Agent::config_builder()
            .http_status_as_error(false)
            // A redirect is not part of the API; following one could carry the call
            // elsewhere. It is reported as a protocol error instead.
            .max_redirects(0)
            .user_agent(ua)
            // Deterministic: environment proxy variables are not consulted.
            .proxy(proxy)
            .tls_config(tls.build())
            .timeout_connect(Some(options.connect_timeout))
            // The first attempt has the whole budget; retries override it per request.
            .timeout_global(Some(options.timeout))
            // A hangup's request and response are a few hundred bytes: ureq's 128 KiB
            // default buffers per connection would cost memory and copying for nothing.
            // The read buffer must be larger than the head limit: with the two equal, a
            // head over the limit filled the buffer, the limit never fired, and the full
            // buffer read as a closed peer (NETWORK_ERROR, and the DELETE sent again).
            .input_buffer_size(MAX_HEAD + 4 * 1024)
            .output_buffer_size(8 * 1024)
            .max_response_header_size(MAX_HEAD)
            .max_idle_connections(2 * MAX_WORKERS)
            .max_idle_connections_per_host(2 * MAX_WORKERS)
            .build();
        // ureq's default chain, with our poll()-driven TCP transport (Unix) in place of
        // its own.
        let book = Arc::new(AddressBook::new(
            options.lookup.clone().unwrap_or_else(system_lookup),
        ));
        let stats = Arc::new(Recorder::default());
        #[cfg(unix)]
        let tcp = crate::transport::PollTcpConnector::new(Arc::clone(&book), Arc::clone(&stats));
        #[cfg(not(unix))]
        let tcp = ureq::unversioned::transport::TcpConnector::default();
        let connector =
            ().chain(ConnectProxyConnector::default())
                .chain(tcp)
                .chain(RustlsConnector::default());
        let agent = Agent::with_parts(config, connector, BookResolver(book));
        let tenant = match &options.tenant_id {
            Some(t) => Some(
                HeaderValue::from_str(t)
                    .map_err(|_| Error::invalid("tenant id is not a valid header value"))?,
            ),
            None => None,
        };
        Ok(Client {
            core: Arc::new(Core {
                agent,
                calls_url: format!("{}/v1/voice/accounts/{auth_id}/calls/", options.base_url),
                key: ApiKey::new(api_key),
                tenant,
                timeout: options.timeout,
                max_retries: options.max_retries,
                log: options.log.clone(),
                stats,
            }),
            pool: Arc::new(WorkerPool::new(MAX_WORKERS)),
            timers: Timers::default(),
        })
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

    /// Queues a hangup on the client's worker pool and returns at once. `done` runs exactly
    /// once, on a pool thread, with the caller's id (handed back as it was given: a
    /// `String`, an `Arc<str>`, a caller's own type) and the outcome, unless this returns
    /// an error (then it never runs). Dropping the client waits for every queued hangup.
    pub fn hangup_async<I, F>(&self, call_uuid: I, done: F) -> Result<(), Error>
    where
        I: AsRef<str> + Send + 'static,
        F: FnOnce(I, HangupResult) + Send + 'static,
    {
        validate::id("call_uuid", call_uuid.as_ref())?;
        let core = Arc::clone(&self.core);
        self.pool
            .submit(Box::new(move || {
                let result = core.hangup_guarded(call_uuid.as_ref());
                done(call_uuid, result);
            }))
            .map_err(|e| Error::busy(format!("the hangup was not queued: {e}; nothing was sent")))
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
        let (core, pool) = (Arc::clone(&self.core), Arc::clone(&self.pool));
        let fire: Fire = Box::new(move |now: bool| {
            // The request and its callback travel together; whoever runs takes them.
            let slot = Arc::new(std::sync::Mutex::new(Some((call_uuid, done))));
            let take = |slot: &std::sync::Mutex<Option<(I, F)>>| {
                slot.lock().unwrap_or_else(|e| e.into_inner()).take()
            };
            let theirs = Arc::clone(&slot);
            let queued = pool.submit(Box::new(move || {
                if let Some((id, done)) = take(&theirs) {
                    let result = if now {
                        core.hangup_guarded(id.as_ref())
                    } else {
                        Err(Error::busy(
                            "the scheduled hangup was not sent: the client was freed before its time",
                        ))
                    };
                    done(id, result);
                }
            }));
            if queued.is_err() {
                // No worker could take it (no thread could start): delivered here, on
                // the timer thread or the thread dropping the client.
                if let Some((id, done)) = take(&slot) {
                    done(
                        id,
                        Err(Error::busy(
                            "the scheduled hangup was not sent: no thread could take it",
                        )),
                    );
                }
            }
        });
        self.timers.schedule(at, fire).map_err(|fire| {
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
        bulk::hangup_many(&self.core, &self.pool, call_uuids, max_parallel)
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        // Scheduled hangups whose time has not come are not sent: each callback is
        // delivered once, with BUSY, through the pool. Then every queued hangup finishes
        // (each bounded by its deadline) and delivers its callback before the client is
        // gone.
        for fire in self.timers.stop() {
            fire(false);
        }
        self.pool.shutdown();
    }
}

impl Core {
    /// A hangup on a pool thread, of an id the caller has validated: a panic becomes
    /// `InternalError`, never a lost callback.
    pub(crate) fn hangup_guarded(&self, call_uuid: &str) -> HangupResult {
        let start = Instant::now();
        catch_unwind(AssertUnwindSafe(|| self.hangup_valid(call_uuid))).unwrap_or_else(|_| {
            let e = Error::caught_panic();
            self.stats.finished(e.status(), start.elapsed());
            Err(e)
        })
    }

    fn hangup(&self, call_uuid: &str) -> HangupResult {
        if let Err(e) = validate::id("call_uuid", call_uuid) {
            self.stats.finished(e.status(), std::time::Duration::ZERO);
            return Err(e);
        }
        self.hangup_valid(call_uuid)
    }

    /// The hangup proper, for an id that passed `validate::id` (async and bulk check
    /// theirs when they are queued, so workers do not check again), counted in the
    /// client's statistics.
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
        self.retrying(format_args!("hangup {call_uuid}"), true, |budget| {
            self.stats.attempt();
            self.attempt(&uri, call_uuid, budget)
        })
    }

    /// Runs `once` (one attempt, bounded by its budget: None for the first, which has the
    /// agent's whole timeout) until it succeeds or the retry rules (`retry::decide`) stop,
    /// all within the client's one deadline. `what` names the operation in log lines;
    /// `counted`: retries go to the client's statistics (hangups, not listings).
    pub(crate) fn retrying<T>(
        &self,
        what: std::fmt::Arguments<'_>,
        counted: bool,
        mut once: impl FnMut(Option<Duration>) -> Attempt<T>,
    ) -> Result<T, Error> {
        let start = Instant::now();
        let deadline = start + self.timeout;
        let mut retries = 0;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(self.deadline_error(start));
            }
            let budget = (retries > 0).then_some(left);
            let t0 = Instant::now();
            let attempt = once(budget);
            let err = match attempt.result {
                Ok(v) => return Ok(v),
                Err(e) => e,
            };
            let left = deadline.saturating_duration_since(Instant::now());
            let decision = retry::decide(
                attempt.failure,
                retries,
                self.max_retries,
                left,
                t0.elapsed(),
                retry::jitter(),
            );
            let wait = match decision {
                Decision::RetryAfter(wait) => {
                    if counted {
                        self.stats.retry(match attempt.failure {
                            Failure::RateLimited { .. } => RetryCause::RateLimited,
                            Failure::Unavailable => RetryCause::ServerError,
                            Failure::Connection | Failure::Final => RetryCause::Connection,
                        });
                    }
                    wait
                }
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
            self.log(LogLevel::Warn, || {
                format!(
                    "{what}: {}; retry {} of {} in {} ms",
                    err.message(),
                    retries + 1,
                    self.max_retries,
                    wait.as_millis()
                )
            });
            std::thread::sleep(wait);
            retries += 1;
        }
    }

    fn deadline_error(&self, start: Instant) -> Error {
        Error::new(
            Status::Timeout,
            format!(
                "no outcome within the {} ms deadline ({} ms elapsed)",
                self.timeout.as_millis(),
                start.elapsed().as_millis()
            ),
        )
    }

    pub(crate) fn log(&self, level: LogLevel, message: impl FnOnce() -> String) {
        if let Some(f) = &self.log {
            f(level, &message());
        }
    }
}

/// Reads the PEM file of trusted roots.
fn load_roots(path: &std::path::Path) -> Result<RootCerts, Error> {
    let pem = std::fs::read(path)
        .map_err(|e| Error::invalid(format!("cannot read CA file {}: {e}", path.display())))?;
    let certs: Vec<Certificate<'static>> = ureq::tls::parse_pem(&pem)
        .filter_map(|item| match item {
            Ok(PemItem::Certificate(c)) => Some(c),
            _ => None,
        })
        .collect();
    if certs.is_empty() {
        return Err(Error::invalid(format!(
            "CA file {} holds no PEM certificate",
            path.display()
        )));
    }
    Ok(RootCerts::new_with_certs(&certs))
}
