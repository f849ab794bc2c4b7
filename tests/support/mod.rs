//! A real HTTP/1.1 server on 127.0.0.1 (hyper) for the library's tests. What it answers
//! is chosen by the call id in the path, so many tests (and the C harness) can share one
//! server and run in parallel:
//!
//! | id prefix            | answer |
//! |----------------------|--------|
//! | `ok-`                | 204 |
//! | `ok200-`             | 200 with a JSON body |
//! | `nf-flat-`           | 404 `{"error":"call_not_found",...}` |
//! | `nf-nested-`         | 404 `{"error":{"code":"NOT_FOUND",...}}` |
//! | `end-flat-`          | 404 `{"error":"call_already_ended",...}` |
//! | `end-nested-`        | 404 `{"error":{"code":"call_already_ended",...}}` |
//! | `nf-empty-`          | 404, empty body |
//! | `nf-html-`           | 404, an HTML page |
//! | `st-NNN-`            | status NNN with a nested envelope (code `E_NNN`) |
//! | `bighead-KB-`        | 204 whose head carries KB KiB of `X-Filler` header fields |
//! | `flaky-NNN-K-`       | status NNN for the first K requests of this id, then 204 |
//! | `drop-K-`            | close the connection without answering K times, then 204 |
//! | `rasec-S-K-`         | 429 `Retry-After: S` K times, then 204 |
//! | `radate-S-K-`        | 429 `Retry-After: <HTTP date S s from now>` K times, then 204 |
//! | `ra-none-K-`         | 429 without Retry-After K times, then 204 |
//! | `retry-ended-`       | 503 once, then 404 call_already_ended |
//! | `hang-`              | never answers |
//! | `slow-MS-`           | 204 after MS milliseconds |
//! | `gate-N-`            | held until N `gate-` requests are in flight at once, then 204 (503 after 10 s) |
//! | `huge-`              | 500 with a 100 MB body, streamed |
//! | `echo-key-`          | 401 whose message quotes the Authorization header |
//! | `leak-N-`            | 401 whose flat `message` is N x's followed by the key |
//! | `leak-code-`         | 401 whose nested `code` is the key |
//! | `leak-pieces-`       | 401 whose message is the key in 9-character pieces |
//! | `after-MS-<id>`      | waits MS milliseconds, then answers as `<id>` would |
//! | `redirect-`          | 301 to another host |
//!
//! A listing (`GET .../calls`) with `X-Tenant-ID: repeat-listing` answers every page with
//! the same 100 live calls `same-0`..`same-99` and `total_pages` 1,000,000,000 (a server
//! that repeats itself and lies about its size); their DELETEs answer 204 and end nothing.
#![allow(dead_code)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::sync::Notify;

pub mod paths;
pub mod procs;
mod servers;
pub use servers::*;

pub const AUTH_ID: &str = "AC123456";
pub const API_KEY: &str = "tvx_sk_test_s3cr3t-Key-Never-Shown";

/// One request as the server saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub connection: usize,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Default)]
struct State {
    seen: Mutex<Vec<Seen>>,
    per_id: Mutex<HashMap<String, usize>>,
    connections: AtomicUsize,
    huge_bytes_sent: AtomicU64,
    /// `gate-` requests in flight now, the most seen at once, and whether the gate opened.
    gate_waiting: AtomicUsize,
    gate_peak: AtomicUsize,
    gate_open: std::sync::atomic::AtomicBool,
    gate: Notify,
}

pub struct TestServer {
    pub addr: SocketAddr,
    state: Arc<State>,
    shutdown: Arc<Notify>,
    thread: Option<std::thread::JoinHandle<()>>,
}

type BoxBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

