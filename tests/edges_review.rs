//! Hostile review of issue 18 (cases 2-9, 12, 13): reading and classification of a
//! connection, the engine's admission, against real servers on 127.0.0.1. Each test
//! says what it shows; the findings it was written for are fixed, and it stays as their
//! guard. (The bulk-crawl findings, fixed, are in `edges_bulk_admission.rs`.)

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use support::paths::{each_path, run};
use support::procs::python_server;
use support::{have_tool, read_head, status_of, until_closed, Counts, API_KEY, AUTH_ID};
use tryvox_core::{Client, HangupResult, Options, Status};

fn describe(v: &[HangupResult]) -> Vec<String> {
    v.iter()
        .map(|r| match r {
            Ok(code) => format!("Ok({code})"),
            Err(e) => format!("{:?} {} {:?}", e.status(), e.http_status(), e.message()),
        })
        .collect()
}

/// [`support::plain_server`] with Nagle off on the server's end.
fn plain_server(
    behave: impl Fn(usize, TcpStream, &Counts) + Send + Sync + 'static,
) -> (u16, Arc<Counts>) {
    support::plain_server(move |n, s, counts| {
        let _ = s.set_nodelay(true);
        behave(n, s, counts)
    })
}

fn plain_client(port: u16, timeout: Duration, retries: u32) -> Client {
    let mut o = Options::new();
    o.set_base_url(&format!("http://127.0.0.1:{port}")).unwrap();
    o.set_timeout(timeout).unwrap();
    o.set_max_retries(retries).unwrap();
    Client::with_options(AUTH_ID, API_KEY, &o).unwrap()
}

/// A TLS server: after each request head, `answer(conn, request no, tls)` gives the raw
/// bytes to write; `None` stalls until the client closes.
fn tls_server(
    answer: impl Fn(usize, usize, &mut rustls::ServerConnection) -> Option<Vec<u8>>
        + Send
        + Sync
        + 'static,
) -> (u16, Arc<Counts>) {
    let cfg = support::tls_server_config_without_tickets();
    plain_server(move |n, sock, counts| {
        support::answer_over_tls(n, sock, counts, cfg.clone(), &answer)
    })
}

fn tls_client(port: u16, timeout: Duration, retries: u32) -> Client {
    let mut o = Options::new();
    o.set_ca_file(support::tls_fixtures().join("ca.pem").to_str().unwrap())
        .unwrap();
    o.set_base_url(&format!("https://localhost:{port}"))
        .unwrap();
    o.set_resolver(Arc::new(move |_: &str| {
        Ok(vec![std::net::SocketAddr::from(([127, 0, 0, 1], port))])
    }));
    o.set_timeout(timeout).unwrap();
    o.set_max_retries(retries).unwrap();
    Client::with_options(AUTH_ID, API_KEY, &o).unwrap()
}

// ---------------------------------------------------------------------------------------
// Case 5 at its edge: TLS_ERROR promises the key was not sent.

