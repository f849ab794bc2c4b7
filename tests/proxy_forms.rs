//! Proxies as deployed (issue 21, part 4): Debian's stock Squid allows CONNECT only to
//! port 443, so plain http must go to a proxy in absolute form (RFC 9112 3.2.2), as
//! libcurl sends it; https keeps its CONNECT tunnel. A proxy that cannot be reached is
//! named in the message, without its credentials.
//!
//! The proxy here is a real one on 127.0.0.1, written to behave like Squid: CONNECT to
//! any port but 443 is refused with 403 (unless told otherwise), an absolute-form
//! request is forwarded to its origin in origin form (without `Proxy-Authorization`)
//! and its answer relayed, on a keep-alive connection; an origin-form request is refused
//! with 400, as Squid refuses a URL without a host. It records every request head.

mod support;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use support::{free_port, read_head_text, seed_calls, status_of};
use tryvox_core::{Client, HangupResult, Options, Status};
use tryvox_sim::server::{DEFAULT_ACCOUNT as ACCOUNT, DEFAULT_API_KEY as KEY};

/// What the proxy saw: each request head with the number of the client connection that
/// carried it.
#[derive(Default)]
struct Seen {
    heads: Mutex<Vec<(usize, String)>>,
}

struct SquidLike {
    port: u16,
    seen: Arc<Seen>,
    server: support::Loopback,
}

impl Drop for SquidLike {
    fn drop(&mut self) {
        self.server.stop();
    }
}

impl SquidLike {
    /// `connect_anywhere`: CONNECT to any port is tunnelled, not only to 443.
    fn start(connect_anywhere: bool) -> SquidLike {
        let seen = Arc::new(Seen::default());
        let seen2 = seen.clone();
        let server = support::serve_each(move |n, s| serve(s, n, &seen2, connect_anywhere));
        SquidLike {
            port: server.port(),
            seen,
            server,
        }
    }

    fn url(&self, userinfo: &str) -> String {
        format!("http://{userinfo}127.0.0.1:{}", self.port)
    }

    fn heads(&self) -> Vec<(usize, String)> {
        self.seen.heads.lock().unwrap().clone()
    }
}

fn serve(mut client: TcpStream, conn: usize, seen: &Seen, connect_anywhere: bool) {
    let _ = client.set_read_timeout(Some(Duration::from_secs(10)));
    while let Some(head) = read_head_text(&mut client) {
        seen.heads.lock().unwrap().push((conn, head.clone()));
        let mut lines = head.split("\r\n");
        let line = lines.next().unwrap_or_default();
        let mut parts = line.split(' ');
        let (method, target) = (
            parts.next().unwrap_or_default(),
            parts.next().unwrap_or_default(),
        );
        if method == "CONNECT" {
            let port = target.rsplit_once(':').map_or("", |(_, p)| p);
            if port != "443" && !connect_anywhere {
                // Squid's stock `http_access deny CONNECT !SSL_ports`.
                let _ = client.write_all(
                    b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
                return;
            }
            let Ok(up) = TcpStream::connect(target) else {
                let _ = client.write_all(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n");
                return;
            };
            let _ = client.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n");
            let _ = client.set_read_timeout(None);
            let (mut c2, mut u2) = (client.try_clone().unwrap(), up.try_clone().unwrap());
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut u2, &mut c2);
                let _ = c2.shutdown(Shutdown::Both);
            });
            let (mut c, mut u) = (client, up);
            let _ = std::io::copy(&mut c, &mut u);
            let _ = u.shutdown(Shutdown::Both);
            return;
        }
        // Absolute form: http://host:port/path.
        let Some((authority, path)) = target
            .strip_prefix("http://")
            .and_then(|rest| rest.find('/').map(|i| rest.split_at(i)))
        else {
            let _ = client.write_all(
                b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            );
            return;
        };
        let Ok(mut up) = TcpStream::connect(authority) else {
            let _ = client.write_all(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n");
            return;
        };
        let _ = up.set_read_timeout(Some(Duration::from_secs(10)));
        // One upstream connection per request, read to its end: the answer's own framing
        // (Content-Length, chunked, none for a 204) then carries it to the client.
        let mut fwd = format!("{method} {path} HTTP/1.1\r\n");
        for h in lines.filter(|h| !h.is_empty()) {
            let name = h.split(':').next().unwrap_or_default().to_ascii_lowercase();
            if !matches!(
                name.as_str(),
                "proxy-authorization" | "proxy-connection" | "connection"
            ) {
                fwd.push_str(h);
                fwd.push_str("\r\n");
            }
        }
        fwd.push_str("Connection: close\r\n\r\n");
        if up.write_all(fwd.as_bytes()).is_err() {
            return;
        }
        let mut answer = Vec::new();
        if up.read_to_end(&mut answer).is_err() {
            return;
        }
        let Some(end) = answer.windows(4).position(|w| w == b"\r\n\r\n") else {
            return;
        };
        // Hop-by-hop: the origin's `Connection: close` is not the client's.
        let mut out: Vec<u8> = String::from_utf8_lossy(&answer[..end])
            .split("\r\n")
            .filter(|h| !h.to_ascii_lowercase().starts_with("connection:"))
            .collect::<Vec<_>>()
            .join("\r\n")
            .into_bytes();
        out.extend_from_slice(&answer[end..]);
        if client.write_all(&out).is_err() {
            return;
        }
    }
}

