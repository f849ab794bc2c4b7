//! `Client`: credentials, settings and one pooled HTTP agent; the hangup operation with
//! its retry loop, and the asynchronous and bulk forms on the client's worker pool.

use std::io::Read;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use ureq::http::header::{AUTHORIZATION, RETRY_AFTER};
use ureq::http::HeaderValue;
use ureq::tls::{Certificate, PemItem, RootCerts, TlsConfig};
use ureq::unversioned::transport::{ConnectProxyConnector, Connector, RustlsConnector};
use ureq::Agent;

use crate::error::{Error, Status};
use crate::options::{LogFn, LogLevel, Options};
use crate::pool::{WorkerPool, MAX_WORKERS};
use crate::resolve::CachingResolver;
use crate::response::{self, MAX_BODY};
use crate::retry::{self, Decision, Failure, Stop};
use crate::secret::ApiKey;
use crate::transport::PollTcpConnector;
use crate::validate;

/// `hangup_many` parallelism when the caller passes 0.
pub const DEFAULT_PARALLEL: usize = 32;

/// The outcome of one hangup: the HTTP status of the success (204 from the API), or why
/// the call could not be hung up.
pub type HangupResult = Result<u16, Error>;

/// A TryVox client for one account. Cheap to share: `&Client` may be used from any number
/// of threads at once, and they all share one connection pool.
pub struct Client {
    core: Arc<Core>,
    pool: WorkerPool,
}

/// Everything a hangup needs; shared with the worker pool's jobs.
struct Core {
    agent: Agent,
    /// `{base}/v1/voice/accounts/{auth_id}/calls/`
    calls_url: String,
    key: ApiKey,
    tenant: Option<HeaderValue>,
    timeout: Duration,
    max_retries: u32,
    log: Option<LogFn>,
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
            .input_buffer_size(16 * 1024)
            .output_buffer_size(8 * 1024)
            .max_response_header_size(16 * 1024)
            .max_idle_connections(2 * MAX_WORKERS)
            .max_idle_connections_per_host(2 * MAX_WORKERS)
            .build();
        // ureq's default chain, with our poll()-driven TCP transport in place of its own.
        let connector =
            ().chain(ConnectProxyConnector::default())
                .chain(PollTcpConnector)
                .chain(RustlsConnector::default());
        let agent = Agent::with_parts(config, connector, CachingResolver::default());
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
            }),
            pool: WorkerPool::new(MAX_WORKERS),
        })
    }

    /// Hangs up `call_uuid`, blocking until an outcome or the deadline.
    pub fn hangup(&self, call_uuid: &str) -> HangupResult {
        self.core.hangup(call_uuid)
    }

    /// Queues a hangup on the client's worker pool and returns at once. `done` runs exactly
    /// once, on a pool thread, with the id and the outcome, unless this returns an error
    /// (then it never runs). Dropping the client waits for every queued hangup.
    pub fn hangup_async<F>(&self, call_uuid: &str, done: F) -> Result<(), Error>
    where
        F: FnOnce(&str, HangupResult) + Send + 'static,
    {
        validate::id("call_uuid", call_uuid)?;
        let core = Arc::clone(&self.core);
        let id = call_uuid.to_owned();
        self.pool
            .submit(Box::new(move || {
                let result = core.hangup_guarded(&id);
                done(&id, result);
            }))
            .map_err(|e| Error::busy(format!("the hangup was not queued: {e}; nothing was sent")))
    }

    /// Hangs up every id with at most `max_parallel` requests in flight (0 means
    /// [`DEFAULT_PARALLEL`]), returning each outcome in order. If any id is invalid,
    /// nothing is sent and the error names the first bad one.
    pub fn hangup_many<S: AsRef<str>>(
        &self,
        call_uuids: &[S],
        max_parallel: usize,
    ) -> Result<Vec<HangupResult>, Error> {
        for (i, id) in call_uuids.iter().enumerate() {
            validate::id("call_uuid", id.as_ref())
                .map_err(|e| Error::invalid(format!("call_uuids[{i}]: {}", e.message())))?;
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
            let (b, core) = (Arc::clone(&batch), Arc::clone(&self.core));
            if self.pool.submit(Box::new(move || b.run(&core))).is_err() {
                break;
            }
        }
        batch.run(&self.core);
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
}

impl Drop for Client {
    fn drop(&mut self) {
        // Every queued hangup finishes (each bounded by its deadline) and delivers its
        // callback before the client is gone.
        self.pool.shutdown();
    }
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

/// The result of one HTTP attempt, with its retry class.
struct Attempt {
    result: HangupResult,
    failure: Failure,
}

impl Core {
    /// A hangup on a pool thread, of an id the caller has validated: a panic becomes
    /// `InternalError`, never a lost callback.
    fn hangup_guarded(&self, call_uuid: &str) -> HangupResult {
        catch_unwind(AssertUnwindSafe(|| self.hangup_valid(call_uuid))).unwrap_or_else(|_| {
            Err(Error::internal(
                "internal error (a bug in libtryvox was caught); the client is still usable",
            ))
        })
    }