impl TestServer {
    pub fn start() -> TestServer {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State::default());
        let shutdown = Arc::new(Notify::new());
        let (st, sd) = (Arc::clone(&state), Arc::clone(&shutdown));
        let thread = std::thread::spawn(move || {
            rt.block_on(async move {
                loop {
                    let (stream, _) = tokio::select! {
                        r = listener.accept() => match r { Ok(x) => x, Err(_) => continue },
                        _ = sd.notified() => return,
                    };
                    let conn_id = st.connections.fetch_add(1, Ordering::SeqCst);
                    let st = Arc::clone(&st);
                    let kill = Arc::new(Notify::new());
                    tokio::spawn(async move {
                        let k2 = Arc::clone(&kill);
                        let svc = service_fn(move |req| {
                            let (st, kill) = (Arc::clone(&st), Arc::clone(&k2));
                            async move { Ok::<_, Infallible>(handle(req, conn_id, st, kill).await) }
                        });
                        let conn = http1::Builder::new()
                            .keep_alive(true)
                            .serve_connection(TokioIo::new(stream), svc);
                        tokio::select! {
                            _ = conn => {}
                            // Dropping the connection closes the socket with no answer.
                            _ = kill.notified() => {}
                        }
                    });
                }
            });
            rt.shutdown_timeout(Duration::from_millis(100));
        });
        TestServer {
            addr,
            state,
            shutdown,
            thread: Some(thread),
        }
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The most `gate-` requests that were in flight at once.
    pub fn gate_peak(&self) -> usize {
        self.state.gate_peak.load(Ordering::SeqCst)
    }

    pub fn requests(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
    }

    /// Requests whose path ends with `/calls/{id}`.
    pub fn requests_for(&self, id: &str) -> Vec<Seen> {
        let suffix = format!("/calls/{id}");
        self.requests()
            .into_iter()
            .filter(|s| s.path.ends_with(&suffix))
            .collect()
    }

    pub fn count_for(&self, id: &str) -> usize {
        self.requests_for(id).len()
    }

    pub fn connections(&self) -> usize {
        self.state.connections.load(Ordering::SeqCst)
    }

