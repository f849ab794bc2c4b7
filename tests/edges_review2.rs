//! Second hostile review of issue 18: what the first review's fixes introduced (bulk
//! admission counting queued jobs, the connect window, the 2xx body grace, fork and the
//! descriptor budget), against real servers on 127.0.0.1 through the public API. Each
//! test says what it shows and whether it was a finding (failing when written) or a
//! guard (passing, kept).

mod support;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use support::{status_of, API_KEY, AUTH_ID};
use tryvox_core::{Client, HangupResult, Options, Status};

/// Engine tests measure bursts and peaks: one at a time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

/// Reads one request head; its request line, None if the peer closed or went quiet.
fn read_request_line(s: &mut impl Read) -> Option<String> {
    let text = support::read_head_at_most(s, 64 * 1024)?;
    Some(text.lines().next().unwrap_or("").to_string())
}

/// The call id of a `DELETE .../calls/{id} HTTP/1.1` request line.
fn id_of(line: &str) -> String {
    let path = line.split(' ').nth(1).unwrap_or("");
    path.rsplit('/').next().unwrap_or("").to_string()
}

/// A threaded keep-alive server: `behave(request line, stream)` answers each request
/// (false: close the connection).
fn server(behave: impl Fn(&str, &mut TcpStream) -> bool + Send + Sync + 'static) -> u16 {
    let server = support::serve_each(move |_, mut s| {
        let _ = s.set_read_timeout(Some(Duration::from_secs(20)));
        let _ = s.set_nodelay(true);
        while let Some(line) = read_request_line(&mut s) {
            if !behave(&line, &mut s) {
                return;
            }
        }
    });
    server.port()
}

fn client(port: u16, timeout: Duration, retries: u32, max_connections: Option<usize>) -> Client {
    let mut o = Options::new();
    o.set_base_url(&format!("http://127.0.0.1:{port}")).unwrap();
    o.set_timeout(timeout).unwrap();
    o.set_max_retries(retries).unwrap();
    if let Some(n) = max_connections {
        o.set_max_connections(n).unwrap();
    }
    Client::with_options(AUTH_ID, API_KEY, &o).unwrap()
}

fn describe(r: &HangupResult) -> String {
    match r {
        Ok(code) => format!("Ok({code})"),
        Err(e) => format!("{:?}: {e}", e.status()),
    }
}

/// Requests in flight at the server (read, not yet answered), and the most seen at once.
#[derive(Default)]
struct Peak {
    now: AtomicUsize,
    max: AtomicUsize,
}

impl Peak {
    fn enter(&self) {
        let n = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.max.fetch_max(n, Ordering::SeqCst);
    }
    fn leave(&self) {
        self.now.fetch_sub(1, Ordering::SeqCst);
    }
}

/// FINDING (wrong contract: `max_parallel` not honoured; cost to a small server).
/// `Stats::in_flight` documents that a bulk call "may have more hangups in flight than
/// its `max_parallel`, never more requests", and the issue requires an explicit
/// `max_parallel` to be honoured for its batch. Since the admission change, the pump's
/// second loop (`while self.has_room()` over `batch.ready`) starts every queued job of a
/// batch without checking `batch.active < batch.max`; admission counts `active +
/// queued`, but a job waiting out a retry is neither, so while the first ids wait their
/// retry every other id is admitted, and when the waits end all of them go on the wire
/// at once. Here: 24 ids at `max_parallel` 3, each first answered 429 `Retry-After: 1`,
/// then 204 after 300 ms: the server sees up to 24 requests at once (3 before the
/// change, which checked `active < max` before starting a ready job).
#[test]
fn a_batch_never_has_more_requests_on_the_wire_than_its_max_parallel_after_retries() {
    let _one = one_at_a_time();
    let peak = Arc::new(Peak::default());
    let seen: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    let (p2, s2) = (peak.clone(), seen.clone());
    let port = server(move |line, s| {
        let id = id_of(line);
        let n = {
            let mut m = s2.lock().unwrap();
            let n = m.entry(id).or_insert(0);
            *n += 1;
            *n
        };
        p2.enter();
        let answer: &[u8] = if n == 1 {
            b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 1\r\nContent-Length: 0\r\n\r\n"
        } else {
            std::thread::sleep(Duration::from_millis(300));
            b"HTTP/1.1 204 No Content\r\n\r\n"
        };
        p2.leave();
        s.write_all(answer).is_ok()
    });
    let c = client(port, Duration::from_secs(10), 2, None);
    let ids: Vec<String> = (0..24).map(|i| format!("mp-{i}")).collect();
    let got = c.hangup_many(&ids, 3).unwrap();
    let bad: Vec<String> = got
        .iter()
        .zip(&ids)
        .filter(|(r, _)| !matches!(r, Ok(204)))
        .map(|(r, id)| format!("{id}: {}", describe(r)))
        .collect();
    assert!(bad.is_empty(), "{bad:?}");
    let max = peak.max.load(Ordering::SeqCst);
    assert!(
        max <= 3,
        "a bulk call with max_parallel 3 had {max} requests at the server at once"
    );
}

