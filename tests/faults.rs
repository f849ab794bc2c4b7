//! Fault injection against real servers: nginx closing idle keep-alive connections at
//! random moments, raw TCP peers that break HTTP in the ways networks do, and a forward
//! proxy (tinyproxy), live and dead. Each fault must give the documented status within
//! the deadline, never a hang or a crash.

mod support;

use support::procs::tinyproxy;
use support::{free_port, have_tool, scratch, wait_for_port, Proc};

use std::io::Write;
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tryvox_core::{Client, Options, Status};
use tryvox_sim::server::{DEFAULT_ACCOUNT as ACCOUNT, DEFAULT_API_KEY as KEY};

fn client(base: &str, tweak: impl FnOnce(&mut Options)) -> Client {
    let mut o = Options::new();
    o.set_base_url(base).unwrap();
    tweak(&mut o);
    Client::with_options(ACCOUNT, KEY, &o).unwrap()
}

fn st(r: tryvox_core::HangupResult) -> Status {
    r.map(|_| Status::Ok).unwrap_or_else(|e| e.status())
}

#[test]
fn nginx_closing_idle_keepalive_connections_causes_no_spurious_failure() {
    if !have_tool("nginx") {
        return;
    }
    let dir = scratch("faults", "nginx");
    std::fs::create_dir_all(dir.join("tmp")).unwrap();
    let port = free_port();
    // nginx closes a connection that has been idle 300 ms: requests spaced around that
    // moment race the close, which is what a pooled client meets in production.
    // `master_process off`: one process serves, so killing it leaves no worker behind (a
    // master killed with SIGKILL cannot tell its worker to exit, and the worker lives on).
    std::fs::write(
        dir.join("nginx.conf"),
        format!(
            "master_process off; daemon off; error_log stderr crit; pid nginx.pid;\n\
             events {{ worker_connections 64; }}\n\
             http {{ access_log off; keepalive_timeout 300ms; client_body_temp_path tmp;\n\
             proxy_temp_path tmp; fastcgi_temp_path tmp; uwsgi_temp_path tmp; scgi_temp_path tmp;\n\
             server {{ listen 127.0.0.1:{port}; location / {{ return 204; }} }} }}\n"
        ),
    )
    .unwrap();
    let _nginx = Proc::spawn(
        Command::new("nginx")
            .arg("-p")
            .arg(&dir)
            .args(["-c", "nginx.conf"]),
    );
    wait_for_port(port);
    let retries = Arc::new(AtomicUsize::new(0));
    let r2 = Arc::clone(&retries);
    let c = client(&format!("http://127.0.0.1:{port}"), |o| {
        o.set_log_fn(Some(Arc::new(move |_, m: &str| {
            if m.contains("retry") {
                r2.fetch_add(1, Ordering::SeqCst);
            }
        })))
    });
    let mut spacing = 240u64;
    let n = 30;
    for i in 0..n {
        assert_eq!(
            st(c.hangup(&format!("call-{i}"))),
            Status::Ok,
            "request {i} after {spacing} ms idle"
        );
        spacing = 240 + (i as u64 * 37) % 130; // 240..370 ms, straddling the 300 ms close
        std::thread::sleep(Duration::from_millis(spacing));
    }
    println!(
        "nginx keepalive_timeout 300ms: {n} hangups spaced 240-370 ms, all OK, {} retried after a stale connection",
        retries.load(Ordering::SeqCst)
    );
}

/// A raw TCP peer that answers each connection with `behave`, counting connections.
fn raw_server(behave: fn(TcpStream)) -> (String, Arc<AtomicUsize>) {
    let server = support::serve_each(move |_, s| behave(s));
    (server.url(), server.accepted())
}

fn read_request(s: &mut TcpStream) {
    let _ = support::read_through_head(s);
}

/// Close with RST instead of FIN.
fn reset(s: TcpStream) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
    drop(s);
}

