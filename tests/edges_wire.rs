//! Issue 18, cases 2-5: what a connection reads and how it is classified, on the three
//! paths (`hangup`, `hangup_async`, `hangup_many`), against real servers on 127.0.0.1:
//! - a TLS record of which only a part arrived after a 204 keeps its connection from
//!   being reused (the part used to wait inside rustls, unseen by the reuse check);
//! - a status line already received decides the outcome when the body never comes (a
//!   2xx at once; a 404 and the others at the deadline or a bound), with its HTTP status;
//! - bytes that are not HTTP are PROTOCOL_ERROR after one request, while a connection
//!   closed before any byte is still retried;
//! - TLS failing after the request was sent is a connection failure (NETWORK_ERROR,
//!   retried like a reset after sending), not "handshake failed" (TLS_ERROR promises the
//!   key was not sent).

mod support;

use std::io::Write;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::paths::{each_path, run, PATHS};
use support::{plain_server, read_head, status_of, until_closed, Counts, API_KEY, AUTH_ID};
use tryvox_core::{Client, HangupResult, Options, Status};

fn plain_client(port: u16, timeout: Duration, retries: u32) -> Client {
    let mut o = Options::new();
    o.set_base_url(&format!("http://127.0.0.1:{port}")).unwrap();
    o.set_timeout(timeout).unwrap();
    o.set_max_retries(retries).unwrap();
    Client::with_options(AUTH_ID, API_KEY, &o).unwrap()
}

/// A TLS server: after each request head read (over TLS), `answer(connection number,
/// request number on it, tls)` gives the raw bytes to write on the socket.
fn tls_server(
    answer: impl Fn(usize, usize, &mut rustls::ServerConnection) -> Vec<u8> + Send + Sync + 'static,
) -> (u16, Arc<Counts>) {
    let cfg = support::tls_server_config_without_tickets();
    plain_server(move |n, sock, counts| {
        support::answer_over_tls(n, sock, counts, cfg.clone(), &|n, k, tls| {
            Some(answer(n, k, tls))
        })
    })
}

fn tls_client(port: u16, retries: u32) -> Client {
    let mut o = Options::new();
    o.set_ca_file(support::tls_fixtures().join("ca.pem").to_str().unwrap())
        .unwrap();
    o.set_base_url(&format!("https://localhost:{port}"))
        .unwrap();
    o.set_resolver(Arc::new(move |_: &str| {
        Ok(vec![std::net::SocketAddr::from(([127, 0, 0, 1], port))])
    }));
    o.set_timeout(Duration::from_secs(5)).unwrap();
    o.set_max_retries(retries).unwrap();
    Client::with_options(AUTH_ID, API_KEY, &o).unwrap()
}

fn describe(v: &[HangupResult]) -> Vec<String> {
    v.iter()
        .map(|r| match r {
            Ok(code) => format!("Ok({code})"),
            Err(e) => format!("{:?} {} {:?}", e.status(), e.http_status(), e.message()),
        })
        .collect()
}

// ---- case 2: half a TLS record after a 204 ----

/// The first answer on a connection is a 204 followed, in the same write, by the first
/// half of a stray 404's record; any later request on that connection gets the record's
/// second half, then its 204. A client that reuses the connection reads the 404.
#[test]
fn half_a_stray_tls_record_after_a_204_keeps_the_connection_from_reuse() {
    let body = r#"{"error":"call_not_found","message":"stray"}"#;
    let stray = format!(
        "HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    each_path(|path| {
        let stray = stray.clone();
        let (port, counts) = tls_server(move |_, k, tls| {
            let ok = support::tls_records(tls, b"HTTP/1.1 204 No Content\r\n\r\n");
            if k == 0 {
                let mut wire = ok;
                let rec = support::tls_records(tls, stray.as_bytes());
                wire.extend_from_slice(&rec[..rec.len() / 2]);
                // Kept for the next request, if one comes on this connection.
                STRAY_REST.with(|r| *r.borrow_mut() = rec[rec.len() / 2..].to_vec());
                wire
            } else {
                let mut wire = STRAY_REST.with(|r| std::mem::take(&mut *r.borrow_mut()));
                wire.extend(ok);
                wire
            }
        });
        let c = tls_client(port, 0);
        let got = run(&c, path, &["call-a", "call-b"]);
        let statuses: Vec<Status> = got.iter().map(status_of).collect();
        assert_eq!(
            statuses,
            vec![Status::Ok, Status::Ok],
            "{path:?}: {:?} (the second hangup read the stray record as its answer)",
            describe(&got)
        );
        assert_eq!(
            counts.conns.load(Ordering::SeqCst),
            2,
            "{path:?}: the connection holding half a record was reused"
        );
    });
}