/// HELD UP. Suspected: the server completes its TLS 1.3 flight and appends, in the same
/// write, a record that does not decrypt; if rustls finished the handshake (encrypting
/// the queued DELETE) before failing on the bad record, conn.rs's error-path `write_tls`
/// would send the request while `request_out` is false (TLS_ERROR, "key not sent").
/// rustls decrypts the whole batch before it acts on the handshake, so it fails first:
/// only the client's CCS leaves, the key is not sent, and TLS_ERROR is true. Kept as a
/// guard: if the key reaches the server, the status must not be TLS_ERROR.
#[test]
fn tls_failure_in_the_flight_that_ends_the_handshake_sends_the_key_yet_says_tls_error() {
    each_path(|path| {
        let got_plain = Arc::new(Mutex::new(Vec::<u8>::new()));
        let gp = got_plain.clone();
        let cfg = support::tls_server_config_without_tickets();
        let (port, _) = plain_server(move |_, mut sock, _| {
            let mut conn = rustls::ServerConnection::new(cfg.clone()).unwrap();
            let mut buf = [0u8; 16384];
            // The ClientHello.
            while !conn.wants_write() {
                let n = match sock.read(&mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                conn.read_tls(&mut &buf[..n]).unwrap();
                conn.process_new_packets().unwrap();
            }
            let mut wire = Vec::new();
            while conn.wants_write() {
                conn.write_tls(&mut wire).unwrap();
            }
            // A record that will not decrypt, right behind the server's Finished.
            wire.extend_from_slice(&[23, 3, 3, 0, 40]);
            wire.extend_from_slice(&[0x5a; 40]);
            if sock.write_all(&wire).is_err() {
                return;
            }
            // Everything the client sends until it closes, fed one record at a time.
            let _ = sock.set_read_timeout(Some(Duration::from_secs(5)));
            let mut raw = Vec::new();
            loop {
                match sock.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => raw.extend_from_slice(&buf[..n]),
                }
            }
            let mut at = 0;
            let mut plain = Vec::new();
            while at + 5 <= raw.len() {
                let len = u16::from_be_bytes([raw[at + 3], raw[at + 4]]) as usize;
                let end = (at + 5 + len).min(raw.len());
                let _ = conn.read_tls(&mut &raw[at..end]);
                at = end;
                if conn.process_new_packets().is_err() {
                    break;
                }
                let mut b = [0u8; 4096];
                while let Ok(n) = conn.reader().read(&mut b) {
                    if n == 0 {
                        break;
                    }
                    plain.extend_from_slice(&b[..n]);
                }
            }
            *gp.lock().unwrap() = plain;
        });
        let c = tls_client(port, Duration::from_secs(3), 0);
        let got = run(&c, path, &["call-a"]);
        drop(c);
        std::thread::sleep(Duration::from_millis(300));
        let plain = got_plain.lock().unwrap().clone();
        let key_sent = plain.starts_with(b"DELETE ")
            && plain
                .windows(API_KEY.len())
                .any(|w| w == API_KEY.as_bytes());
        let e = got[0].as_ref().err();
        assert!(
            !(key_sent && e.is_some_and(|e| e.status() == Status::TlsError)),
            "{path:?}: the server decrypted the DELETE with the key ({} bytes), yet the \
             status is TLS_ERROR, which promises the key was not sent: {:?}",
            plain.len(),
            describe(&got)
        );
    });
}

// ---------------------------------------------------------------------------------------
// Servers that lie about framing.

/// FIXED (was: wrong status). A 204 that declares a body (`Content-Length: 5`; RFC 9110
/// forbids it) whose "body" the server sends late, ahead of its next answer. The
/// connection is pooled as clean (204: no body is read), the reuse probe sees an empty
/// socket, and the next hangup on it reads `hello` + its 204: PROTOCOL_ERROR for a call
/// the server did end. A connection whose last response's framing contradicts itself is
/// not safe to reuse.
#[test]
fn a_204_that_declares_a_body_is_not_reused() {
    for declared in ["Content-Length: 5\r\n", "Transfer-Encoding: chunked\r\n"] {
        each_path(|path| {
            let late: &'static [u8] = if declared.starts_with("Content") {
                b"hello"
            } else {
                b"0\r\n\r\n"
            };
            let head = format!("HTTP/1.1 204 No Content\r\n{declared}\r\n");
            let (port, counts) = plain_server(move |_, mut s, counts| {
                let mut k = 0;
                while read_head(&mut s) {
                    counts.reqs.fetch_add(1, Ordering::SeqCst);
                    let mut wire = Vec::new();
                    if k > 0 {
                        wire.extend_from_slice(late);
                    }
                    wire.extend_from_slice(head.as_bytes());
                    if s.write_all(&wire).is_err() {
                        return;
                    }
                    k += 1;
                }
            });
            let c = plain_client(port, Duration::from_secs(3), 0);
            let got = run(&c, path, &["call-a", "call-b"]);
            assert!(
                got.iter().all(|r| matches!(r, Ok(204))),
                "{path:?} {declared:?}: {:?} (conns {})",
                describe(&got),
                counts.conns.load(Ordering::SeqCst)
            );
        });
    }
}