    pub fn huge_bytes_sent(&self) -> u64 {
        self.state.huge_bytes_sent.load(Ordering::SeqCst)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.shutdown.notify_one();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn full(b: impl Into<Bytes>) -> BoxBody {
    Full::new(b.into()).boxed()
}

fn reply(status: u16, body: &str) -> Response<BoxBody> {
    let mut r = Response::new(full(body.to_owned()));
    *r.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
    if !body.is_empty() {
        r.headers_mut()
            .insert("content-type", "application/json".parse().unwrap());
    }
    r
}

fn nested(status: u16, code: &str, msg: &str) -> Response<BoxBody> {
    reply(
        status,
        &format!(r#"{{"error":{{"code":"{code}","message":"{msg}"}}}}"#),
    )
}

/// Parses `N-rest` into (N, rest).
fn num(s: &str) -> (u64, &str) {
    let (n, rest) = s.split_once('-').unwrap_or((s, ""));
    (n.parse().unwrap_or(0), rest)
}

async fn handle(
    req: Request<Incoming>,
    conn: usize,
    st: Arc<State>,
    kill: Arc<Notify>,
) -> Response<BoxBody> {
    let path = req.uri().path().to_owned();
    st.seen.lock().unwrap().push(Seen {
        method: req.method().to_string(),
        path: path.clone(),
        headers: req
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        connection: conn,
    });
    let auth = req
        .headers()
        .get("authorization")
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .unwrap_or_default();
    let id = path.rsplit('/').next().unwrap_or("").to_owned();
    let tenant = req
        .headers()
        .get("x-tenant-id")
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    if id == "calls" && tenant.as_deref() == Some("repeat-listing") {
        let calls: Vec<serde_json::Value> = (0..100)
            .map(|i| serde_json::json!({"call_uuid": format!("same-{i}"), "status": "ringing"}))
            .collect();
        let body = serde_json::json!({
            "calls": calls,
            "pagination": {"page": 1, "per_page": 100, "total_pages": 1_000_000_000u64, "total_count": 100_000_000_000u64},
        });
        let mut r = reply(200, &body.to_string());
        r.headers_mut()
            .insert("content-type", "application/json".parse().unwrap());
        return r;
    }
    let nth = {
        let mut m = st.per_id.lock().unwrap();
        let n = m.entry(id.clone()).or_insert(0);
        *n += 1;
        *n
    };
    let mut id = id;
    if let Some(rest) = id.strip_prefix("after-") {
        let (ms, rest) = num(rest);
        tokio::time::sleep(Duration::from_millis(ms)).await;
        id = rest.to_owned();
    }
    let key = auth.strip_prefix("Bearer ").unwrap_or(&auth).to_owned();
    if let Some(rest) = id.strip_prefix("leak-") {
        let body = if rest.starts_with("code-") {
            serde_json::json!({"error": {"code": key, "message": "bad key"}})
        } else if rest.starts_with("pieces-") {
            let pieces: Vec<String> = key
                .as_bytes()
                .chunks(9)
                .map(|c| String::from_utf8_lossy(c).into_owned())
                .collect();
            serde_json::json!({"error": "unauthorized", "message": pieces.join(" ")})
        } else {
            let (pad, _) = num(rest);
            let msg = format!("{}{key}", "x".repeat(pad as usize));
            serde_json::json!({"error": "unauthorized", "message": msg})
        };
        return reply(401, &body.to_string());
    }
    if let Some(rest) = id.strip_prefix("ok200-") {
        return reply(200, &format!(r#"{{"call_uuid":"{rest}"}}"#));
    }
    if id.starts_with("ok-") {
        return reply(204, "");
    }
    if id.starts_with("nf-flat-") {
        return reply(
            404,
            &format!(r#"{{"error":"call_not_found","message":"Call with UUID {id} not found"}}"#),
        );
    }
    if id.starts_with("nf-nested-") {
        return nested(404, "NOT_FOUND", "No such call");
    }
    if id.starts_with("end-flat-") {
        return reply(
            404,
            r#"{"error":"call_already_ended","message":"Call has already ended"}"#,
        );
    }
    if id.starts_with("end-nested-") {
        return nested(404, "call_already_ended", "Call has already ended");
    }
    if id.starts_with("nf-empty-") {
        return reply(404, "");
    }
    if id.starts_with("nf-html-") {
        let mut r = reply(404, "<html><body><h1>404 Not Found</h1>nginx</body></html>");
        r.headers_mut()
            .insert("content-type", "text/html".parse().unwrap());
        return r;
    }
    if let Some(rest) = id.strip_prefix("bighead-") {
        let (kb, _) = num(rest);
        let mut r = reply(204, "");
        for i in 0..kb {
            let name = format!("x-filler-{i}");
            r.headers_mut().insert(
                hyper::header::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                "f".repeat(1000).parse().unwrap(),
            );
        }
        return r;
    }
    if let Some(rest) = id.strip_prefix("st-") {
        let (code, _) = num(rest);
        return nested(code as u16, &format!("E_{code}"), "scripted status");
    }
    if let Some(rest) = id.strip_prefix("flaky-") {
        let (code, rest) = num(rest);
        let (k, _) = num(rest);
        if nth as u64 <= k {
            return nested(code as u16, "INTERNAL_ERROR", "scripted failure");
        }
        return reply(204, "");
    }
    if let Some(rest) = id.strip_prefix("drop-") {
        let (k, _) = num(rest);
        if nth as u64 <= k {
            kill.notify_one();
            std::future::pending::<()>().await;
        }
        return reply(204, "");
    }
    if let Some(rest) = id.strip_prefix("rasec-") {
        let (secs, rest) = num(rest);
        let (k, _) = num(rest);
        if nth as u64 <= k {
            let mut r = nested(429, "RATE_LIMITED", "slow down");
            r.headers_mut()
                .insert("retry-after", secs.to_string().parse().unwrap());
            return r;
        }
        return reply(204, "");
    }
    if let Some(rest) = id.strip_prefix("radate-") {
        let (secs, rest) = num(rest);
        let (k, _) = num(rest);
        if nth as u64 <= k {
            // +1 s: HTTP dates have whole seconds, so round up rather than down.
            let when = SystemTime::now() + Duration::from_secs(secs + 1);
            let mut r = nested(429, "RATE_LIMITED", "slow down");
            r.headers_mut().insert(
                "retry-after",
                httpdate::fmt_http_date(when).parse().unwrap(),
            );
            return r;
        }
        return reply(204, "");
    }
    if let Some(rest) = id.strip_prefix("ra-none-") {
        let (k, _) = num(rest);
        if nth as u64 <= k {
            return nested(429, "RATE_LIMITED", "slow down");
        }
        return reply(204, "");
    }
    if id.starts_with("retry-ended-") {
        if nth == 1 {
            return nested(503, "UNAVAILABLE", "try again");
        }
        return reply(
            404,
            r#"{"error":"call_already_ended","message":"Call has already ended"}"#,
        );
    }
    if id.starts_with("hang-") {
        std::future::pending::<()>().await;
    }
    if id.starts_with("same-") {
        return reply(204, ""); // ends nothing: the repeat-listing still lists it
    }
    if let Some(rest) = id.strip_prefix("gate-") {
        let (n, _) = num(rest);
        let now = st.gate_waiting.fetch_add(1, Ordering::SeqCst) + 1;
        st.gate_peak.fetch_max(now, Ordering::SeqCst);
        if now as u64 >= n {
            st.gate_open.store(true, Ordering::SeqCst);
            st.gate.notify_waiters();
        }
        let opened = async {
            loop {
                let notified = st.gate.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                if st.gate_open.load(Ordering::SeqCst) {
                    return;
                }
                notified.await;
            }
        };
        let ok = tokio::time::timeout(Duration::from_secs(10), opened)
            .await
            .is_ok();
        st.gate_waiting.fetch_sub(1, Ordering::SeqCst);
        return reply(if ok { 204 } else { 503 }, "");
    }
    if let Some(rest) = id.strip_prefix("slow-") {
        let (ms, _) = num(rest);
        tokio::time::sleep(Duration::from_millis(ms)).await;
        return reply(204, "");
    }
    if id.starts_with("huge-") {
        let mut r = Response::new(
            HugeBody {
                left: 100 * 1024 * 1024,
                st: Arc::clone(&st),
            }
            .boxed(),
        );
        *r.status_mut() = hyper::StatusCode::INTERNAL_SERVER_ERROR;
        return r;
    }
    if id.starts_with("echo-key-") {
        return nested(401, "UNAUTHORIZED", &format!("key {auth} is not valid"));
    }
    if id.starts_with("redirect-") {
        let mut r = reply(301, "");
        r.headers_mut()
            .insert("location", "http://127.0.0.2:1/elsewhere".parse().unwrap());
        return r;
    }
    reply(500, "unknown test id")
}

/// A 100 MB body produced 64 KiB at a time, counting what the server handed to hyper.
struct HugeBody {
    left: u64,
    st: Arc<State>,
}

impl Body for HugeBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        if this.left == 0 {
            return Poll::Ready(None);
        }
        let n = this.left.min(64 * 1024);
        this.left -= n;
        this.st.huge_bytes_sent.fetch_add(n, Ordering::SeqCst);
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(vec![b'x'; n as usize])))))
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        hyper::body::SizeHint::with_exact(self.left)
    }
}