    fn hangup(&self, call_uuid: &str) -> HangupResult {
        validate::id("call_uuid", call_uuid)?;
        self.hangup_valid(call_uuid)
    }

    /// The hangup proper, for an id that passed `validate::id` (async and bulk check
    /// theirs when they are queued, so workers do not check again).
    fn hangup_valid(&self, call_uuid: &str) -> HangupResult {
        let url = format!("{}{}", self.calls_url, call_uuid);
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
            let attempt = self.attempt(&url, call_uuid, budget);
            let err = match attempt.result {
                Ok(http_status) => return Ok(http_status),
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
                    self.log(LogLevel::Info, || {
                        format!("hangup {call_uuid}: {}", err.message())
                    });
                    return Err(err);
                }
            };
            self.log(LogLevel::Warn, || {
                format!(
                    "hangup {call_uuid}: {}; retry {} of {} in {} ms",
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

    /// One DELETE on the pooled agent, bounded by `budget` (None: the agent's own total
    /// timeout, which is the whole budget of a first attempt).
    fn attempt(&self, url: &str, call_uuid: &str, budget: Option<Duration>) -> Attempt {
        let t0 = Instant::now();
        let mut req = self
            .agent
            .delete(url)
            .header(AUTHORIZATION, self.key.header().clone());
        if let Some(t) = &self.tenant {
            req = req.header("X-Tenant-ID", t.clone());
        }
        let sent = match budget {
            // A per-request config clones the agent's; only retries need one.
            Some(left) => req.config().timeout_global(Some(left)).build().call(),
            None => req.call(),
        };
        let mut response = match sent {
            Ok(r) => r,
            Err(e) => {
                let (status, failure, what) = transport_error(&e);
                // ureq's words may quote a peer (a proxy's status line, a bad header):
                // redacted like any server text.
                let msg = self.key.redact(&format!("{what} ({e})"));
                self.log(LogLevel::Debug, || format!("DELETE {url}: {msg}"));
                return Attempt {
                    result: Err(Error::new(status, msg)),
                    failure,
                };
            }
        };
        let http_status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| response::parse_retry_after(v, SystemTime::now()));
        // Bounded read: at most MAX_BODY bytes, whatever the server sends. A body that
        // is cut off or fails midway leaves the status to speak for itself.
        let mut body = Vec::new();
        let _ = response
            .body_mut()
            .as_reader()
            .take(MAX_BODY as u64)
            .read_to_end(&mut body);
        drop(response);
        self.log(LogLevel::Debug, || {
            format!(
                "DELETE {url} -> HTTP {http_status} in {} us",
                t0.elapsed().as_micros()
            )
        });
        let result =
            response::classify_with(http_status, &body, call_uuid, &|s: &str| self.key.redact(s))
                .map(|()| http_status);
        let failure = match http_status {
            429 => Failure::RateLimited { retry_after },
            s if response::is_retryable_server_status(s) => Failure::Unavailable,
            _ => Failure::Final,
        };
        Attempt { result, failure }
    }

    fn log(&self, level: LogLevel, message: impl FnOnce() -> String) {
        if let Some(f) = &self.log {
            f(level, &message());
        }
    }
}

/// Maps a failure before any response to a status, a retry class and a plain description.
fn transport_error(e: &ureq::Error) -> (Status, Failure, &'static str) {
    use ureq::Error as E;
    match e {
        E::Timeout(ureq::Timeout::Connect) | E::Timeout(ureq::Timeout::Resolve) => (
            Status::Timeout,
            Failure::Connection,
            "timed out connecting to the server",
        ),
        E::Timeout(_) => (
            Status::Timeout,
            Failure::Final,
            "the deadline passed waiting for the server",
        ),
        E::HostNotFound => (
            Status::NetworkError,
            Failure::Final,
            "the server's host name did not resolve",
        ),
        E::ConnectionFailed => (
            Status::NetworkError,
            Failure::Connection,
            "could not connect to the server",
        ),
        E::ConnectProxyFailed(_) | E::InvalidProxyUrl => (
            Status::NetworkError,
            Failure::Final,
            "the proxy refused or failed the connection",
        ),
        E::Tls(_) | E::Pem(_) | E::Rustls(_) => {
            (Status::TlsError, Failure::Final, "TLS handshake failed")
        }
        E::Io(io) if is_tls_io(io) => (Status::TlsError, Failure::Final, "TLS handshake failed"),
        E::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => (
            Status::NetworkError,
            Failure::Connection,
            "connection refused",
        ),
        E::Io(_) => (
            Status::NetworkError,
            Failure::Connection,
            "the connection failed before a response arrived",
        ),
        E::Protocol(_) | E::LargeResponseHeader(..) => (
            Status::ProtocolError,
            Failure::Final,
            "the server's answer is not valid HTTP",
        ),
        _ => (Status::ProtocolError, Failure::Final, "the request failed"),
    }
}

/// rustls reports certificate and handshake failures as an io error wrapping its own.
fn is_tls_io(io: &std::io::Error) -> bool {
    io.get_ref()
        .is_some_and(|inner| inner.is::<rustls::Error>())
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