#[derive(Clone, Copy, Debug)]
enum Path {
    Sync,
    Async,
    Bulk,
}

/// One hangup on `path` (bulk: a call of one).
fn one(c: &Client, path: Path, id: &str) -> HangupResult {
    match path {
        Path::Sync => c.hangup(id),
        Path::Async => {
            let (tx, rx) = mpsc::channel();
            c.hangup_async(id.to_string(), move |_, r| {
                let _ = tx.send(r);
            })
            .unwrap();
            rx.recv_timeout(Duration::from_secs(30))
                .expect("an async outcome")
        }
        Path::Bulk => c.hangup_many(&[id], 1).unwrap().pop().unwrap(),
    }
}

/// GUARD (2xx body grace). A 200 whose chunked body trickles one byte per 200 ms
/// forever: the status line decides, the grace (250 ms) bounds the wait on every path,
/// well before the 5 s deadline; the connection left mid-body is never reused (each
/// hangup opens its own; a reused one would read the trickle as its answer).
#[test]
fn a_200_whose_chunked_body_trickles_forever_is_ok_within_the_grace_on_every_path() {
    let _one = one_at_a_time();
    let server = support::serve_each(move |_, mut s| {
        if read_request_line(&mut s).is_none() {
            return;
        }
        let head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
                     Transfer-Encoding: chunked\r\n\r\n";
        if s.write_all(head).is_err() {
            return;
        }
        // "1\r\n{\r\n" then "1\r\n \r\n" ... one byte at a time, forever.
        let mut chunk = b"1\r\n{\r\n".to_vec();
        loop {
            for b in &chunk {
                std::thread::sleep(Duration::from_millis(200));
                if s.write_all(&[*b]).is_err() {
                    return;
                }
            }
            chunk = b"1\r\n \r\n".to_vec();
        }
    });
    let (port, conns) = (server.port(), server.accepted());
    let c = client(port, Duration::from_secs(5), 0, None);
    let mut bad = Vec::new();
    for path in [Path::Sync, Path::Async, Path::Bulk] {
        for i in 0..3 {
            let t = Instant::now();
            let r = one(&c, path, &format!("trickle-{path:?}-{i}"));
            let took = t.elapsed();
            if !matches!(r, Ok(200)) || took > Duration::from_millis(2500) {
                bad.push(format!("{path:?} #{i}: {} in {took:?}", describe(&r)));
            }
        }
    }
    assert!(bad.is_empty(), "{bad:?}");
    assert_eq!(
        conns.load(Ordering::SeqCst),
        9,
        "a connection left mid-body was reused (or more were opened than hangups)"
    );
}