/// A unique suffix so tests sharing a server never share per-id counters.
/// The status of an outcome, OK included.
pub fn status_of(r: &tryvox_core::HangupResult) -> tryvox_core::Status {
    match r {
        Ok(_) => tryvox_core::Status::Ok,
        Err(e) => e.status(),
    }
}

pub fn uniq(prefix: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!("{prefix}{}", N.fetch_add(1, Ordering::SeqCst))
}

/// target/debug (or release): where cargo put libtryvox.so for this test run.
pub fn target_dir() -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent().unwrap().parent().unwrap().to_path_buf()
}

/// The directory the C programs link against: `libtryvox.so` and its SONAME link
/// `libtryvox.so.0`, both pointing at the library cargo built for this run.
pub fn c_lib_dir() -> std::path::PathBuf {
    let lib = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("c")
        .join("lib");
    std::fs::create_dir_all(&lib).unwrap();
    let so = target_dir().join("libtryvox.so");
    assert!(
        so.exists(),
        "{} is not built: `cargo test` builds only the rlib; run `cargo build` first (`make test` does)",
        so.display()
    );
    for n in ["libtryvox.so", "libtryvox.so.0"] {
        let link = lib.join(n);
        // Tests run in parallel: refresh a link only when it is wrong, and accept losing
        // the race to another test creating the same one.
        if std::fs::read_link(&link).ok().as_deref() != Some(so.as_path()) {
            let _ = std::fs::remove_file(&link);
            let _ = std::os::unix::fs::symlink(&so, &link);
        }
    }
    lib
}

