//! HTTP/1.1 conformance of the three hangup paths (`hangup`, `hangup_async`,
//! `hangup_many`) against raw TCP peers on 127.0.0.1 that read each request head and
//! answer with exact bytes: chunked bodies with extensions and trailers, a response
//! trickled one byte at a time, `Connection: close` and HTTP/1.0 (no reuse), bytes after
//! a 204 (never read as the next response), redirects (never followed), a 10 MB error
//! body (bounded), a response head over 16 KiB (one request, not retried), interim 1xx
//! responses (RFC 9110 15.2: parsed and ignored, headers included) and obs-fold
//! (RFC 9112 5.2).
//!
//! Every case runs on every path, each with a server and a client of its own, and counts
//! the requests (and connections) the server saw. A test collects every mismatch of all
//! its cases and paths before failing, so its message lists exactly which ones broke.
//! Only the public API is used: these are the contract the HTTP engine meets.

mod support;

use std::io::Write;
use std::net::TcpStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use support::{status_of, API_KEY, AUTH_ID};
use tryvox_core::{Client, HangupResult, Options, Status};

/// The three ways to hang up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Path {
    Sync,
    Async,
    Many,
}

const PATHS: [Path; 3] = [Path::Sync, Path::Async, Path::Many];

/// Call ids of the documented form; `n` tells the cases apart in messages.
fn call_id(n: u32) -> String {
    format!("650e8400-e29b-41d4-a716-4466554{n:05}")
}

fn client(port: u16, tweak: impl FnOnce(&mut Options)) -> Client {
    let mut o = Options::new();
    o.set_base_url(&format!("http://127.0.0.1:{port}")).unwrap();
    o.set_timeout(Duration::from_secs(5)).unwrap();
    tweak(&mut o);
    Client::with_options(AUTH_ID, API_KEY, &o).unwrap()
}

/// One hangup of `id` on `path`. The async outcome comes back through a channel with a
/// bounded wait: a lost callback fails the test instead of hanging it.
fn hangup(c: &Client, path: Path, id: &str) -> HangupResult {
    match path {
        Path::Sync => c.hangup(id),
        Path::Async => {
            let (tx, rx) = mpsc::channel();
            c.hangup_async(id.to_owned(), move |id, r| {
                let _ = tx.send((id, r));
            })
            .expect("hangup_async queued the hangup");
            let (back, r) = rx
                .recv_timeout(Duration::from_secs(30))
                .expect("the hangup_async callback arrived within 30 s");
            assert_eq!(back, id, "the callback got its own id back");
            r
        }
        Path::Many => {
            let mut v = c.hangup_many(&[id], 1).expect("hangup_many took the batch");
            assert_eq!(v.len(), 1, "one outcome per id");
            v.pop().unwrap()
        }
    }
}

/// Two hangups in a row on one client and path. On the bulk path they are one batch
/// run one at a time (`max_parallel` 1): the second reuses whatever the first left.
fn two_in_a_row(c: &Client, path: Path, a: &str, b: &str) -> [HangupResult; 2] {
    match path {
        Path::Many => {
            let v = c
                .hangup_many(&[a, b], 1)
                .expect("hangup_many took the batch");
            assert_eq!(v.len(), 2, "one outcome per id");
            [v[0].clone(), v[1].clone()]
        }
        _ => [hangup(c, path, a), hangup(c, path, b)],
    }
}

/// Mismatches of one test, reported all at once.
#[derive(Default)]
struct Failures(Vec<String>);

impl Failures {
    fn check(&mut self, ok: bool, what: impl FnOnce() -> String) {
        if !ok {
            self.0.push(what());
        }
    }

    /// Checks `r` is `want` (and 204 on success).
    fn status(&mut self, case: &str, path: Path, r: &HangupResult, want: Status) {
        let got = status_of(r);
        let ok = got == want && (want != Status::Ok || matches!(r, Ok(204)));
        self.check(ok, || {
            format!("{case} [{path:?}]: want {want:?}, got {r:?}")
        });
    }

    fn count(&mut self, case: &str, path: Path, what: &str, got: usize, want: usize) {
        self.check(got == want, || {
            format!("{case} [{path:?}]: the server saw {got} {what}, want {want}")
        });
    }

    fn assert_none(self, test: &str) {
        assert!(
            self.0.is_empty(),
            "{test}: {} mismatch(es):\n  {}",
            self.0.len(),
            self.0.join("\n  ")
        );
    }
}

/// What the server does with a connection after answering a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum After {
    /// Wait for the next request on it (whatever the answer said): a client that must
    /// not reuse the connection is caught reusing it.
    KeepOpen,
    /// Close it.
    Close,
}