/// GUARD (batch admission counters, exactly once). Bulk calls with small
/// `max_parallel` beside async bursts on a client with `max_connections` 1, against a
/// server that answers 204, 503 then 204 (a retry), or stalls past the deadline
/// (a job ending by its deadline while on a connection, and others ending while queued
/// behind it): every id gets exactly one outcome from an allowed set, every bulk call
/// returns, nothing is left in flight, and a bulk call after the storm is served at
/// once (no counter drifted into a stuck batch or a closed async budget).
#[test]
fn bulk_beside_async_bursts_with_one_connection_and_deadlines_while_queued() {
    let _one = one_at_a_time();
    let seen: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    let s2 = seen.clone();
    let port = server(move |line, s| {
        let id = id_of(line);
        let n = {
            let mut m = s2.lock().unwrap();
            let n = m.entry(id.clone()).or_insert(0);
            *n += 1;
            *n
        };
        if id.starts_with("stall") {
            std::thread::sleep(Duration::from_millis(1500));
            return false;
        }
        if id.starts_with("retry") && n == 1 {
            return s
                .write_all(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n")
                .is_ok();
        }
        s.write_all(b"HTTP/1.1 204 No Content\r\n\r\n").is_ok()
    });
    let c = Arc::new(client(port, Duration::from_millis(1000), 2, Some(1)));
    let kinds = ["ok", "retry", "stall"];
    let (tx, rx) = mpsc::channel::<(String, HangupResult)>();
    let mut expected = Vec::new();
    let mut bulk_threads = Vec::new();
    for round in 0..3 {
        for i in 0..30 {
            let id = format!("{}-a{round}-{i}", kinds[i % 3]);
            expected.push(id.clone());
            let tx = tx.clone();
            c.hangup_async(id, move |id, r| {
                let _ = tx.send((id.to_string(), r));
            })
            .unwrap();
        }
        for b in 0..2 {
            let ids: Vec<String> = (0..12)
                .map(|i| format!("{}-b{round}{b}-{i}", kinds[(i + b) % 3]))
                .collect();
            expected.extend(ids.iter().cloned());
            let (c, tx) = (c.clone(), tx.clone());
            bulk_threads.push(std::thread::spawn(move || {
                let got = c.hangup_many(&ids, 1 + b * 2).unwrap();
                assert_eq!(got.len(), ids.len());
                for (id, r) in ids.into_iter().zip(got) {
                    let _ = tx.send((id, r));
                }
            }));
        }
        std::thread::sleep(Duration::from_millis(150));
    }
    drop(tx);
    for t in bulk_threads {
        t.join().expect("a bulk call returned");
    }
    let mut got: HashMap<String, Vec<HangupResult>> = HashMap::new();
    while let Ok((id, r)) = rx.recv_timeout(Duration::from_secs(20)) {
        got.entry(id).or_default().push(r);
    }
    let mut bad = Vec::new();
    for id in &expected {
        match got.get(id).map(Vec::as_slice) {
            Some([r]) => {
                let s = status_of(r);
                let ok = if id.starts_with("stall") {
                    s == Status::Timeout
                } else if id.starts_with("retry") {
                    // Its 503 may come too late in the deadline for a retry to fit.
                    matches!(s, Status::Ok | Status::Timeout | Status::ServerError)
                } else {
                    // A queued hangup may time out unsent behind the stalls (one connection).
                    s == Status::Ok || s == Status::Timeout
                };
                if !ok {
                    bad.push(format!("{id}: {}", describe(r)));
                }
            }
            other => bad.push(format!("{id}: {} outcomes", other.map_or(0, |v| v.len()))),
        }
    }
    assert!(bad.is_empty(), "{} bad: {bad:?}", bad.len());
    assert_eq!(got.len(), expected.len(), "outcomes for ids never asked");
    // Nothing left in flight, and the client still serves a bulk call and an async one.
    let t = Instant::now();
    while c.stats().in_flight != 0 && t.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(c.stats().in_flight, 0, "hangups left in flight");
    let after: Vec<String> = (0..10).map(|i| format!("ok-after-{i}")).collect();
    let r = c.hangup_many(&after, 2).unwrap();
    assert!(
        r.iter().all(|r| matches!(r, Ok(204))),
        "{:?}",
        r.iter().map(describe).collect::<Vec<_>>()
    );
    assert!(matches!(one(&c, Path::Async, "ok-after-async"), Ok(204)));
}