fn client(base: &str, tweak: impl FnOnce(&mut Options)) -> Client {
    let mut o = Options::new();
    o.set_base_url(base).unwrap();
    o.set_timeout(Duration::from_secs(8)).unwrap();
    tweak(&mut o);
    Client::with_options(ACCOUNT, KEY, &o).unwrap()
}

/// Hangs up `ids` one each way: ids[0..3] blocking (one after the other), ids[3..6]
/// async, ids[6..9] in one bulk call. Returns (path, id, outcome).
fn every_path(c: &Client, ids: &[String]) -> Vec<(&'static str, String, HangupResult)> {
    let mut out = Vec::new();
    for id in &ids[0..3] {
        out.push(("blocking", id.clone(), c.hangup(id)));
    }
    let (tx, rx) = mpsc::channel();
    for id in &ids[3..6] {
        let tx = tx.clone();
        c.hangup_async(id.clone(), move |id, r| {
            let _ = tx.send((id, r));
        })
        .unwrap();
    }
    for _ in 3..6 {
        let (id, r) = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("an async callback within 30 s");
        out.push(("async", id, r));
    }
    let bulk = c.hangup_many(&ids[6..9], 3).unwrap();
    for (id, r) in ids[6..9].iter().zip(bulk) {
        out.push(("bulk", id.clone(), r));
    }
    out
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.split("\r\n").skip(1).find_map(|h| {
        let (n, v) = h.split_once(':')?;
        n.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

#[test]
fn plain_http_goes_to_a_squid_like_proxy_in_absolute_form_on_every_path() {
    let sim = tryvox_sim::spawn(Default::default()).unwrap();
    let origin = format!("127.0.0.1:{}", sim.addr.port());
    // With and without credentials in the proxy URL (percent-encoded "us@er:p:ss").
    for userinfo in ["", "us%40er:p%3Ass@"] {
        let proxy = SquidLike::start(false);
        let c = client(&sim.base_url, |o| {
            o.set_proxy(&proxy.url(userinfo)).unwrap()
        });
        let ids = seed_calls(&sim, 9);
        let outcomes = every_path(&c, &ids);
        drop(c);
        let heads = proxy.heads();
        let report = || {
            // The heads hold the key: only their request lines are shown.
            let lines: Vec<_> = heads
                .iter()
                .map(|(n, h)| format!("#{n} {}", h.lines().next().unwrap_or_default()))
                .collect();
            format!("{outcomes:?}\nthe proxy saw:\n{}", lines.join("\n"))
        };
        for (path, id, r) in &outcomes {
            assert_eq!(r.as_ref().ok(), Some(&204), "{path} {id}: {}", report());
        }
        assert!(
            heads.iter().all(|(_, h)| !h.starts_with("CONNECT ")),
            "no tunnel for plain http: {}",
            report()
        );
        assert_eq!(
            heads.len(),
            ids.len(),
            "one request per hangup: {}",
            report()
        );
        for id in &ids {
            let line =
                format!("DELETE http://{origin}/v1/voice/accounts/{ACCOUNT}/calls/{id} HTTP/1.1");
            let (_, head) = heads
                .iter()
                .find(|(_, h)| h.starts_with(&format!("{line}\r\n")))
                .unwrap_or_else(|| panic!("no `{line}`: {}", report()));
            assert_eq!(header(head, "host"), Some(origin.as_str()), "{line}");
            let bearer = format!("Bearer {KEY}");
            assert!(
                header(head, "authorization").is_some_and(|v| v == bearer),
                "{line}: Authorization"
            );
            match userinfo {
                // base64("us@er:p:ss")
                "" => assert_eq!(header(head, "proxy-authorization"), None, "{line}"),
                _ => assert_eq!(
                    header(head, "proxy-authorization"),
                    Some("Basic dXNAZXI6cDpzcw=="),
                    "{line}"
                ),
            }
        }
        // The three blocking hangups, one after the other, kept one proxy connection.
        let blocking: std::collections::BTreeSet<_> = heads
            .iter()
            .filter(|(_, h)| {
                ids[0..3]
                    .iter()
                    .any(|id| h.contains(&format!("/calls/{id} ")))
            })
            .map(|(n, _)| *n)
            .collect();
        assert_eq!(
            blocking.len(),
            1,
            "keep-alive through the proxy: {}",
            report()
        );
        let ended = support::hangup_log(&sim);
        for id in &ids {
            assert!(
                ended.iter().any(|(_, c, _)| c == id),
                "the simulator ended {id}"
            );
        }
    }
}

#[test]
fn https_still_tunnels_through_connect() {
    let fx = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tls");
    let sim = tryvox_sim::spawn(tryvox_sim::Config {
        tls: Some((fx.join("server.pem"), fx.join("server.key"))),
        ..Default::default()
    })
    .unwrap();
    let target = format!("127.0.0.1:{}", sim.addr.port());
    let tls_client = |proxy: &str| {
        client(&sim.base_url, |o| {
            o.set_proxy(proxy).unwrap();
            o.set_ca_file(fx.join("ca.pem").to_str().unwrap()).unwrap();
            o.set_max_retries(0).unwrap();
        })
    };

    // A proxy that tunnels to any port: every path reaches the simulator (its 404 for
    // calls it does not know: seeding would need its CA), through CONNECT only, the
    // credentials on the CONNECT; the request itself is inside TLS, unseen.
    let proxy = SquidLike::start(true);
    let c = tls_client(&proxy.url("u:p@"));
    let ids: Vec<String> = (0..9).map(|i| format!("no-such-call-{i}")).collect();
    for (path, id, r) in every_path(&c, &ids) {
        assert_eq!(status_of(&r), Status::NotFound, "{path} {id}: {r:?}");
    }
    drop(c);
    let heads = proxy.heads();
    assert!(!heads.is_empty());
    for (_, h) in &heads {
        assert!(
            h.starts_with(&format!("CONNECT {target} HTTP/1.1\r\n")),
            "{h}"
        );
        assert_eq!(header(h, "proxy-authorization"), Some("Basic dTpw"));
    }

    // Squid's rule, CONNECT to 443 only: the proxy's 403, named as the proxy's.
    let squid = SquidLike::start(false);
    let c = tls_client(&squid.url(""));
    let r = c.hangup("no-such-call");
    let e = r.unwrap_err();
    assert_eq!(e.status(), Status::NetworkError, "{e}");
    assert!(
        e.message()
            .contains(&format!("the proxy 127.0.0.1:{} refused", squid.port))
            && e.message().contains("403"),
        "{e}"
    );
}

#[test]
fn a_proxy_that_cannot_be_reached_is_named_without_its_credentials() {
    let sim = tryvox_sim::spawn(Default::default()).unwrap();
    let port = free_port();
    let c = client(&sim.base_url, |o| {
        o.set_proxy(&format!("http://pr0xy-user:pr0xy-secret@127.0.0.1:{port}"))
            .unwrap();
        o.set_timeout(Duration::from_secs(3)).unwrap();
    });
    let ids = seed_calls(&sim, 9);
    let want = format!("could not connect to the proxy 127.0.0.1:{port}: connection refused");
    for (path, id, r) in every_path(&c, &ids) {
        assert_eq!(status_of(&r), Status::NetworkError, "{path} {id}: {r:?}");
        let msg = r.unwrap_err().message().to_owned();
        assert!(msg.contains(&want), "{path}: {msg}");
        for secret in ["pr0xy-user", "pr0xy-secret", KEY] {
            assert!(!msg.contains(secret), "{path}: the message shows a secret");
        }
    }
    assert!(
        support::hangup_log(&sim).is_empty(),
        "nothing reached the simulator"
    );

    // A proxy whose name does not resolve (the resolver seam: no DNS in tests).
    let c = client(&sim.base_url, |o| {
        o.set_proxy(&format!("http://pr0xy-user:pr0xy-secret@localhost:{port}"))
            .unwrap();
        o.set_timeout(Duration::from_secs(3)).unwrap();
        o.set_resolver(Arc::new(|_: &str| {
            Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "no such host",
            ))
        }));
    });
    let want =
        format!("could not connect to the proxy localhost:{port}: its host name did not resolve");
    for (path, id, r) in every_path(&c, &ids) {
        assert_eq!(status_of(&r), Status::NetworkError, "{path} {id}: {r:?}");
        let msg = r.unwrap_err().message().to_owned();
        assert!(msg.contains(&want), "{path}: {msg}");
        assert!(
            !msg.contains("pr0xy-"),
            "{path}: the message shows a secret"
        );
    }
    assert!(support::hangup_log(&sim).is_empty());
}

/// Debian's Squid on a private port, configuration and directory, with its stock access
/// rules (CONNECT to port 443 only); killed on drop.
struct Squid {
    child: std::process::Child,
    port: u16,
    dir: std::path::PathBuf,
}

impl Drop for Squid {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Squid {
    fn start() -> Option<Squid> {
        if !support::have_tool("squid") {
            return None;
        }
        let dir = support::scratch("proxy_forms", "squid");
        // Started as root, Squid runs as its own user, who must write its logs here.
        // SAFETY: plain libc calls; getpwnam's result is read at once.
        unsafe {
            if libc::geteuid() == 0 {
                let pw = libc::getpwnam(c"proxy".as_ptr());
                if !pw.is_null() {
                    std::os::unix::fs::chown(&dir, Some((*pw).pw_uid), Some((*pw).pw_gid)).unwrap();
                }
            }
        }
        let port = free_port();
        let conf = dir.join("squid.conf");
        let d = dir.display();
        std::fs::write(
            &conf,
            format!(
                "http_port 127.0.0.1:{port}\n\
                 pid_filename {d}/squid.pid\n\
                 cache_log {d}/cache.log\n\
                 access_log stdio:{d}/access.log\n\
                 coredump_dir {d}\n\
                 cache deny all\n\
                 pinger_enable off\n\
                 shutdown_lifetime 0 seconds\n\
                 # Debian's stock rules:\n\
                 acl SSL_ports port 443\n\
                 acl Safe_ports port 80 443 1025-65535\n\
                 acl CONNECT method CONNECT\n\
                 http_access deny !Safe_ports\n\
                 http_access deny CONNECT !SSL_ports\n\
                 http_access allow localhost\n\
                 http_access deny all\n"
            ),
        )
        .unwrap();
        let mut cmd = std::process::Command::new("squid");
        support::die_with_parent(&mut cmd);
        let child = cmd
            .arg("-N")
            .arg("-f")
            .arg(&conf)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let mut squid = Squid { child, port, dir };
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            let gone = squid.child.try_wait().unwrap();
            assert!(
                gone.is_none() && std::time::Instant::now() < deadline,
                "squid did not start ({gone:?}); its log:\n{}",
                squid.log("cache.log")
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(squid)
    }

    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.join(name)).unwrap_or_default()
    }

    /// Waits up to 5 s for the access log to hold every one of `wanted`.
    fn logged(&self, wanted: &[String]) -> String {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let text = self.log("access.log");
            if wanted.iter().all(|w| text.contains(w.as_str())) {
                return text;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "squid's access log lacks some of {wanted:#?}:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

#[test]
fn through_debians_squid_plain_http_works_and_https_meets_its_connect_rule() {
    let Some(squid) = Squid::start() else { return };
    let proxy = format!("http://127.0.0.1:{}", squid.port);
    let sim = tryvox_sim::spawn(Default::default()).unwrap();
    let c = client(&sim.base_url, |o| o.set_proxy(&proxy).unwrap());
    let ids = seed_calls(&sim, 9);
    for (path, id, r) in every_path(&c, &ids) {
        assert_eq!(
            r.as_ref().ok(),
            Some(&204),
            "{path} {id}; squid's log:\n{}",
            squid.log("access.log")
        );
    }
    let origin = format!("127.0.0.1:{}", sim.addr.port());
    let wanted: Vec<String> = ids
        .iter()
        .map(|id| format!(" DELETE http://{origin}/v1/voice/accounts/{ACCOUNT}/calls/{id} "))
        .collect();
    let text = squid.logged(&wanted);
    assert!(
        !text.contains(" CONNECT "),
        "no tunnel for plain http:\n{text}"
    );

    // https to a port other than 443 goes through CONNECT, which this Squid refuses: the
    // message says the proxy refused it, and which proxy.
    let fx = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tls");
    let tls = tryvox_sim::spawn(tryvox_sim::Config {
        tls: Some((fx.join("server.pem"), fx.join("server.key"))),
        ..Default::default()
    })
    .unwrap();
    let c = client(&tls.base_url, |o| {
        o.set_proxy(&proxy).unwrap();
        o.set_ca_file(fx.join("ca.pem").to_str().unwrap()).unwrap();
    });
    let e = c.hangup("no-such-call").unwrap_err();
    assert_eq!(e.status(), Status::NetworkError, "{e}");
    assert!(
        e.message()
            .contains(&format!("the proxy 127.0.0.1:{} refused", squid.port))
            && e.message().contains("403"),
        "{e}"
    );
    let text = squid.logged(&[format!(" CONNECT 127.0.0.1:{} ", tls.addr.port())]);
    assert!(text.contains("TCP_DENIED/403 "), "{text}");
}

/// A proxy answering every request head it reads with `answer` (keep-alive); returns its
/// port and the heads.
fn answering_proxy(answer: &'static str) -> (u16, Arc<Mutex<Vec<String>>>) {
    let heads: Arc<Mutex<Vec<String>>> = Arc::default();
    let h2 = heads.clone();
    let server = support::serve_each(move |_, mut s| {
        let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
        while let Some(head) = read_head_text(&mut s) {
            h2.lock().unwrap().push(head);
            if s.write_all(answer.as_bytes()).is_err() {
                return;
            }
        }
    });
    (server.port(), heads)
}

/// Nine calls of a fresh simulator hung up through the proxy on `port` (three each way:
/// blocking, async, bulk), with `retries`.
fn nine_hangups_through(
    port: u16,
    retries: u32,
) -> (
    tryvox_sim::Running,
    Vec<(&'static str, String, HangupResult)>,
) {
    let sim = tryvox_sim::spawn(Default::default()).unwrap();
    let c = client(&sim.base_url, |o| {
        o.set_proxy(&format!("http://127.0.0.1:{port}")).unwrap();
        o.set_max_retries(retries).unwrap();
    });
    let ids = seed_calls(&sim, 9);
    let outcomes = every_path(&c, &ids);
    (sim, outcomes)
}

/// A proxy that wants credentials answers 407 (RFC 9110 15.5.8), which only a proxy sends:
/// the outcome names the proxy, as its refusal of a CONNECT does, and is not retried.
#[test]
fn a_proxys_407_is_the_proxys_refusal_not_the_apis_answer() {
    let (port, heads) = answering_proxy(
        "HTTP/1.1 407 Proxy Authentication Required\r\n\
         Proxy-Authenticate: Basic realm=\"proxy\"\r\n\
         Content-Length: 0\r\n\r\n",
    );
    let (sim, outcomes) = nine_hangups_through(port, 3);
    for (path, id, r) in outcomes {
        let e = r.unwrap_err();
        assert_eq!(e.status(), Status::NetworkError, "{path} {id}: {e}");
        assert_eq!(e.http_status(), 407, "{path}");
        let msg = e.message();
        assert!(
            msg.contains(&format!("the proxy 127.0.0.1:{port} refused")) && msg.contains("407"),
            "{path}: {msg}"
        );
        assert!(!msg.contains(KEY));
    }
    let heads = heads.lock().unwrap();
    assert_eq!(heads.len(), 9, "one request per hangup, none retried");
    assert!(heads.iter().all(|h| h.starts_with("DELETE http://")));
    assert!(support::hangup_log(&sim).is_empty());
}

/// A proxy that cannot reach the API answers 502 with its own page (Squid's "ERR_CONNECT_FAIL"):
/// a server error, retried as one, in words that name the proxy.
#[test]
fn a_proxys_502_names_the_proxy_and_is_retried_as_a_server_error() {
    let (port, heads) = answering_proxy(
        "HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/html\r\nContent-Length: 27\r\n\r\n\
         <html>ERR_CONNECT_FAIL</html>",
    );
    let (_sim, outcomes) = nine_hangups_through(port, 1);
    for (path, id, r) in outcomes {
        let e = r.unwrap_err();
        assert_eq!(e.status(), Status::ServerError, "{path} {id}: {e}");
        assert_eq!(e.http_status(), 502, "{path}");
        assert!(
            e.message().starts_with(&format!(
                "the proxy 127.0.0.1:{port} answered 502: it, or a gateway behind it, could \
                 not reach the TryVox server"
            )),
            "{path}: {}",
            e.message()
        );
    }
    assert_eq!(heads.lock().unwrap().len(), 18, "each hangup retried once");
}

/// A proxy password of thousands of characters (a token used as one): its
/// Proxy-Authorization makes each request head larger than the usual; every path still
/// sends it whole.
#[test]
fn long_proxy_credentials_go_whole_on_every_path() {
    let sim = tryvox_sim::spawn(Default::default()).unwrap();
    let proxy = SquidLike::start(false);
    let password = "x".repeat(3000);
    let c = client(&sim.base_url, |o| {
        o.set_proxy(&proxy.url(&format!("user:{password}@")))
            .unwrap()
    });
    let ids = seed_calls(&sim, 9);
    for (path, id, r) in every_path(&c, &ids) {
        assert_eq!(r.as_ref().ok(), Some(&204), "{path} {id}: {r:?}");
    }
    use base64::Engine as _;
    let token = base64::engine::general_purpose::STANDARD.encode(format!("user:{password}"));
    let heads = proxy.heads();
    assert_eq!(heads.len(), 9);
    for (_, h) in heads {
        assert_eq!(
            header(&h, "proxy-authorization"),
            Some(format!("Basic {token}").as_str())
        );
    }
}

/// A peer that echoes the request it got (a proxy's error page quoting it, here in a
/// JSON error): the message shows neither the key nor the proxy's credentials, in any of
/// the forms they travel in (the Basic token, user:password, the password).
#[test]
fn an_echo_of_the_request_shows_neither_the_key_nor_the_proxys_credentials() {
    // One connection at a time, on the accept thread.
    let port = support::accept_each(|_, mut s| {
        let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
        let Some(head) = read_head_text(&mut s) else {
            return;
        };
        let echo = head.trim_end().replace("\r\n", " | ").replace('"', "'");
        let body = format!("{{\"error\":{{\"code\":\"E\",\"message\":\"you sent: {echo}\"}}}}");
        let _ = write!(
            s,
            "HTTP/1.1 403 Forbidden\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
    })
    .port();
    let password = "s3cretProxyPw";
    use base64::Engine as _;
    let token = base64::engine::general_purpose::STANDARD.encode(format!("us@er:{password}"));
    let sim = tryvox_sim::spawn(Default::default()).unwrap();
    let c = client(&sim.base_url, |o| {
        o.set_proxy(&format!("http://us%40er:{password}@127.0.0.1:{port}"))
            .unwrap();
        o.set_max_retries(0).unwrap();
    });
    let ids = seed_calls(&sim, 9);
    for (path, id, r) in every_path(&c, &ids) {
        let e = r.unwrap_err();
        assert_eq!(e.status(), Status::Forbidden, "{path} {id}: {e}");
        let m = e.message();
        assert!(m.contains("you sent: DELETE http://"), "{path}: {m}");
        for secret in [KEY, password, token.as_str(), "us%40er:", "us@er:"] {
            assert!(!m.contains(secret), "{path}: {secret} in {m}");
        }
    }
}