/// Builds `src` (relative to the repository) with `compiler` and `flags`, warnings as
/// errors, against include/tryvox.h and the built libtryvox.so.
fn build_c(
    mut compiler: std::process::Command,
    flags: &[&str],
    src: &str,
    name: &str,
) -> std::path::PathBuf {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let lib = c_lib_dir();
    let exe = lib.parent().unwrap().join(name);
    let status = compiler
        .args([
            "-std=c99",
            "-D_DEFAULT_SOURCE",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-g",
        ])
        .args(flags)
        .arg(format!("-I{}", root.join("include").display()))
        .arg(root.join(src))
        .arg("-o")
        .arg(&exe)
        .arg(format!("-L{}", lib.display()))
        .arg(format!("-Wl,-rpath,{}", lib.display()))
        .args(["-ltryvox", "-lpthread"])
        .status()
        .unwrap();
    assert!(status.success(), "compiling {src} failed");
    exe
}

/// Compiles a C program from the repository with the `cc` crate's compiler (pedantic C99).
pub fn compile_c(src: &str, name: &str) -> std::path::PathBuf {
    let compiler = cc::Build::new()
        .cargo_metadata(false)
        .target("x86_64-unknown-linux-gnu")
        .host("x86_64-unknown-linux-gnu")
        .opt_level(1)
        .get_compiler()
        .to_command();
    build_c(compiler, &["-pedantic"], src, name)
}

/// Whether `tool` is on PATH. A missing tool prints a loud SKIPPED line; with CI=true
/// (.ci/run installs every tool) it fails the test instead.
pub fn have_tool(tool: &str) -> bool {
    let ok = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            std::env::var("CI").is_err(),
            "{tool} is required in CI (.ci/run installs it)"
        );
        eprintln!("\n==================== SKIPPED: {tool} is not installed ====================\n");
    }
    ok
}

/// Creates `n` ringing calls in a simulator and returns their ids.
pub fn seed_calls(s: &tryvox_sim::Running, n: usize) -> Vec<String> {
    let a: ureq::Agent = ureq::Agent::config_builder().build().into();
    let mut r = a
        .post(format!("{}/_sim/seed", s.base_url))
        .header("content-type", "application/json")
        .send(format!(r#"{{"count":{n}}}"#).as_bytes())
        .unwrap();
    let v: serde_json::Value =
        serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap();
    v["call_uuids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap().to_owned())
        .collect()
}

/// Builds a C program with clang under AddressSanitizer, UBSan and LeakSanitizer.
pub fn compile_c_asan(src: &str, name: &str) -> std::path::PathBuf {
    let flags = [
        "-O1",
        "-fsanitize=address,undefined",
        "-fno-omit-frame-pointer",
        "-fno-sanitize-recover=all",
    ];
    build_c(std::process::Command::new("clang"), &flags, src, name)
}

/// A TCP address that never answers: a listener with a backlog of 0 whose one queue slot
/// is taken by a connection nobody accepts, so the kernel drops every later SYN without a
/// reset, as a dead route does. Checked black before it is handed out.
pub struct BlackHole {
    pub addr: std::net::SocketAddr,
    _listener: std::os::fd::OwnedFd,
    _filler: std::net::TcpStream,
}

pub fn black_hole(addr: std::net::SocketAddrV4) -> std::io::Result<BlackHole> {
    use std::os::fd::{FromRawFd, OwnedFd};
    // SAFETY: plain socket calls on a descriptor owned here; `sin` is a valid sockaddr_in.
    let listener = unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let owned = OwnedFd::from_raw_fd(fd);
        let sin = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: addr.port().to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from(*addr.ip()).to_be(),
            },
            sin_zero: [0; 8],
        };
        let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        if libc::bind(fd, (&sin as *const libc::sockaddr_in).cast(), len) != 0
            || libc::listen(fd, 0) != 0
        {
            return Err(std::io::Error::last_os_error());
        }
        owned
    };
    let addr = std::net::SocketAddr::V4(addr);
    let filler = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    match std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(300)) {
        Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
        other => panic!("{addr} is not black-holed: {other:?}"),
    }
    Ok(BlackHole {
        addr,
        _listener: listener,
        _filler: filler,
    })
}

