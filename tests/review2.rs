//! Second hostile review of issue 18: what the first review's fixes introduced (bulk
//! admission counting queued jobs, the connect window, the 2xx body grace, fork and the
//! descriptor budget), against real servers on 127.0.0.1 through the public API. Each
//! test says what it shows and whether it was a finding (failing when written) or a
//! guard (passing, kept).

mod support;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
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
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match s.read(&mut b) {
            Ok(1) => head.push(b[0]),
            _ => return None,
        }
        if head.len() > 64 * 1024 {
            return None;
        }
    }
    let text = String::from_utf8_lossy(&head);
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
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let behave = Arc::new(behave);
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let _ = s.set_read_timeout(Some(Duration::from_secs(20)));
            let _ = s.set_nodelay(true);
            let behave = behave.clone();
            std::thread::spawn(move || {
                while let Some(line) = read_request_line(&mut s) {
                    if !behave(&line, &mut s) {
                        return;
                    }
                }
            });
        }
    });
    port
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