/// FIXED (was: hygiene; the status was right). Both Content-Length and chunked on a 404
/// (RFC 9112 6.3: Transfer-Encoding wins, and the message "ought to be handled as an error"; a smuggling/splitting sign): the
/// status still decides (NOT_FOUND: holds), but the connection is pooled and reused.
#[test]
fn content_length_and_chunked_together_keep_the_status_and_drop_the_connection() {
    each_path(|path| {
        let body = r#"{"error":"call_not_found","message":"no"}"#;
        let wire = format!(
            "HTTP/1.1 404 Not Found\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
            body.len()
        );
        let (port, counts) = plain_server(move |_, mut s, counts| {
            while read_head(&mut s) {
                counts.reqs.fetch_add(1, Ordering::SeqCst);
                if s.write_all(wire.as_bytes()).is_err() {
                    return;
                }
            }
        });
        let c = plain_client(port, Duration::from_secs(3), 0);
        let got = run(&c, path, &["call-a", "call-b"]);
        for r in &got {
            let e = r.as_ref().expect_err("a 404");
            assert_eq!(
                (e.status(), e.http_status()),
                (Status::NotFound, 404),
                "{path:?}: {:?}",
                describe(&got)
            );
        }
        assert_eq!(
            counts.conns.load(Ordering::SeqCst),
            2,
            "{path:?}: a connection after CL+TE was reused"
        );
    });
}

/// FIXED (was: cost). A server that writes a 200's head and its small JSON body in two
/// writes (a flush between them, as many frameworks do): the engine and the sync path
/// now end a hangup's 2xx at its head and drop the connection "left mid-body", so every
/// hangup opens a new connection (a new TLS handshake on https). The old code read the
/// body and reused the connection. The status may be decided at the head without
/// throwing away a connection whose body is merely a moment behind.
#[test]
fn a_200_whose_body_follows_its_head_a_moment_later_keeps_its_connection() {
    each_path(|path| {
        let (port, counts) = plain_server(|_, mut s, counts| {
            while read_head(&mut s) {
                counts.reqs.fetch_add(1, Ordering::SeqCst);
                let body = r#"{"call_uuid":"x"}"#;
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                    body.len()
                );
                if s.write_all(head.as_bytes()).is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(5));
                if s.write_all(body.as_bytes()).is_err() {
                    return;
                }
            }
        });
        let c = plain_client(port, Duration::from_secs(3), 0);
        let ids = ["a", "b", "c", "d", "e", "f"];
        let got = run(&c, path, &ids);
        assert!(
            got.iter().all(|r| matches!(r, Ok(200))),
            "{path:?}: {:?}",
            describe(&got)
        );
        let conns = counts.conns.load(Ordering::SeqCst);
        assert!(
            conns <= 2,
            "{path:?}: {conns} connections for {} sequential hangups on a keep-alive server",
            ids.len()
        );
    });
}

/// The same over TLS, where a new connection is a handshake: the head and the body in
/// two records, written 5 ms apart. One connection (two at most) for six hangups.
#[test]
fn a_200_over_tls_whose_body_follows_a_moment_later_keeps_its_connection() {
    each_path(|path| {
        let cfg = support::tls_server_config_without_tickets();
        let (port, counts) = plain_server(move |_, mut sock, counts| {
            let mut conn = rustls::ServerConnection::new(cfg.clone()).unwrap();
            loop {
                let ok = {
                    let mut tls = rustls::Stream::new(&mut conn, &mut sock);
                    read_head(&mut tls)
                };
                if !ok {
                    return;
                }
                counts.reqs.fetch_add(1, Ordering::SeqCst);
                let body = r#"{"call_uuid":"x"}"#;
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                    body.len()
                );
                let wire = support::tls_records(&mut conn, head.as_bytes());
                if sock.write_all(&wire).is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(5));
                let wire = support::tls_records(&mut conn, body.as_bytes());
                if sock.write_all(&wire).is_err() {
                    return;
                }
            }
        });
        let c = tls_client(port, Duration::from_secs(3), 0);
        let ids = ["a", "b", "c", "d", "e", "f"];
        let got = run(&c, path, &ids);
        assert!(
            got.iter().all(|r| matches!(r, Ok(200))),
            "{path:?}: {:?}",
            describe(&got)
        );
        let conns = counts.conns.load(Ordering::SeqCst);
        assert!(
            conns <= 2,
            "{path:?}: {conns} TLS connections for 6 hangups"
        );
    });
}

// ---------------------------------------------------------------------------------------
// The status line arriving in pieces.