/// A raw HTTP/1.1 peer on 127.0.0.1: a thread per connection reads each request head
/// and hands the stream to `respond`, which writes exact bytes. Counts connections and
/// requests. The listener lives until the test process ends.
struct RawServer {
    port: u16,
    connections: Arc<AtomicUsize>,
    requests: Arc<AtomicUsize>,
}

impl RawServer {
    fn start(respond: impl Fn(&mut TcpStream) -> After + Send + Sync + 'static) -> RawServer {
        let requests = Arc::new(AtomicUsize::new(0));
        let reqs = Arc::clone(&requests);
        let server = support::serve_each(move |_, mut s| {
            let _ = s.set_nodelay(true);
            let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
            while support::read_head(&mut s) {
                reqs.fetch_add(1, Ordering::SeqCst);
                if respond(&mut s) == After::Close {
                    break;
                }
            }
        });
        RawServer {
            port: server.port(),
            connections: server.accepted(),
            requests,
        }
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

/// Writes `bytes` in one piece, keeping the connection open for the next request.
fn answer(bytes: Vec<u8>) -> impl Fn(&mut TcpStream) -> After + Send + Sync + 'static {
    move |s| {
        let _ = s.write_all(&bytes);
        let _ = s.flush();
        After::KeepOpen
    }
}

/// `body` as a chunked message body: the first chunk is 0x1a bytes with `;ext=1`, the
/// rest in chunks of 7 with assorted extensions (a quoted value with a space, a name
/// without a value), then trailer fields. Each chunk-size line stays short (under 20
/// bytes): long extension lines are a separate matter from parsing them at all.
fn chunked(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let (first, mut rest) = body.split_at(0x1a);
    out.extend_from_slice(b"1a;ext=1\r\n");
    out.extend_from_slice(first);
    out.extend_from_slice(b"\r\n");
    let exts = [";q=\"a b\"", ";a;b=2", "", ";x=y"];
    let mut i = 0;
    while !rest.is_empty() {
        let (c, r) = rest.split_at(rest.len().min(7));
        out.extend_from_slice(format!("{:x}{}\r\n", c.len(), exts[i % exts.len()]).as_bytes());
        out.extend_from_slice(c);
        out.extend_from_slice(b"\r\n");
        rest = r;
        i += 1;
    }
    out.extend_from_slice(b"0;last=1\r\nX-Checksum: 7f3a\r\nX-Trailer-Two: yes\r\n\r\n");
    out
}

#[test]
fn chunked_404_with_extensions_and_trailers_is_already_ended() {
    let body = br#"{"error":"call_already_ended","message":"Call has already ended"}"#;
    let mut response = b"HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\n\
                         Transfer-Encoding: chunked\r\n\r\n"
        .to_vec();
    response.extend_from_slice(&chunked(body));
    let mut f = Failures::default();
    for path in PATHS {
        let srv = RawServer::start(answer(response.clone()));
        let c = client(srv.port, |_| {});
        let r = hangup(&c, path, &call_id(1));
        f.status("chunked 404", path, &r, Status::AlreadyEnded);
        if let Err(e) = &r {
            f.check(e.http_status() == 404, || {
                format!("chunked 404 [{path:?}]: http_status {}", e.http_status())
            });
        }
        f.count("chunked 404", path, "requests", srv.requests(), 1);
    }
    f.assert_none("chunked 404");
}

#[test]
fn a_response_trickled_one_byte_at_a_time_is_read_whole() {
    let response = b"HTTP/1.1 204 No Content\r\nX-A: b\r\n\r\n";
    let mut f = Failures::default();
    for path in PATHS {
        let srv = RawServer::start(move |s| {
            for b in response {
                let _ = s.write_all(&[*b]);
                let _ = s.flush();
                std::thread::sleep(Duration::from_millis(1));
            }
            After::KeepOpen
        });
        let c = client(srv.port, |_| {});
        let r = hangup(&c, path, &call_id(2));
        f.status("byte by byte", path, &r, Status::Ok);
        f.count("byte by byte", path, "requests", srv.requests(), 1);
    }
    f.assert_none("byte by byte");
}

/// A connection whose response says it ends is never used again, even when the peer
/// keeps it open: two hangups, two connections.
#[test]
fn connection_close_and_http10_connections_are_not_reused() {
    let cases: [(&str, &[u8]); 3] = [
        (
            "Connection: close",
            b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n",
        ),
        (
            "Connection: close among other options",
            b"HTTP/1.1 204 No Content\r\nConnection: x-hint, Close\r\nX-Hint: 1\r\n\r\n",
        ),
        (
            "HTTP/1.0 without keep-alive",
            b"HTTP/1.0 204 No Content\r\n\r\n",
        ),
    ];
    let mut f = Failures::default();
    for (case, response) in cases {
        for path in PATHS {
            let srv = RawServer::start(answer(response.to_vec()));
            let c = client(srv.port, |_| {});
            let [a, b] = two_in_a_row(&c, path, &call_id(31), &call_id(32));
            f.status(case, path, &a, Status::Ok);
            f.status(&format!("{case}, second hangup"), path, &b, Status::Ok);
            f.count(case, path, "requests", srv.requests(), 2);
            f.count(case, path, "connections", srv.connections(), 2);
        }
    }
    f.assert_none("no reuse after close");
}

/// Bytes after a complete 204 are not a response to anything: the next hangup on the
/// same client must not read them as its answer. Two ways: in the same write as the 204
/// (already buffered when the 204 is parsed), and 20 ms after it, while the connection
/// sits idle in the pool (the next hangup is 200 ms later, so they are there before it).
#[test]
fn bytes_after_a_204_are_never_read_as_the_next_response() {
    let stray_body = br#"{"error":"call_not_found","message":"stray"}"#;
    let mut stray = format!(
        "HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        stray_body.len()
    )
    .into_bytes();
    stray.extend_from_slice(stray_body);
    let mut f = Failures::default();

    let mut together = b"HTTP/1.1 204 No Content\r\n\r\n".to_vec();
    together.extend_from_slice(&stray);
    for path in PATHS {
        let srv = RawServer::start(answer(together.clone()));
        let c = client(srv.port, |_| {});
        let [a, b] = two_in_a_row(&c, path, &call_id(41), &call_id(42));
        f.status("bytes in the 204's write", path, &a, Status::Ok);
        f.status(
            "bytes in the 204's write, second hangup",
            path,
            &b,
            Status::Ok,
        );
        let n = srv.requests();
        f.check(n >= 2, || {
            format!(
                "bytes in the 204's write [{path:?}]: the server saw {n} requests, want 2 or more"
            )
        });
    }

    for path in PATHS {
        let stray = stray.clone();
        let srv = RawServer::start(move |s| {
            let _ = s.write_all(b"HTTP/1.1 204 No Content\r\n\r\n");
            let _ = s.flush();
            std::thread::sleep(Duration::from_millis(20));
            let _ = s.write_all(&stray);
            After::KeepOpen
        });
        let c = client(srv.port, |_| {});
        let a = hangup(&c, path, &call_id(43));
        // Not a timing assertion: gives the stray bytes time to arrive before the reuse.
        std::thread::sleep(Duration::from_millis(200));
        let b = hangup(&c, path, &call_id(44));
        f.status("bytes 20 ms after the 204", path, &a, Status::Ok);
        f.status(
            "bytes 20 ms after the 204, second hangup",
            path,
            &b,
            Status::Ok,
        );
        let n = srv.requests();
        f.check(n >= 2, || {
            format!(
                "bytes 20 ms after the 204 [{path:?}]: the server saw {n} requests, want 2 or more"
            )
        });
    }
    f.assert_none("bytes after 204");
}

/// A redirect is not part of the API: it is reported, and the other address never sees
/// a request (it would carry the key and end a call elsewhere).
#[test]
fn redirects_are_not_followed() {
    let mut f = Failures::default();
    for (code, reason) in [(301, "Moved Permanently"), (307, "Temporary Redirect")] {
        let case = format!("{code} redirect");
        for path in PATHS {
            let elsewhere = RawServer::start(answer(b"HTTP/1.1 204 No Content\r\n\r\n".to_vec()));
            let id = call_id(5);
            let location = format!(
                "http://127.0.0.1:{}/v1/voice/accounts/{AUTH_ID}/calls/{id}",
                elsewhere.port
            );
            let srv = RawServer::start(answer(
                format!(
                    "HTTP/1.1 {code} {reason}\r\nLocation: {location}\r\nContent-Length: 0\r\n\r\n"
                )
                .into_bytes(),
            ));
            let c = client(srv.port, |_| {});
            let r = hangup(&c, path, &id);
            f.status(&case, path, &r, Status::ProtocolError);
            f.count(&case, path, "requests", srv.requests(), 1);
            f.count(
                &format!("{case}, the Location server"),
                path,
                "connections",
                elsewhere.connections(),
                0,
            );
            f.count(
                &format!("{case}, the Location server"),
                path,
                "requests",
                elsewhere.requests(),
                0,
            );
        }
    }
    f.assert_none("redirects");
}

fn vm_kib(field: &str) -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// A 500 whose body is 10 MB (with its Content-Length): the library reads a bounded
/// part, retries as for any 500, and reports SERVER_ERROR. Memory is printed, not
/// asserted (the tests of this file share the process).
#[test]
fn a_10_mb_error_body_is_bounded_and_still_a_server_error() {
    const SIZE: usize = 10 * 1024 * 1024;
    const RETRIES: u32 = 2;
    let mut f = Failures::default();
    let rss_before = vm_kib("VmRSS:");
    for path in PATHS {
        let srv = RawServer::start(|s| {
            let head = format!(
                "HTTP/1.1 500 Internal Server Error\r\nContent-Type: text/plain\r\nContent-Length: {SIZE}\r\n\r\n"
            );
            if s.write_all(head.as_bytes()).is_err() {
                return After::Close;
            }
            let piece = [b'x'; 64 * 1024];
            let mut left = SIZE;
            while left > 0 {
                let n = left.min(piece.len());
                // The client stops reading and closes: the write fails and this ends.
                if s.write_all(&piece[..n]).is_err() {
                    return After::Close;
                }
                left -= n;
            }
            After::Close
        });
        let c = client(srv.port, |o| o.set_max_retries(RETRIES).unwrap());
        let r = hangup(&c, path, &call_id(6));
        f.status("10 MB 500 body", path, &r, Status::ServerError);
        if let Err(e) = &r {
            f.check(e.http_status() == 500, || {
                format!("10 MB 500 body [{path:?}]: http_status {}", e.http_status())
            });
        }
        f.count(
            "10 MB 500 body",
            path,
            "requests",
            srv.requests(),
            1 + RETRIES as usize,
        );
    }
    eprintln!(
        "10 MB error bodies on 3 paths: VmRSS {:?} KiB before, {:?} KiB after, VmHWM {:?} KiB",
        rss_before,
        vm_kib("VmRSS:"),
        vm_kib("VmHWM:")
    );
    f.assert_none("10 MB body");
}

/// A response head over 16 KiB is a protocol error, decided on the one request: it is
/// not a network failure, so it is not sent again.
#[test]
fn a_response_head_over_16_kib_is_a_protocol_error_after_one_request() {
    let mut response = b"HTTP/1.1 204 No Content\r\n".to_vec();
    let mut i = 0;
    while response.len() < 20 * 1024 {
        response.extend_from_slice(format!("X-Filler: {i:04} {}\r\n", "f".repeat(90)).as_bytes());
        i += 1;
    }
    response.extend_from_slice(b"\r\n");
    let mut f = Failures::default();
    for path in PATHS {
        let srv = RawServer::start(answer(response.clone()));
        let c = client(srv.port, |_| {});
        let r = hangup(&c, path, &call_id(7));
        f.status("20 KiB head", path, &r, Status::ProtocolError);
        f.count("20 KiB head", path, "requests", srv.requests(), 1);
    }
    f.assert_none("20 KiB head");
}

/// RFC 9110 15.2: a client parses and ignores any 1xx response it did not ask for,
/// header fields included, and reads the final response after it.
#[test]
fn interim_1xx_responses_are_skipped() {
    let cases: [(&str, &[u8]); 3] = [
        (
            "100 Continue",
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n",
        ),
        (
            "100 Continue with a header field",
            b"HTTP/1.1 100 Continue\r\nX-Note: hi\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n",
        ),
        (
            "103 Early Hints with Link",
            b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload; as=style\r\n\r\n\
              HTTP/1.1 204 No Content\r\n\r\n",
        ),
    ];
    let mut f = Failures::default();
    for (case, response) in cases {
        for path in PATHS {
            let srv = RawServer::start(answer(response.to_vec()));
            let c = client(srv.port, |_| {});
            let r = hangup(&c, path, &call_id(8));
            f.status(case, path, &r, Status::Ok);
            f.count(case, path, "requests", srv.requests(), 1);
        }
    }
    f.assert_none("interim 1xx");
}

/// RFC 9112 5.2: a user agent replaces each obs-fold in a response with a space before
/// interpreting the field; the 404's body still decides the status.
#[test]
fn a_folded_header_line_does_not_hide_the_404() {
    let body = br#"{"error":"call_not_found","message":"no"}"#;
    let mut response = format!(
        "HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nX-Long: part one\r\n  part two\r\n\
         Content-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    response.extend_from_slice(body);
    let mut f = Failures::default();
    for path in PATHS {
        let srv = RawServer::start(answer(response.clone()));
        let c = client(srv.port, |_| {});
        let r = hangup(&c, path, &call_id(9));
        f.status("obs-fold 404", path, &r, Status::NotFound);
        f.count("obs-fold 404", path, "requests", srv.requests(), 1);
    }
    f.assert_none("obs-fold");
}