/// A plain HTTP client for the tests' own requests to a simulator (statuses as values).
pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into()
}

/// Every call of `tenant` (the default tenant if None) as the simulator lists it to the
/// API, page after page: the JSON objects of its `calls` arrays.
pub fn sim_calls(s: &tryvox_sim::Running, tenant: Option<&str>) -> Vec<serde_json::Value> {
    let key = tryvox_sim::server::DEFAULT_API_KEY;
    let mut out = Vec::new();
    let mut page = 1;
    loop {
        let mut req = agent()
            .get(format!("{}?per_page=100&page={page}", s.calls_url()))
            .header("authorization", format!("Bearer {key}"));
        if let Some(t) = tenant {
            req = req.header("x-tenant-id", t);
        }
        let mut r = req.call().unwrap();
        let v: serde_json::Value =
            serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap();
        out.extend(v["calls"].as_array().unwrap().iter().cloned());
        if page >= v["pagination"]["total_pages"].as_u64().unwrap_or(1) {
            return out;
        }
        page += 1;
    }
}

/// Creates `n` live calls named `{prefix}{i}` in the simulator, in `tenant` and from
/// `from` when given.
pub fn seed(
    s: &tryvox_sim::Running,
    n: usize,
    prefix: &str,
    tenant: Option<&str>,
    from: Option<&str>,
) {
    let mut body = serde_json::json!({"count": n, "id_prefix": prefix});
    if let Some(t) = tenant {
        body["tenant"] = t.into();
    }
    if let Some(f) = from {
        body["from"] = f.into();
    }
    let r = agent()
        .post(format!("{}/_sim/seed", s.base_url))
        .header("content-type", "application/json")
        .send(body.to_string().as_bytes())
        .unwrap();
    assert_eq!(r.status(), 200);
}

/// A port on 127.0.0.1 nobody listens on now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits (at most 10 s) until something listens on the port.
pub fn wait_for_port(port: u16) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "nothing listens on {port}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// An empty directory of this test binary's, `group/name` under cargo's test tmpdir.
pub fn scratch(group: &str, name: &str) -> std::path::PathBuf {
    let d = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(group)
        .join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Raises this process's open-file limit to its hard limit: 1,000 connections cost
/// 2,000 descriptors in a test (the client's end and an in-process server's end), and
/// the library sizes its parallelism by the descriptors free.
pub fn raise_fd_limit() {
    // SAFETY: plain getrlimit/setrlimit on a local struct.
    unsafe {
        let mut l = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) == 0 && l.rlim_cur < l.rlim_max {
            l.rlim_cur = l.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &l);
        }
    }
}

/// Makes a process a test spawns die with it: PR_SET_PDEATHSIG fires when the spawning
/// thread exits, so a test killed outright (a CI timeout) leaves no server behind; a
/// parent already gone by the exec fails the spawn.
pub fn die_with_parent(cmd: &mut std::process::Command) -> &mut std::process::Command {
    use std::os::unix::process::CommandExt;
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 || libc::getppid() != parent
            {
                return Err(std::io::Error::other("parent gone"));
            }
            Ok(())
        });
    }
    cmd
}