#[test]
fn broken_peers_give_the_right_status_within_the_deadline() {
    type Case = (&'static str, fn(TcpStream), Status, usize);
    let cases: [Case; 7] = [
        (
            "reset mid-response",
            |mut s| {
                read_request(&mut s);
                let _ = s.write_all(b"HTTP/1.1 204 No Con");
                reset(s);
            },
            Status::NetworkError,
            3,
        ),
        (
            "accept, then close without a byte",
            |mut s| {
                read_request(&mut s);
            },
            Status::NetworkError,
            3,
        ),
        ("reset on accept", reset, Status::NetworkError, 3),
        (
            "truncated error body",
            |mut s| {
                read_request(&mut s);
                let _ = s.write_all(
                    b"HTTP/1.1 404 Not Found\r\nContent-Length: 200\r\n\r\n{\"error\":\"call_alre",
                );
            },
            Status::NotFound,
            1,
        ),
        (
            "headers that never finish",
            |mut s| {
                read_request(&mut s);
                let _ = s.write_all(b"HTTP/1.1 204 No Content\r\nX-Slow: yes\r\n");
                std::thread::sleep(Duration::from_secs(30));
            },
            Status::Timeout,
            1,
        ),
        (
            "accepts and never answers",
            |mut s| {
                read_request(&mut s);
                std::thread::sleep(Duration::from_secs(30));
            },
            Status::Timeout,
            1,
        ),
        (
            "not HTTP at all",
            |mut s| {
                read_request(&mut s);
                let _ = s.write_all(b"220 mail.example.com ESMTP ready\r\n\r\n");
            },
            Status::ProtocolError,
            1,
        ),
    ];
    let deadline = Duration::from_millis(1500);
    let mut report = Vec::new();
    for (name, behave, want, conns) in cases {
        let (base, seen) = raw_server(behave);
        let c = client(&base, |o| o.set_timeout(deadline).unwrap());
        let t = Instant::now();
        let r = c.hangup("call-1");
        let took = t.elapsed();
        let got = st(r.clone());
        assert_eq!(got, want, "{name}: {r:?}");
        assert!(
            took < deadline + Duration::from_secs(2),
            "{name}: took {took:?}"
        );
        assert_eq!(seen.load(Ordering::SeqCst), conns, "{name}: connections");
        report.push(format!(
            "{name}: {got:?} in {} ms over {conns} connection(s)",
            took.as_millis()
        ));
    }
    println!("faults tried: {}\n  {}", report.len(), report.join("\n  "));
}

/// Waits up to 5 s for tinyproxy's log to hold a request line (the text after
/// `Request (file descriptor N): `) equal to one of `lines`: the witness that a request
/// went through the proxy (on 127.0.0.1, the server cannot tell a proxied connection from
/// a direct one).
fn proxy_logged(log: &Path, lines: &[String]) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let logged = text.lines().any(|l| {
            l.contains(": Request (file descriptor")
                && l.split_once("): ")
                    .is_some_and(|(_, req)| lines.iter().any(|w| w == req))
        });
        if logged {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "tinyproxy logged none of {lines:?}: the request did not go through the proxy.\n\
             tinyproxy's log:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn through_a_forward_proxy_and_a_dead_one() {
    if !have_tool("tinyproxy") {
        return;
    }
    let dir = scratch("faults", "tinyproxy");
    let (_proxy, proxy, log) = tinyproxy(&dir, 20);

    // https through CONNECT, to the simulator with a private CA.
    let fx = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tls");
    let sim = tryvox_sim::spawn(tryvox_sim::Config {
        tls: Some((fx.join("server.pem"), fx.join("server.key"))),
        ..Default::default()
    })
    .unwrap();
    let c = client(&sim.base_url, |o| {
        o.set_proxy(&proxy).unwrap();
        o.set_ca_file(fx.join("ca.pem").to_str().unwrap()).unwrap();
    });
    assert_eq!(
        st(c.hangup("no-such-call-tls")),
        Status::NotFound,
        "the simulator answered"
    );
    // The tunnel to this simulator's port is the proxy's: no other test uses this proxy.
    proxy_logged(
        &log,
        &[format!("CONNECT 127.0.0.1:{} HTTP/1.1", sim.addr.port())],
    );

    // Plain http through the proxy: the request itself, in absolute form (a proxy as
    // deployed may allow CONNECT to port 443 only).
    let plain = tryvox_sim::spawn(Default::default()).unwrap();
    let c = client(&plain.base_url, |o| o.set_proxy(&proxy).unwrap());
    assert_eq!(st(c.hangup("no-such-call-plain")), Status::NotFound);
    let target = format!("127.0.0.1:{}", plain.addr.port());
    let path = format!("/v1/voice/accounts/{ACCOUNT}/calls/no-such-call-plain");
    proxy_logged(&log, &[format!("DELETE http://{target}{path} HTTP/1.1")]);
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        !text.contains(&format!("CONNECT {target} ")),
        "no tunnel for plain http:\n{text}"
    );

    // A proxy nobody listens on: a network error, quickly, naming the proxy.
    let dead_port = free_port();
    let dead = format!("http://127.0.0.1:{dead_port}");
    let c = client(&plain.base_url, |o| {
        o.set_proxy(&dead).unwrap();
        o.set_timeout(Duration::from_secs(3)).unwrap();
    });
    let e = c.hangup("no-such-call").unwrap_err();
    assert_eq!(e.status(), Status::NetworkError, "{e}");
    assert!(
        e.message()
            .contains(&format!("the proxy 127.0.0.1:{dead_port}")),
        "{e}"
    );
}
