//! Found by a hostile review (2026-12-03): `drained` is set by the plain reads of the proxy's CONNECT answer and never
//! cleared once TLS runs in the tunnel, so over proxy+TLS the engine reuses a connection
//! in the same turn without a probe even when a full 4096-byte read left bytes behind.

mod support;

use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tryvox_core::{Client, HangupResult, Options, Status};

fn st(r: &HangupResult) -> Status {
    match r {
        Ok(_) => Status::Ok,
        Err(e) => e.status(),
    }
}

/// TLS server (optionally behind a CONNECT on the same socket). The first answer on a
/// connection is a 204 whose TLS record is exactly 4096 bytes on the wire, followed in
/// the same TCP write by a stray 404 record. Later answers are plain 204s.
fn tls_server(via_proxy: bool) -> (u16, Arc<AtomicUsize>, Arc<AtomicUsize>) {
    let reqs = Arc::new(AtomicUsize::new(0));
    let r2 = reqs.clone();
    let cfg = support::tls_server_config_without_tickets();
    let server = support::serve_each(move |_, mut sock| {
        let _ = sock.set_read_timeout(Some(Duration::from_secs(10)));
        if via_proxy {
            if !support::read_head(&mut sock) {
                return;
            }
            sock.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                .unwrap();
        }
        let mut conn = rustls::ServerConnection::new(cfg.clone()).unwrap();
        let mut n = 0;
        loop {
            let ok = {
                let mut tls = rustls::Stream::new(&mut conn, &mut sock);
                support::read_head(&mut tls)
            };
            if !ok {
                return;
            }
            r2.fetch_add(1, Ordering::SeqCst);
            if n == 0 {
                // 204 padded so that its record is 4096 bytes on the wire
                // (TLS 1.3: 5 header + 1 type + 16 tag = 22 overhead).
                let start = b"HTTP/1.1 204 No Content\r\nX-Pad: ".to_vec();
                let total = 4096 - 22;
                let mut p = start.clone();
                p.extend(std::iter::repeat_n(b'a', total - start.len() - 4));
                p.extend_from_slice(b"\r\n\r\n");
                let mut wire = support::tls_records(&mut conn, &p);
                assert_eq!(wire.len(), 4096, "first record size");
                let body = br#"{"error":"call_not_found","message":"stray"}"#;
                let stray = format!(
                            "HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{}",
                            body.len(),
                            std::str::from_utf8(body).unwrap()
                        );
                wire.extend(support::tls_records(&mut conn, stray.as_bytes()));
                let _ = sock.write_all(&wire);
            } else {
                let wire = support::tls_records(&mut conn, b"HTTP/1.1 204 No Content\r\n\r\n");
                let _ = sock.write_all(&wire);
            }
            n += 1;
        }
    });
    (server.port(), server.accepted(), reqs)
}

fn run(via_proxy: bool) -> Vec<Status> {
    let (port, conns, reqs) = tls_server(via_proxy);
    let mut o = Options::new();
    o.set_ca_file(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/tls/ca.pem")
            .to_str()
            .unwrap(),
    )
    .unwrap();
    if via_proxy {
        // The proxy's target is ignored by the test server (it is the TLS server too).
        o.set_base_url("https://localhost:1").unwrap();
        o.set_proxy(&format!("http://127.0.0.1:{port}")).unwrap();
    } else {
        o.set_base_url(&format!("https://localhost:{port}"))
            .unwrap();
        o.set_resolver(Arc::new(move |_: &str| {
            Ok(vec![std::net::SocketAddr::from(([127, 0, 0, 1], port))])
        }));
    }
    o.set_max_retries(0).unwrap();
    let c = Client::with_options("AC123456", "tvx_sk_review_SECRETKEY_0123456789", &o).unwrap();
    let v = c.hangup_many(&["call-a", "call-b"], 1).unwrap();
    let got: Vec<Status> = v.iter().map(st).collect();
    eprintln!(
        "via_proxy={via_proxy}: {got:?} {:?} conns={} reqs={}",
        v.iter()
            .map(|r| r.as_ref().err().map(|e| e.message().to_owned()))
            .collect::<Vec<_>>(),
        conns.load(Ordering::SeqCst),
        reqs.load(Ordering::SeqCst)
    );
    got
}

#[test]
fn stray_tls_record_after_4096_byte_read_direct() {
    assert_eq!(run(false), vec![Status::Ok, Status::Ok]);
}

#[test]
fn stray_tls_record_after_4096_byte_read_via_proxy() {
    assert_eq!(
        run(true),
        vec![Status::Ok, Status::Ok],
        "call-b got the stray 404 left in the socket (drained stale from the CONNECT read)"
    );
}