/// A server process owned by one test: a single process (no children of its own), killed
/// and reaped when dropped, and killed by the kernel if the test's thread dies first.
/// Its stdout and stderr go nowhere, so it can never hold the test's output pipe open.
pub struct Proc(pub std::process::Child);
impl Proc {
    pub fn spawn(cmd: &mut std::process::Command) -> Proc {
        die_with_parent(cmd);
        Proc(
            cmd.stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap(),
        )
    }
}
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The simulator's hangup log, as each request arrived: (ms since the epoch, call id,
/// key 1 or 2, 0 for another).
pub fn hangup_log(s: &tryvox_sim::Running) -> Vec<(u64, String, u8)> {
    let mut r = agent()
        .get(format!("{}/_sim/hangups", s.base_url))
        .call()
        .unwrap();
    let v: serde_json::Value =
        serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["at_ms"].as_u64().unwrap(),
                e["call_uuid"].as_str().unwrap().to_owned(),
                e["key"].as_u64().unwrap() as u8,
            )
        })
        .collect()
}

/// The CLI `exe` with the simulator's account, key and URL in its environment (nothing
/// else of ours: no tenant).
pub fn cli_command(exe: &std::path::Path, s: &tryvox_sim::Running) -> std::process::Command {
    let mut c = std::process::Command::new(exe);
    c.env("TRYVOX_BASE_URL", &s.base_url)
        .env("TRYVOX_ACCOUNT_ID", tryvox_sim::server::DEFAULT_ACCOUNT)
        .env("TRYVOX_API_KEY", tryvox_sim::server::DEFAULT_API_KEY)
        .env("LD_LIBRARY_PATH", c_lib_dir())
        .env_remove("TRYVOX_TENANT_ID");
    c
}

/// Waits for `child` at most `limit`, killing it past that.
pub fn wait_bounded(
    child: &mut std::process::Child,
    what: &str,
    limit: std::time::Duration,
) -> std::process::ExitStatus {
    let start = std::time::Instant::now();
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} took more than {limit:?}");
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// A `tryvox_sweep` of `size` bytes at the very end of a page followed by an
/// inaccessible one, zeroed but for `size`: reading or writing a byte past `size`
/// crashes the test. Unmapped on drop.
pub struct SweepAtPageEnd {
    pub sweep: *mut tryvox::ffi::tryvox_sweep,
    base: *mut std::ffi::c_void,
    page: usize,
}

impl SweepAtPageEnd {
    pub fn new(size: usize) -> SweepAtPageEnd {
        unsafe {
            let page = libc::sysconf(libc::_SC_PAGESIZE) as usize;
            let base = libc::mmap(
                std::ptr::null_mut(),
                2 * page,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            );
            assert_ne!(base, libc::MAP_FAILED);
            assert_eq!(
                libc::mprotect(base.cast::<u8>().add(page).cast(), page, libc::PROT_NONE),
                0
            );
            let sweep = base
                .cast::<u8>()
                .add(page - size)
                .cast::<tryvox::ffi::tryvox_sweep>();
            std::ptr::write_bytes(sweep.cast::<u8>(), 0, size);
            std::ptr::addr_of_mut!((*sweep).size).write_unaligned(size);
            SweepAtPageEnd { sweep, base, page }
        }
    }
}

impl Drop for SweepAtPageEnd {
    fn drop(&mut self) {
        unsafe { libc::munmap(self.base, 2 * self.page) };
    }
}

/// The test TLS material: `ca.pem` (a private CA whose key was discarded), `server.pem`
/// for localhost, 127.0.0.1 and ::1, and more (see its README).
pub fn tls_fixtures() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tls")
}