/// A status line with leading CRLFs, written one byte at a time, twice on the same
/// connection: OK both times, one connection.
#[test]
fn a_204_split_at_every_byte_after_leading_crlfs_is_ok_and_reused() {
    each_path(|path| {
        let (port, counts) = plain_server(|_, mut s, counts| {
            while read_head(&mut s) {
                counts.reqs.fetch_add(1, Ordering::SeqCst);
                for b in b"\r\n\r\nHTTP/1.1 204 No Content\r\nX-A: b\r\n\r\n" {
                    if s.write_all(&[*b]).is_err() {
                        return;
                    }
                    std::thread::sleep(Duration::from_micros(300));
                }
            }
        });
        let c = plain_client(port, Duration::from_secs(5), 0);
        let got = run(&c, path, &["a", "b"]);
        assert!(
            got.iter().all(|r| matches!(r, Ok(204))),
            "{path:?}: {:?}",
            describe(&got)
        );
        assert_eq!(counts.conns.load(Ordering::SeqCst), 1, "{path:?}");
    });
}

/// 1xx then garbage: PROTOCOL_ERROR after one request; 1xx (with fields) then a 204: OK.
#[test]
fn interim_then_garbage_is_a_protocol_error_and_interim_then_204_is_ok() {
    each_path(|path| {
        let (port, counts) = plain_server(|_, mut s, counts| {
            if read_head(&mut s) {
                counts.reqs.fetch_add(1, Ordering::SeqCst);
                let _ = s.write_all(b"HTTP/1.1 100 Continue\r\n\r\n");
                std::thread::sleep(Duration::from_millis(20));
                let _ = s.write_all(b"\x00\x01garbage\r\n\r\n");
            }
        });
        let c = plain_client(port, Duration::from_secs(3), 2);
        let got = run(&c, path, &["a"]);
        let e = got[0].as_ref().expect_err("garbage");
        assert_eq!(e.status(), Status::ProtocolError, "{path:?}: {e:?}");
        assert_eq!(counts.reqs.load(Ordering::SeqCst), 1, "{path:?}");

        let (port, _) = plain_server(|_, mut s, _| {
            while read_head(&mut s) {
                let _ = s.write_all(b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n");
                std::thread::sleep(Duration::from_millis(10));
                let _ = s.write_all(b"HTTP/1.1 204 No Content\r\n\r\n");
            }
        });
        let c = plain_client(port, Duration::from_secs(3), 0);
        let got = run(&c, path, &["a", "b"]);
        assert!(
            got.iter().all(|r| matches!(r, Ok(204))),
            "{path:?}: {:?}",
            describe(&got)
        );
    });
}

/// "HTTP/" then nothing: TIMEOUT (no status line came), by the deadline.
#[test]
fn http_prefix_then_stall_is_timeout_at_the_deadline() {
    each_path(|path| {
        let (port, _) = plain_server(|_, mut s, _| {
            if read_head(&mut s) && s.write_all(b"HTTP/").is_ok() {
                until_closed(&mut s);
            }
        });
        let c = plain_client(port, Duration::from_millis(800), 2);
        let t = Instant::now();
        let got = run(&c, path, &["a"]);
        let took = t.elapsed();
        let e = got[0].as_ref().expect_err("stalled");
        assert_eq!(
            (e.status(), e.http_status()),
            (Status::Timeout, 0),
            "{path:?}: {e:?}"
        );
        assert!(took < Duration::from_millis(2500), "{path:?}: {took:?}");
    });
}

// ---------------------------------------------------------------------------------------
// TLS records that lie.

/// A 404 head in one record, then a record header claiming 16 KiB whose body never
/// comes: NOT_FOUND with 404 at the deadline, not TIMEOUT.
#[test]
fn tls_404_head_then_a_16k_record_header_that_stalls_is_not_found() {
    each_path(|path| {
        let (port, _) = tls_server(|_, _, tls| {
            let mut wire = support::tls_records(
                tls,
                b"HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nContent-Length: 60\r\n\r\n{\"error\":\"call_not_found\"",
            );
            wire.extend_from_slice(&[23, 3, 3, 0x40, 0x00]);
            wire.extend_from_slice(&[7u8; 200]);
            Some(wire)
        });
        let c = tls_client(port, Duration::from_millis(1000), 2);
        let got = run(&c, path, &["a"]);
        let e = got[0].as_ref().expect_err("404");
        assert_eq!(
            (e.status(), e.http_status()),
            (Status::NotFound, 404),
            "{path:?}: {e:?}"
        );
    });
}

/// A record header claiming more than any record may hold, after the request: not a
/// handshake failure (NETWORK_ERROR, retried; the retry answers 204).
#[test]
fn tls_oversized_record_after_the_request_is_retried_not_tls_error() {
    each_path(|path| {
        let (port, counts) = tls_server(|n, _, tls| {
            if n == 0 {
                let mut wire = vec![23, 3, 3, 0xff, 0xf0];
                wire.extend_from_slice(&[1u8; 64]);
                Some(wire)
            } else {
                Some(support::tls_records(
                    tls,
                    b"HTTP/1.1 204 No Content\r\n\r\n",
                ))
            }
        });
        let c = tls_client(port, Duration::from_secs(3), 2);
        let got = run(&c, path, &["a"]);
        assert!(matches!(got[0], Ok(204)), "{path:?}: {:?}", describe(&got));
        assert_eq!(counts.reqs.load(Ordering::SeqCst), 2, "{path:?}");
    });
}

/// close_notify in the middle of a 404's body: NOT_FOUND with 404; in the middle of a
/// head: retried (the retry answers 204).
#[test]
fn tls_close_notify_mid_response() {
    each_path(|path| {
        let (port, counts) = tls_server(|_, _, tls| {
            let mut wire = support::tls_records(
                tls,
                b"HTTP/1.1 404 Not Found\r\nContent-Length: 60\r\n\r\n{\"error\":\"call_not",
            );
            tls.send_close_notify();
            while tls.wants_write() {
                tls.write_tls(&mut wire).unwrap();
            }
            Some(wire)
        });
        let c = tls_client(port, Duration::from_secs(3), 2);
        let got = run(&c, path, &["a"]);
        let e = got[0].as_ref().expect_err("404");
        assert_eq!(
            (e.status(), e.http_status()),
            (Status::NotFound, 404),
            "{path:?}: {e:?}"
        );
        assert_eq!(counts.reqs.load(Ordering::SeqCst), 1, "{path:?}");

        let (port, counts) = tls_server(|n, _, tls| {
            if n == 0 {
                let mut wire = support::tls_records(tls, b"HTTP/1.1 20");
                tls.send_close_notify();
                while tls.wants_write() {
                    tls.write_tls(&mut wire).unwrap();
                }
                Some(wire)
            } else {
                Some(support::tls_records(
                    tls,
                    b"HTTP/1.1 204 No Content\r\n\r\n",
                ))
            }
        });
        let c = tls_client(port, Duration::from_secs(3), 2);
        let got = run(&c, path, &["a"]);
        assert!(matches!(got[0], Ok(204)), "{path:?}: {:?}", describe(&got));
        assert_eq!(counts.reqs.load(Ordering::SeqCst), 2, "{path:?}");
    });
}

// ---------------------------------------------------------------------------------------
// The engine's admission: small servers, bursts, lookups.

/// Engine tests measure bursts: one at a time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

fn tally_bad(results: &[(String, HangupResult)]) -> Vec<String> {
    results
        .iter()
        .filter(|(_, r)| status_of(r) != Status::Ok)
        .map(|(id, r)| format!("{id}: {:?}", r.as_ref().map_err(|e| e.to_string())))
        .collect()
}

/// The issue's small server with an explicit bulk `max_parallel` of 500 (honoured, as
/// the issue requires): 600 hangups, 3 s timeout, default retries. The connect window
/// must pace the connects so that the backlog of 5 survives: all OK.
#[test]
fn bulk_max_parallel_500_against_a_backlog_5_server_all_ok() {
    let _one = one_at_a_time();
    if !have_tool("python3") {
        return;
    }
    support::raise_fd_limit();
    let server = python_server();
    let mut o = Options::new();
    o.set_base_url(&format!("http://127.0.0.1:{}", server.port))
        .unwrap();
    o.set_timeout(Duration::from_secs(3)).unwrap();
    let c = Client::with_options(AUTH_ID, API_KEY, &o).unwrap();
    let ids: Vec<String> = (0..600).map(|i| format!("bulk-{i}")).collect();
    let t = Instant::now();
    let got = c.hangup_many(&ids, 500).unwrap();
    let took = t.elapsed();
    let pairs: Vec<(String, HangupResult)> = ids.into_iter().zip(got).collect();
    let bad = tally_bad(&pairs);
    assert!(
        bad.is_empty(),
        "{} of 600 not OK in {took:?}: {:#?}",
        bad.len(),
        &bad[..bad.len().min(8)]
    );
}

/// 1,000 async hangups at once against the backlog-5 server (default max_connections
/// 64): all OK, each once. The timeout is ample (the burst takes 1.7-2.6 s alone under
/// `stress-ng --cpu 2` on 2 cores; with 3 s, a Python server starved of CPU by the other
/// tests of the file and other load let a request wait past it, 2 runs in 10).
#[test]
fn a_thousand_async_against_a_backlog_5_server_all_ok() {
    let _one = one_at_a_time();
    if !have_tool("python3") {
        return;
    }
    let server = python_server();
    let mut o = Options::new();
    o.set_base_url(&format!("http://127.0.0.1:{}", server.port))
        .unwrap();
    o.set_timeout(Duration::from_secs(6)).unwrap();
    let c = Client::with_options(AUTH_ID, API_KEY, &o).unwrap();
    let (tx, rx) = mpsc::channel();
    for i in 0..1000 {
        let tx = tx.clone();
        c.hangup_async(format!("a-{i}"), move |id, r| {
            let _ = tx.send((id, r));
        })
        .unwrap();
    }
    let mut got = Vec::new();
    for _ in 0..1000 {
        got.push(
            rx.recv_timeout(Duration::from_secs(30))
                .expect("an outcome"),
        );
    }
    assert!(
        rx.recv_timeout(Duration::from_millis(200)).is_err(),
        "an extra outcome"
    );
    let bad = tally_bad(&got);
    assert!(
        bad.is_empty(),
        "{} of 1000 not OK: {:#?}",
        bad.len(),
        &bad[..bad.len().min(8)]
    );
}

/// A resolver that fails its first lookup and answers the next: the burst waiting on
/// the failed lookup ends NETWORK_ERROR at once (not TIMEOUT), each once; the next
/// hangups look up again and succeed.
#[test]
fn a_lookup_that_fails_then_succeeds() {
    let _one = one_at_a_time();
    let (port, _) = plain_server(|_, mut s, _| {
        while read_head(&mut s) {
            if s.write_all(b"HTTP/1.1 204 No Content\r\n\r\n").is_err() {
                return;
            }
        }
    });
    let calls = Arc::new(AtomicUsize::new(0));
    let c2 = calls.clone();
    let mut o = Options::new();
    o.set_base_url("http://flaky.example.test").unwrap();
    o.allow_insecure_http(true);
    o.set_timeout(Duration::from_secs(3)).unwrap();
    o.set_resolver(Arc::new(move |_: &str| {
        std::thread::sleep(Duration::from_millis(100));
        if c2.fetch_add(1, Ordering::SeqCst) == 0 {
            Err(std::io::Error::other("SERVFAIL"))
        } else {
            Ok(vec![std::net::SocketAddr::from(([127, 0, 0, 1], port))])
        }
    }));
    // Not a URL port: the resolver's port is used? keep the test honest about it.
    let c = Client::with_options(AUTH_ID, API_KEY, &o).unwrap();
    let (tx, rx) = mpsc::channel();
    let t = Instant::now();
    for i in 0..30 {
        let tx = tx.clone();
        c.hangup_async(format!("d-{i}"), move |id, r| {
            let _ = tx.send((id, r));
        })
        .unwrap();
    }
    let mut first = Vec::new();
    for _ in 0..30 {
        first.push(
            rx.recv_timeout(Duration::from_secs(10))
                .expect("an outcome"),
        );
    }
    let took = t.elapsed();
    assert!(
        took < Duration::from_millis(1500),
        "first burst took {took:?}"
    );
    for (id, r) in &first {
        let s = status_of(r);
        assert!(
            s == Status::NetworkError || s == Status::Ok,
            "{id}: {:?}",
            r.as_ref().map_err(|e| e.to_string())
        );
    }
    // The next burst: a new lookup, which answers.
    let got = c.hangup_many(&(0..30).map(|i| format!("e-{i}")).collect::<Vec<_>>(), 30);
    let got = got.unwrap();
    let bad: Vec<_> = got.iter().filter(|r| status_of(r) != Status::Ok).collect();
    assert!(bad.is_empty(), "after the failure: {:?}", describe(&got));
    assert!(
        calls.load(Ordering::SeqCst) <= 3,
        "lookups: {}",
        calls.load(Ordering::SeqCst)
    );
}

/// Happy Eyeballs with a black-holed first address: a burst of 300 async hangups with a
/// 1 s connect timeout; the raced second address answers. All OK, and quickly (the
/// 250 ms attempt delay is not a connect timeout; the window must not collapse).
#[test]
fn a_black_holed_first_address_does_not_stall_a_burst() {
    let _one = one_at_a_time();
    let hole = support::black_hole(std::net::SocketAddrV4::new(
        [127, 0, 0, 9].into(),
        support::free_port(),
    ));
    let hole = match hole {
        Ok(h) => h,
        Err(e) => {
            eprintln!("no black hole: {e}");
            return;
        }
    };
    let (port, counts) = plain_server(|_, mut s, _| {
        while read_head(&mut s) {
            if s.write_all(b"HTTP/1.1 204 No Content\r\n\r\n").is_err() {
                return;
            }
        }
    });
    let dead = hole.addr;
    let mut o = Options::new();
    o.set_base_url("http://two.example.test").unwrap();
    o.allow_insecure_http(true);
    o.set_timeout(Duration::from_secs(3)).unwrap();
    o.set_connect_timeout(Duration::from_secs(1)).unwrap();
    o.set_resolver(Arc::new(move |_: &str| {
        Ok(vec![
            dead,
            std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        ])
    }));
    let c = Client::with_options(AUTH_ID, API_KEY, &o).unwrap();
    let (tx, rx) = mpsc::channel();
    let t = Instant::now();
    for i in 0..300 {
        let tx = tx.clone();
        c.hangup_async(format!("bh-{i}"), move |id, r| {
            let _ = tx.send((id, r));
        })
        .unwrap();
    }
    let mut got = Vec::new();
    for _ in 0..300 {
        got.push(
            rx.recv_timeout(Duration::from_secs(15))
                .expect("an outcome"),
        );
    }
    let took = t.elapsed();
    let bad = tally_bad(&got);
    assert!(
        bad.is_empty(),
        "{} not OK: {:#?}",
        bad.len(),
        &bad[..bad.len().min(5)]
    );
    assert!(
        took < Duration::from_millis(1500),
        "took {took:?}, conns {}",
        counts.conns.load(Ordering::SeqCst)
    );
}

/// Exactly once under mixed faults, with callbacks that re-enter: 1,000 async hangups
/// (204, 404, drop-then-204, 503-then-204, slow, hang) with a 1.5 s timeout, each of
/// whose callbacks calls `hangup_many` (3 ids, mixed) from inside the callback. Every
/// async id gets exactly one callback with its allowed status; every nested bulk call
/// returns one outcome per id; nothing is left hanging.
#[test]
fn exactly_once_with_reentrant_bulk_calls_from_callbacks_under_mixed_faults() {
    let _one = one_at_a_time();
    support::raise_fd_limit();
    let server = support::TestServer::start();
    let mut o = Options::new();
    o.set_base_url(&server.base_url()).unwrap();
    o.set_timeout(Duration::from_millis(1500)).unwrap();
    // Room for every one at once: the per-host limit (64) with a sixth of 1,000 holding
    // their connection to the deadline would leave the rest TIMEOUT by design.
    o.set_max_connections(1024).unwrap();
    let c = Arc::new(Client::with_options(AUTH_ID, API_KEY, &o).unwrap());
    let kinds = ["ok", "nf-flat", "drop-1", "flaky-503-1", "slow-200", "hang"];
    let allowed = |id: &str, s: Status| -> bool {
        if id.starts_with("flaky-") {
            // SERVER_ERROR when the 503 came slowly in the burst: the retry policy still
            // reserves up to 1 s after a server's answer (see the test below).
            s == Status::Ok || s == Status::ServerError
        } else if id.starts_with("ok-") || id.starts_with("drop-") {
            s == Status::Ok
        } else if id.starts_with("nf-flat-") {
            s == Status::NotFound
        } else if id.starts_with("slow-") {
            s == Status::Ok || s == Status::Timeout
        } else {
            s == Status::Timeout
        }
    };
    const N: usize = 1000;
    let (tx, rx) = mpsc::channel::<(String, HangupResult, Vec<(String, Status)>)>();
    for i in 0..N {
        let id = format!("{}-r{i}", kinds[i % kinds.len()]);
        let (tx, c2) = (tx.clone(), Arc::clone(&c));
        c.hangup_async(id, move |id, r| {
            let nested_ids: Vec<String> = (0..3)
                .map(|k| format!("{}-n{i}x{k}", ["ok", "nf-flat", "drop-1"][k]))
                .collect();
            let nested = match c2.hangup_many(&nested_ids, 3) {
                Ok(v) => nested_ids
                    .iter()
                    .cloned()
                    .zip(v.iter().map(status_of))
                    .collect(),
                Err(e) => vec![("bulk refused".to_string(), e.status())],
            };
            let _ = tx.send((id, r, nested));
        })
        .unwrap();
    }
    drop(tx);
    let mut seen = std::collections::HashMap::<String, usize>::new();
    let mut bad = Vec::new();
    let until = Instant::now() + Duration::from_secs(60);
    while seen.len() < N {
        let left = until.saturating_duration_since(Instant::now());
        let Ok((id, r, nested)) = rx.recv_timeout(left) else {
            panic!("only {} of {N} callbacks within 60 s", seen.len());
        };
        *seen.entry(id.clone()).or_default() += 1;
        if !allowed(&id, status_of(&r)) {
            bad.push(format!("{id}: {:?}", r.as_ref().map_err(|e| e.to_string())));
        }
        if nested.len() != 3 {
            bad.push(format!("{id}: nested {nested:?}"));
        }
        for (nid, s) in nested {
            if !allowed(&nid, s) {
                bad.push(format!("{nid}: {s:?}"));
            }
        }
    }
    assert!(
        rx.recv_timeout(Duration::from_millis(500)).is_err(),
        "a second callback"
    );
    assert!(seen.values().all(|&n| n == 1));
    assert!(
        bad.is_empty(),
        "{} wrong: {:#?}",
        bad.len(),
        &bad[..bad.len().min(10)]
    );
}

/// Through tinyproxy (MaxClients 100): CONNECT then TLS to a TLS server, 400 async
/// hangups at once and a bulk call of 200 with max_parallel 50: all OK (the per-host
/// limit of 64 keeps the burst under the proxy's limit).
#[test]
fn a_burst_through_tinyproxy_then_tls_is_all_ok() {
    let _one = one_at_a_time();
    if !have_tool("tinyproxy") {
        return;
    }
    let dir = support::scratch("review_wire", "tinyproxy");
    let pport = support::free_port();
    let conf = dir.join("tinyproxy.conf");
    std::fs::write(
        &conf,
        format!(
            "Port {pport}\nListen 127.0.0.1\nTimeout 30\nAllow 127.0.0.1\nMaxClients 100\nLogLevel Critical\n\
             PidFile \"{}\"\nUser root\nGroup root\n",
            dir.join("pid").display()
        ),
    )
    .unwrap();
    struct Kill(Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _proxy = Kill(
        Command::new("tinyproxy")
            .arg("-d")
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    support::wait_for_port(pport);
    let (port, counts) = tls_server(|_, _, tls| {
        Some(support::tls_records(
            tls,
            b"HTTP/1.1 204 No Content\r\n\r\n",
        ))
    });
    let mut o = Options::new();
    o.set_ca_file(support::tls_fixtures().join("ca.pem").to_str().unwrap())
        .unwrap();
    o.set_base_url(&format!("https://localhost:{port}"))
        .unwrap();
    o.set_proxy(&format!("http://127.0.0.1:{pport}")).unwrap();
    o.set_timeout(Duration::from_secs(5)).unwrap();
    let c = Client::with_options(AUTH_ID, API_KEY, &o).unwrap();
    let (tx, rx) = mpsc::channel();
    for i in 0..400 {
        let tx = tx.clone();
        c.hangup_async(format!("p-{i}"), move |id, r| {
            let _ = tx.send((id, r));
        })
        .unwrap();
    }
    let mut got = Vec::new();
    for _ in 0..400 {
        got.push(
            rx.recv_timeout(Duration::from_secs(30))
                .expect("an outcome"),
        );
    }
    let bad = tally_bad(&got);
    assert!(
        bad.is_empty(),
        "{} of 400 not OK: {:#?}",
        bad.len(),
        &bad[..bad.len().min(5)]
    );
    let ids: Vec<String> = (0..200).map(|i| format!("pb-{i}")).collect();
    let bulk = c.hangup_many(&ids, 50).unwrap();
    let pairs: Vec<_> = ids.into_iter().zip(bulk).collect();
    let bad = tally_bad(&pairs);
    assert!(
        bad.is_empty(),
        "{} of 200 not OK: {:#?} (server conns {})",
        bad.len(),
        &bad[..bad.len().min(5)],
        counts.conns.load(Ordering::SeqCst)
    );
}