thread_local! {
    /// The stray record's second half, per server connection thread.
    static STRAY_REST: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

// ---- case 3: a status already received ----

/// A head whose body then stalls: `head` is written after the request, then nothing
/// until the client closes.
fn stalling(head: &'static str) -> (u16, Arc<Counts>) {
    plain_server(move |_, mut s, counts| {
        if read_head(&mut s) {
            counts.reqs.fetch_add(1, Ordering::SeqCst);
            if s.write_all(head.as_bytes()).is_ok() {
                until_closed(&mut s);
            }
        }
    })
}

#[test]
fn a_2xx_head_whose_body_stalls_is_ok_at_once_and_its_connection_goes() {
    each_path(|path| {
        let (port, counts) = stalling(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"ok\":",
        );
        let c = plain_client(port, Duration::from_secs(4), 2);
        let t = Instant::now();
        let got = run(&c, path, &["call-a", "call-b"]);
        let took = t.elapsed();
        assert!(
            got.iter().all(|r| matches!(r, Ok(200))),
            "{path:?}: {:?}",
            describe(&got)
        );
        // Decided by the head, not at the 4 s deadline (each hangup well before it).
        assert!(took < Duration::from_secs(4), "{path:?}: took {took:?}");
        // Left mid-body, the first connection was not reused for the second hangup.
        assert_eq!(counts.conns.load(Ordering::SeqCst), 2, "{path:?}");
        assert_eq!(counts.reqs.load(Ordering::SeqCst), 2, "{path:?}");
    });
}

/// The C layer reports the stalled-body 200's HTTP status too.
#[test]
fn c_api_reports_the_http_status_of_a_stalled_body_200() {
    use std::ffi::CString;
    use tryvox::ffi::*;
    let (port, _) = stalling(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"ok\":",
    );
    let url = CString::new(format!("http://127.0.0.1:{port}")).unwrap();
    let (auth, key) = (
        CString::new(AUTH_ID).unwrap(),
        CString::new(API_KEY).unwrap(),
    );
    let id = CString::new("call-c").unwrap();
    // SAFETY: valid C strings and handles, freed once.
    unsafe {
        let o = tryvox_options_new();
        assert_eq!(tryvox_options_set_base_url(o, url.as_ptr()), 0);
        assert_eq!(tryvox_options_set_timeout_ms(o, 3000), 0);
        let c = tryvox_client_new_with_options(auth.as_ptr(), key.as_ptr(), o);
        tryvox_options_free(o);
        assert!(!c.is_null());
        let rc = tryvox_hangup(c, id.as_ptr());
        let http = tryvox_last_http_status();
        tryvox_client_free(c);
        assert_eq!((rc, http), (0, 200), "TRYVOX_OK with HTTP 200");
    }
}

#[test]
fn a_404_whose_body_stalls_is_not_found_with_its_status() {
    each_path(|path| {
        let (port, counts) = stalling(
            "HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"error\":\"call_not_found\",\"mess",
        );
        let c = plain_client(port, Duration::from_millis(1000), 2);
        let got = run(&c, path, &["call-a"]);
        let e = got[0].as_ref().unwrap_err();
        assert_eq!(
            (e.status(), e.http_status()),
            (Status::NotFound, 404),
            "{path:?}: {e:?}"
        );
        assert!(e.message().contains("deadline"), "{path:?}: {e:?}");
        assert_eq!(counts.reqs.load(Ordering::SeqCst), 1, "{path:?}");
    });
}

#[test]
fn a_404_followed_by_endless_trailers_is_not_found() {
    each_path(|path| {
        let (port, counts) = plain_server(|_, mut s, counts| {
            if !read_head(&mut s) {
                return;
            }
            counts.reqs.fetch_add(1, Ordering::SeqCst);
            let body = r#"{"error":"call_not_found"}"#;
            let head = format!(
                "HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{body}\r\n0\r\n",
                body.len()
            );
            if s.write_all(head.as_bytes()).is_err() {
                return;
            }
            let trailers = "X-Trailer: and-another-one\r\n".repeat(150);
            let t = Instant::now();
            while t.elapsed() < Duration::from_secs(10) {
                if s.write_all(trailers.as_bytes()).is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        let c = plain_client(port, Duration::from_millis(2000), 2);
        let got = run(&c, path, &["call-a"]);
        let e = got[0].as_ref().unwrap_err();
        assert_eq!(
            (e.status(), e.http_status()),
            (Status::NotFound, 404),
            "{path:?}: {e:?}"
        );
        assert_eq!(counts.reqs.load(Ordering::SeqCst), 1, "{path:?}");
    });
}

/// Other statuses whose body stalls keep their contract meaning and report their HTTP
/// status; the deadline has passed, so none is retried.
#[test]
fn other_statuses_whose_body_stalls_keep_their_meaning() {
    let cases: [(&'static str, Status, u16); 4] = [
        (
            "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 50\r\n\r\n{",
            Status::ServerError,
            503,
        ),
        (
            "HTTP/1.1 401 Unauthorized\r\nContent-Length: 50\r\n\r\n{",
            Status::Unauthorized,
            401,
        ),
        (
            "HTTP/1.1 429 Too Many Requests\r\nContent-Length: 50\r\n\r\n{",
            Status::RateLimited,
            429,
        ),
        (
            "HTTP/1.1 403 Forbidden\r\nTransfer-Encoding: chunked\r\n\r\n32\r\n{",
            Status::Forbidden,
            403,
        ),
    ];
    for (head, want, http) in cases {
        // The three paths at once: each waits for the deadline.
        let runs: Vec<_> = PATHS
            .iter()
            .map(|&path| {
                std::thread::spawn(move || {
                    let (port, counts) = stalling(head);
                    let c = plain_client(port, Duration::from_millis(1000), 2);
                    let got = run(&c, path, &["call-a"]);
                    (path, got, counts.reqs.load(Ordering::SeqCst))
                })
            })
            .collect();
        for r in runs {
            let (path, got, reqs) = r.join().unwrap();
            let e = got[0].as_ref().unwrap_err();
            assert_eq!(
                (e.status(), e.http_status()),
                (want, http),
                "{path:?}: {e:?}"
            );
            assert_eq!(reqs, 1, "{path:?}: {e:?}");
        }
    }
}

// ---- case 4: not HTTP at all ----

#[test]
fn a_server_that_is_not_http_is_a_protocol_error_after_one_request() {
    each_path(|path| {
        let (port, counts) = plain_server(|_, mut s, counts| {
            if read_head(&mut s) {
                counts.reqs.fetch_add(1, Ordering::SeqCst);
                let _ = s.write_all(b"SSH-2.0-OpenSSH_9.6\r\nProtocol mismatch.\r\n");
            }
            // Closed here.
        });
        let c = plain_client(port, Duration::from_secs(3), 2);
        let got = run(&c, path, &["call-a"]);
        let e = got[0].as_ref().unwrap_err();
        assert_eq!(e.status(), Status::ProtocolError, "{path:?}: {e:?}");
        assert_eq!(e.http_status(), 0, "{path:?}");
        assert!(
            e.message().contains("SSH-2.0-OpenSSH_9.6"),
            "{path:?}: {e:?}"
        );
        assert_eq!(counts.conns.load(Ordering::SeqCst), 1, "{path:?}: {e:?}");
    });
}

/// The other side of the line: a connection closed before any byte (what a stale
/// keep-alive connection looks like) is still retried, and the retry answers.
#[test]
fn a_connection_closed_before_any_byte_is_still_retried() {
    each_path(|path| {
        let (port, counts) = plain_server(|n, mut s, counts| {
            while read_head(&mut s) {
                counts.reqs.fetch_add(1, Ordering::SeqCst);
                if n == 0 {
                    return; // closed without a byte
                }
                if s.write_all(b"HTTP/1.1 204 No Content\r\n\r\n").is_err() {
                    return;
                }
            }
        });
        let c = plain_client(port, Duration::from_secs(5), 2);
        let got = run(&c, path, &["call-a"]);
        assert!(matches!(got[0], Ok(204)), "{path:?}: {:?}", describe(&got));
        assert_eq!(counts.conns.load(Ordering::SeqCst), 2, "{path:?}");
    });
}

// ---- case 5: TLS failing after the request was sent ----

/// The first connection's answer is a 204 record with its last byte (part of the AEAD
/// tag) flipped: the request was read, the record does not decrypt. Later connections
/// answer 204.
fn corrupting_tls_server() -> (u16, Arc<Counts>) {
    tls_server(|n, _, tls| {
        let mut wire = support::tls_records(tls, b"HTTP/1.1 204 No Content\r\n\r\n");
        if n == 0 {
            let last = wire.len() - 1;
            wire[last] ^= 0x55;
        }
        wire
    })
}

#[test]
fn a_tls_failure_after_the_request_is_a_network_error_not_a_handshake_failure() {
    each_path(|path| {
        let (port, counts) = corrupting_tls_server();
        let c = tls_client(port, 0);
        let got = run(&c, path, &["call-a"]);
        let e = got[0].as_ref().unwrap_err();
        assert_eq!(e.status(), Status::NetworkError, "{path:?}: {e:?}");
        assert!(
            e.message().contains("after the request was sent")
                && !e.message().contains("handshake"),
            "{path:?}: {e:?}"
        );
        assert!(!e.message().contains(API_KEY), "{path:?}");
        assert_eq!(counts.reqs.load(Ordering::SeqCst), 1, "{path:?}");
    });
}

#[test]
fn a_tls_failure_after_the_request_is_retried_like_a_reset() {
    each_path(|path| {
        let (port, counts) = corrupting_tls_server();
        let c = tls_client(port, 2);
        let got = run(&c, path, &["call-a"]);
        assert!(matches!(got[0], Ok(204)), "{path:?}: {:?}", describe(&got));
        assert_eq!(counts.reqs.load(Ordering::SeqCst), 2, "{path:?}");
    });
}