/// A rustls server configuration (aws-lc-rs) with the fixtures' `server` certificate,
/// these protocol versions and, if given, only these key-exchange groups.
pub fn tls_server_config(
    versions: &[&'static rustls::SupportedProtocolVersion],
    groups: Option<Vec<&'static dyn rustls::crypto::SupportedKxGroup>>,
) -> Arc<rustls::ServerConfig> {
    tls_server_config_in(&tls_fixtures(), versions, groups)
}

/// As [`tls_server_config`], with `server.pem` and `server.key` from the directory `d`.
pub fn tls_server_config_in(
    d: &std::path::Path,
    versions: &[&'static rustls::SupportedProtocolVersion],
    groups: Option<Vec<&'static dyn rustls::crypto::SupportedKxGroup>>,
) -> Arc<rustls::ServerConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let pem = std::fs::read(d.join("server.pem")).unwrap();
    let certs: Vec<CertificateDer> = CertificateDer::pem_slice_iter(&pem)
        .map(|c| c.unwrap())
        .collect();
    let key = PrivateKeyDer::from_pem_slice(&std::fs::read(d.join("server.key")).unwrap()).unwrap();
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    if let Some(g) = groups {
        provider.kx_groups = g;
    }
    Arc::new(
        rustls::ServerConfig::builder_with_provider(Arc::new(provider))
            .with_protocol_versions(versions)
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap(),
    )
}

/// TLS 1.3 with the fixtures' `server` certificate and no session tickets: every record
/// after the handshake is one the test wrote.
pub fn tls_server_config_without_tickets() -> Arc<rustls::ServerConfig> {
    let mut cfg = (*tls_server_config(&[&rustls::version::TLS13], None)).clone();
    cfg.send_tls13_tickets = 0;
    Arc::new(cfg)
}

/// Encrypts `plain` as TLS records; returns the wire bytes.
pub fn tls_records(conn: &mut rustls::ServerConnection, plain: &[u8]) -> Vec<u8> {
    use std::io::Write;
    conn.writer().write_all(plain).unwrap();
    let mut out = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut out).unwrap();
    }
    out
}

/// What a [`tls_204_server`] saw: per DELETE, its connection's protocol version and key
/// exchange group.
pub type TlsSeen = Arc<Mutex<Vec<(rustls::ProtocolVersion, rustls::NamedGroup)>>>;

/// A TLS server on 127.0.0.1 answering every DELETE with 204 (keep-alive), one thread a
/// connection, for as long as the test process runs.
pub fn tls_204_server(cfg: Arc<rustls::ServerConfig>) -> (u16, TlsSeen) {
    use std::io::Write;
    let seen: TlsSeen = Arc::default();
    let seen2 = seen.clone();
    let server = serve_each(move |_, sock| {
        let _ = sock.set_read_timeout(Some(Duration::from_secs(10)));
        let conn = rustls::ServerConnection::new(cfg.clone()).unwrap();
        let mut tls = rustls::StreamOwned::new(conn, sock);
        while let Some(head) = read_head_text(&mut tls) {
            if !head.starts_with("DELETE ") {
                return;
            }
            if let (Some(v), Some(g)) = (
                tls.conn.protocol_version(),
                tls.conn.negotiated_key_exchange_group(),
            ) {
                seen2.lock().unwrap().push((v, g.name()));
            }
            let answer = b"HTTP/1.1 204 No Content\r\n\r\n";
            if tls.write_all(answer).and_then(|_| tls.flush()).is_err() {
                return;
            }
        }
    });
    (server.port(), seen)
}

/// A simulator serving https with the fixtures' `server` certificate (signed by the
/// private CA `ca.pem`), for the bindings' trust-store tests.
pub fn tls_sim() -> tryvox_sim::Running {
    let f = tls_fixtures();
    tryvox_sim::spawn(tryvox_sim::Config {
        tls: Some((f.join("server.pem"), f.join("server.key"))),
        ..Default::default()
    })
    .unwrap()
}

/// The environment of a bindings' test program for its trust-store tests: the https
/// simulator `s` and the CA that signed its certificate, and that CA as the system's
/// whole trust store (SSL_CERT_FILE, and an empty SSL_CERT_DIR: OpenSSL's lookup, which
/// the library follows), so that "the system's store" is known and differs from the
/// bundled roots. Set on the child only: this process's environment stays untouched.
pub fn tls_trust_env<'a>(
    cmd: &'a mut std::process::Command,
    s: &tryvox_sim::Running,
    group: &str,
) -> &'a mut std::process::Command {
    let ca = tls_fixtures().join("ca.pem");
    cmd.env("TRYVOX_TLS_BASE_URL", &s.base_url)
        .env("TRYVOX_TLS_CA", &ca)
        .env("SSL_CERT_FILE", &ca)
        .env("SSL_CERT_DIR", scratch(group, "empty-cert-dir"))
}
