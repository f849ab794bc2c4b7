//! The hangup engine under load and faults, against the real simulator (tryvox-sim) on
//! 127.0.0.1: a fault mix whose every outcome is checked against what the simulator
//! answered and recorded, 1,000 hangups in flight, callbacks that call back into their
//! client (while it runs and while it is dropped), dropping a busy client, and the
//! library's threads before, during and after a client's life.
//!
//! The simulator keeps each call's state (`GET .../calls`: status and end reason) but not
//! the answers it gave each request, so the tests that need those put a recording relay
//! between the client and the simulator: a transparent TCP relay that forwards every
//! byte, one upstream connection per client connection, and writes down the status of
//! each answer (or that the simulator closed the connection without one) per call id,
//! before the client can see it.
//!
//! The tests of this file run one at a time (each is heavy for a 2-core machine), none
//! asserts wall-clock time, and every wait is bounded so a lost callback or a stuck drop
//! fails the test instead of hanging it.

mod support;
use support::{agent, raise_fd_limit, seed, status_of};

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tryvox_core::{Client, HangupResult, Options, Status};
use tryvox_sim::faults::GlobalFaults;
use tryvox_sim::server::{DEFAULT_ACCOUNT as ACCOUNT, DEFAULT_API_KEY as KEY};
use tryvox_sim::{spawn, Config, Running};

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn one_at_a_time() -> MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

/// The longest any test here waits for callbacks or a drop before failing.
const WATCHDOG: Duration = Duration::from_secs(60);

fn sim_with(faults: GlobalFaults) -> Running {
    spawn(Config {
        faults,
        ..Config::default()
    })
    .unwrap()
}

fn client(base: &str, tweak: impl FnOnce(&mut Options)) -> Client {
    let mut o = Options::new();
    o.set_base_url(base).unwrap();
    o.set_timeout(Duration::from_secs(20)).unwrap();
    tweak(&mut o);
    Client::with_options(ACCOUNT, KEY, &o).unwrap()
}

fn ids(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i}")).collect()
}

/// Calls the simulator ended through the API so far (`/_sim/health`, never faulted).
fn sim_hangups(s: &Running) -> u64 {
    let mut r = agent()
        .get(format!("{}/_sim/health", s.base_url))
        .call()
        .unwrap();
    let v: serde_json::Value =
        serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap();
    v["hangups"].as_u64().unwrap()
}

/// One call as the simulator records it.
#[derive(Debug, Clone)]
struct CallRecord {
    status: String,
    end_reason: Option<String>,
}

impl CallRecord {
    fn live(&self) -> bool {
        matches!(self.status.as_str(), "ringing" | "in-progress")
    }
    fn ended_by_api(&self) -> bool {
        self.status == "completed" && self.end_reason.as_deref() == Some("api-hangup")
    }
}

/// Every call of the default tenant as the simulator records it, read page by page
/// (each page asked again while the fault rates answer 429, 503 or close).
fn sim_record(s: &Running) -> HashMap<String, CallRecord> {
    let mut out = HashMap::new();
    let mut page = 1u64;
    loop {
        let v = (0..200)
            .find_map(|_| {
                let mut r = agent()
                    .get(format!("{}?per_page=100&page={page}", s.calls_url()))
                    .header("authorization", format!("Bearer {KEY}"))
                    .call()
                    .ok()?;
                if r.status() != 200 {
                    return None;
                }
                serde_json::from_str::<serde_json::Value>(&r.body_mut().read_to_string().ok()?).ok()
            })
            .expect("the simulator's listing kept failing");
        for c in v["calls"].as_array().unwrap() {
            out.insert(
                c["call_uuid"].as_str().unwrap().to_owned(),
                CallRecord {
                    status: c["status"].as_str().unwrap().to_owned(),
                    end_reason: c["end_reason"].as_str().map(str::to_owned),
                },
            );
        }
        if page >= v["pagination"]["total_pages"].as_u64().unwrap() {
            return out;
        }
        page += 1;
    }
}

// ---------------------------------------------------------------------------------------
// The recording relay.

/// What the simulator answered one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    Http(u16),
    /// The simulator closed the connection without an answer (its drop fault).
    Closed,
}

#[derive(Default)]
struct RelayState {
    /// Per call id, every answer in order (a hangup's attempts are sequential).
    answers: Mutex<HashMap<String, Vec<Answer>>>,
}

impl RelayState {
    fn record(&self, id: &Option<String>, a: Answer) {
        if let Some(id) = id {
            let mut m = self.answers.lock().unwrap_or_else(|e| e.into_inner());
            m.entry(id.clone()).or_default().push(a);
        }
    }
}

struct Relay {
    base_url: String,
    state: Arc<RelayState>,
    server: support::Loopback,
}

impl Relay {
    fn start(upstream: SocketAddr) -> Relay {
        let state = Arc::new(RelayState::default());
        let st = Arc::clone(&state);
        let server = support::accept_each(move |_, s| {
            let st = Arc::clone(&st);
            let _ = std::thread::Builder::new()
                .name("relay-conn".into())
                .stack_size(256 * 1024)
                .spawn(move || relay_connection(s, upstream, &st));
        });
        Relay {
            base_url: server.url(),
            state,
            server,
        }
    }

    fn answers(&self) -> HashMap<String, Vec<Answer>> {
        self.state
            .answers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.server.stop();
    }
}

/// One HTTP/1.1 message read off a stream: its bytes as they came, and what the relay
/// needs from its head.
struct Message {
    bytes: Vec<u8>,
    first_line: String,
    close: bool,
}

impl Message {
    fn status(&self) -> u16 {
        self.first_line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
    }

    /// The call id of a `DELETE .../calls/{id}`.
    fn hangup_id(&self) -> Option<String> {
        let mut parts = self.first_line.split_whitespace();
        if parts.next() != Some("DELETE") {
            return None;
        }
        let path = parts.next()?;
        path.contains("/calls/")
            .then(|| path.rsplit('/').next().unwrap_or("").to_owned())
    }
}

/// Reads one message (head and Content-Length body; the simulator's answers have one or
/// none) from `s`, keeping any bytes past it in `buf`. None if the peer closed first.
fn read_message(s: &mut TcpStream, buf: &mut Vec<u8>, response: bool) -> Option<Message> {
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let first_line = head.lines().next().unwrap_or("").to_owned();
    let field = |name: &str| {
        head.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_owned())
        })
    };
    let status: u16 = first_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let no_body = response && (status == 204 || status == 304 || status < 200);
    let body_len = if no_body {
        0
    } else {
        field("content-length")
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(0)
    };
    let close = field("connection").is_some_and(|v| v.eq_ignore_ascii_case("close"))
        || (response && !no_body && field("content-length").is_none());
    while buf.len() < head_end + body_len {
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let bytes: Vec<u8> = buf.drain(..head_end + body_len).collect();
    Some(Message {
        bytes,
        first_line,
        close,
    })
}

/// Relays one client connection over one upstream connection, request by request,
/// recording each answer before the client gets it. Closing either side closes both.
fn relay_connection(mut client: TcpStream, upstream: SocketAddr, st: &RelayState) {
    let Ok(mut up) = TcpStream::connect(upstream) else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = up.set_nodelay(true);
    let _ = client.set_read_timeout(Some(Duration::from_secs(120)));
    let _ = up.set_read_timeout(Some(Duration::from_secs(60)));
    let (mut cbuf, mut ubuf) = (Vec::new(), Vec::new());
    while let Some(req) = read_message(&mut client, &mut cbuf, false) {
        let id = req.hangup_id();
        let answer = if up.write_all(&req.bytes).is_ok() {
            read_message(&mut up, &mut ubuf, true)
        } else {
            None
        };
        let Some(resp) = answer else {
            st.record(&id, Answer::Closed);
            return; // drops both connections: the client sees the close
        };
        st.record(&id, Answer::Http(resp.status()));
        if client.write_all(&resp.bytes).is_err() || resp.close || req.close {
            return;
        }
    }
}

// ---------------------------------------------------------------------------------------
// Fault mix.

/// 2,000 hangups in one `hangup_many(ids, 64)` and 500 `hangup_async` at the same time
/// on one client, against 10% 503, 5% 429 (`Retry-After: 0`) and 5% dropped
/// connections. Every id gets exactly one outcome, and every outcome agrees with the
/// simulator: an OK is a call it ended by an API hangup whose one 204 was the last
/// answer for that id; a failure is a call still live, never answered 204, whose status
/// is the class of the last answer (503: SERVER_ERROR, 429: RATE_LIMITED, closed:
/// NETWORK_ERROR) after exactly max_retries + 1 attempts; no call the simulator ended is
/// reported failed. max_retries is 2 (not higher) so that failures with spent retries
/// do occur (about 0.7% of ids) and their branch of the check is exercised; the deadline
/// (20 s) is never what ends a hangup here, but a TIMEOUT, which says the call may or
/// may not have ended, is accepted and counted.
#[test]
fn fault_mix_every_outcome_agrees_with_the_simulators_record() {
    let _one = one_at_a_time();
    const RETRIES: u32 = 2;
    let s = sim_with(GlobalFaults {
        error_rate: 0.10,
        rate_limit_rate: 0.05,
        retry_after_secs: 0,
        drop_rate: 0.05,
        ..GlobalFaults::default()
    });
    seed(&s, 2000, "mix-bulk-", None, None);
    seed(&s, 500, "mix-async-", None, None);
    let bulk_ids = ids("mix-bulk-", 2000);
    let async_ids = ids("mix-async-", 500);
    let relay = Relay::start(s.addr);
    let c = client(&relay.base_url, |o| o.set_max_retries(RETRIES).unwrap());

    let (tx, rx) = mpsc::channel::<(String, HangupResult)>();
    let bulk = std::thread::scope(|scope| {
        let bulk = scope.spawn(|| c.hangup_many(&bulk_ids, 64));
        for id in &async_ids {
            let tx = tx.clone();
            c.hangup_async(id.clone(), move |id, r| {
                let _ = tx.send((id, r));
            })
            .expect("hangup_async queued the hangup");
        }
        bulk.join().unwrap()
    })
    .expect("hangup_many took the batch");
    drop(tx);
    let until = Instant::now() + WATCHDOG;
    let mut from_async = Vec::new();
    while from_async.len() < async_ids.len() {
        let left = until.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(x) => from_async.push(x),
            Err(_) => {
                let n = from_async.len();
                std::mem::forget(c); // dropping it would wait for the lost hangups
                panic!("only {n} of 500 async callbacks within {WATCHDOG:?}");
            }
        }
    }
    drop(c); // every queued hangup is done: no callback may come after this
    from_async.extend(rx.try_iter());

    // Exactly one outcome per id.
    assert_eq!(
        bulk.len(),
        bulk_ids.len(),
        "hangup_many: one outcome per id"
    );
    let mut per_id: HashMap<String, usize> = HashMap::new();
    for (id, _) in &from_async {
        *per_id.entry(id.clone()).or_default() += 1;
    }
    for id in &async_ids {
        assert_eq!(per_id.get(id), Some(&1), "{id}: async callbacks");
    }
    assert_eq!(
        from_async.len(),
        async_ids.len(),
        "no callback for an id not sent"
    );
    let outcomes: Vec<(String, HangupResult)> = bulk_ids
        .iter()
        .cloned()
        .zip(bulk)
        .chain(from_async)
        .collect();

    // Every outcome against the simulator's answers and its record of the call.
    let record = sim_record(&s);
    let answers = relay.answers();
    let mut bad = Vec::new();
    let mut by_status: HashMap<Status, usize> = HashMap::new();
    let mut ok = 0u64;
    for (id, r) in &outcomes {
        *by_status.entry(status_of(r)).or_default() += 1;
        let Some(rec) = record.get(id) else {
            bad.push(format!("{id}: not in the simulator's record"));
            continue;
        };
        let ans = answers.get(id).cloned().unwrap_or_default();
        let n204 = ans.iter().filter(|a| **a == Answer::Http(204)).count();
        let last = ans.last().copied();
        let mut fail =
            |why: String| bad.push(format!("{id}: {why}; {r:?}; answers {ans:?}; {rec:?}"));
        if ans.is_empty() {
            fail("the simulator never saw a request for it".into());
        }
        if ans.len() > RETRIES as usize + 1 {
            fail(format!(
                "{} requests, more than 1 + {RETRIES} retries",
                ans.len()
            ));
        }
        match r {
            Ok(code) => {
                ok += 1;
                if *code != 204 {
                    fail(format!("OK with HTTP {code}"));
                }
                if !rec.ended_by_api() {
                    fail("OK, but the simulator did not end it by an API hangup".into());
                }
                if n204 != 1 || last != Some(Answer::Http(204)) {
                    fail("OK, but the simulator's last answer was not its one 204".into());
                }
            }
            Err(e) if e.status() == Status::Timeout => {} // may or may not have ended: counted
            Err(e) => {
                if !rec.live() || n204 != 0 {
                    fail("reported failed, but the simulator ended the call".into());
                }
                let want = match last {
                    Some(Answer::Http(503)) => Some((Status::ServerError, 503)),
                    Some(Answer::Http(429)) => Some((Status::RateLimited, 429)),
                    Some(Answer::Closed) => Some((Status::NetworkError, 0)),
                    _ => None,
                };
                match want {
                    Some((status, http)) if e.status() == status && e.http_status() == http => {}
                    _ => fail(format!(
                        "status {:?} (HTTP {}) does not match the last answer {last:?}",
                        e.status(),
                        e.http_status()
                    )),
                }
                if ans.len() != RETRIES as usize + 1 {
                    fail(format!(
                        "failed after {} requests, not 1 + {RETRIES} retries",
                        ans.len()
                    ));
                }
            }
        }
    }
    // The reverse direction: the simulator ended no other of these calls.
    let ended = outcomes
        .iter()
        .filter(|(id, _)| record.get(id).is_some_and(CallRecord::ended_by_api))
        .count() as u64;
    let hangups = sim_hangups(&s);
    let attempts: usize = answers.values().map(Vec::len).sum();
    eprintln!(
        "fault mix: 2,500 hangups, {attempts} requests; outcomes {by_status:?}; \
         the simulator ended {ended} of these calls ({hangups} API hangups in all)"
    );
    assert!(
        bad.is_empty(),
        "{} outcome(s) disagree with the simulator:\n  {}",
        bad.len(),
        bad.iter()
            .take(40)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n  ")
    );
    assert_eq!(ended, ok, "every call the simulator ended is reported OK");
    assert_eq!(
        hangups, ok,
        "the simulator's API hangups are the OK outcomes"
    );
}

// ---------------------------------------------------------------------------------------
// 1,000 in flight.

/// `hangup_many(ids, 1000)` over 5,000 calls with 100 ms of simulator latency: every one
/// OK, and the simulator ended all 5,000. How many were in flight at the simulator at
/// once is not asserted: the simulator does not count it, and a relay in front of it
/// to count them (1,000 more threads on 2 cores) measured itself as much as the
/// engine (peaks of 800-odd while the client had 1,000 started). The client's own
/// `in_flight` gauge, sampled, is printed instead.
#[test]
fn a_thousand_hangups_in_flight_at_once() {
    let _one = one_at_a_time();
    raise_fd_limit();
    let s = sim_with(GlobalFaults {
        latency: Duration::from_millis(100),
        ..GlobalFaults::default()
    });
    seed(&s, 5000, "wide-", None, None);
    let all = ids("wide-", 5000);
    let c = client(&s.base_url, |o| {
        o.set_timeout(Duration::from_secs(30)).unwrap()
    });
    let client_peak = AtomicU64::new(0);
    let done = AtomicBool::new(false);
    let results = std::thread::scope(|scope| {
        scope.spawn(|| {
            while !done.load(Ordering::SeqCst) {
                client_peak.fetch_max(c.stats().in_flight, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        let r = c.hangup_many(&all, 1000);
        done.store(true, Ordering::SeqCst);
        r
    })
    .expect("hangup_many took the batch");
    assert_eq!(results.len(), all.len());
    let failed: Vec<_> = all
        .iter()
        .zip(&results)
        .filter(|(_, r)| !matches!(r, Ok(204)))
        .take(20)
        .collect();
    assert!(failed.is_empty(), "not all OK: {failed:?}");
    assert_eq!(sim_hangups(&s), 5000, "the simulator ended every call");
    let st = c.stats();
    eprintln!(
        "1,000 in flight: all 5,000 OK; the client's in_flight peaked at {} (sampled every \
         5 ms), {} connections opened; the simulator cannot report its own in-flight \
         count, so that check is skipped",
        client_peak.load(Ordering::SeqCst),
        st.connections_opened
    );
}

// ---------------------------------------------------------------------------------------
// Callbacks that call back into their client.

const OUTER: usize = 2000;

/// Exactly-once bookkeeping of every callback of a callbacks test.
struct Tally {
    /// Callbacks delivered per outer hangup.
    outer: Vec<AtomicUsize>,
    /// Outer callbacks finished (after their nested call returned).
    outer_done: AtomicUsize,
    /// For the outer hangups whose callback calls `hangup_async`: whether it was
    /// accepted, and how many times its callback was delivered.
    nested_accepted: Vec<AtomicUsize>,
    nested_delivered: Vec<AtomicUsize>,
    problems: Mutex<Vec<String>>,
}

impl Tally {
    fn new() -> Arc<Tally> {
        let zeros = || (0..OUTER).map(|_| AtomicUsize::new(0)).collect::<Vec<_>>();
        Arc::new(Tally {
            outer: zeros(),
            outer_done: AtomicUsize::new(0),
            nested_accepted: zeros(),
            nested_delivered: zeros(),
            problems: Mutex::new(Vec::new()),
        })
    }

    fn problem(&self, p: String) {
        self.problems
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(p);
    }

    fn accepted(&self) -> usize {
        self.nested_accepted
            .iter()
            .map(|a| a.load(Ordering::SeqCst))
            .sum()
    }

    fn delivered(&self) -> usize {
        self.nested_delivered
            .iter()
            .map(|a| a.load(Ordering::SeqCst))
            .sum()
    }

    /// Every outer callback delivered exactly once, and every accepted nested async
    /// hangup's callback exactly once (none for a refused one).
    fn exactly_once(&self) -> Vec<String> {
        let mut bad = Vec::new();
        for i in 0..OUTER {
            let n = self.outer[i].load(Ordering::SeqCst);
            if n != 1 {
                bad.push(format!("outer hangup {i}: {n} callbacks"));
            }
            let (a, d) = (
                self.nested_accepted[i].load(Ordering::SeqCst),
                self.nested_delivered[i].load(Ordering::SeqCst),
            );
            if a != d {
                bad.push(format!(
                    "nested async hangup of {i}: accepted {a}, {d} callbacks"
                ));
            }
        }
        bad.extend(
            self.problems
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .cloned(),
        );
        bad
    }
}

/// The body of outer callback `i`: checks its result, then calls, in turn, `hangup`,
/// `hangup_async` or `hangup_many` of 2 ids on the same client. `dropping`: the client
/// may be being dropped, so a refusal (BUSY, nothing sent) is an accepted answer.
fn outer_callback(
    c: &Client,
    t: &Arc<Tally>,
    i: usize,
    id: &str,
    r: HangupResult,
    x: [String; 2],
    dropping: bool,
) {
    t.outer[i].fetch_add(1, Ordering::SeqCst);
    if !matches!(r, Ok(204)) {
        t.problem(format!("outer hangup {i} ({id}): {r:?}"));
    }
    let fine =
        |r: &HangupResult| matches!(r, Ok(204)) || (dropping && status_of(r) == Status::Busy);
    match i % 3 {
        0 => {
            let r = c.hangup(&x[0]);
            if !fine(&r) {
                t.problem(format!("sync hangup from callback {i}: {r:?}"));
            }
        }
        1 => {
            let t2 = Arc::clone(t);
            let queued = c.hangup_async(x[0].clone(), move |_, r| {
                t2.nested_delivered[i].fetch_add(1, Ordering::SeqCst);
                if !matches!(r, Ok(204)) {
                    t2.problem(format!("async hangup from callback {i}: {r:?}"));
                }
            });
            match queued {
                Ok(()) => {
                    t.nested_accepted[i].fetch_add(1, Ordering::SeqCst);
                }
                Err(e) if dropping && e.status() == Status::Busy => {}
                Err(e) => t.problem(format!("hangup_async from callback {i} refused: {e:?}")),
            }
        }
        _ => match c.hangup_many(&x, 2) {
            Ok(v) => {
                if v.len() != 2 || !v.iter().all(&fine) {
                    t.problem(format!("hangup_many from callback {i}: {v:?}"));
                }
            }
            Err(e) if dropping && e.status() == Status::Busy => {}
            Err(e) => t.problem(format!("hangup_many from callback {i} refused: {e:?}")),
        },
    }
}

/// Ids for the callbacks tests: `OUTER` outer ones and two extra per outer one.
fn callback_ids(s: &Running, prefix: &str) -> (Vec<String>, Vec<[String; 2]>) {
    let outer = format!("{prefix}o-");
    let extra = format!("{prefix}x-");
    seed(s, OUTER, &outer, None, None);
    seed(s, 2 * OUTER, &extra, None, None);
    let extras = (0..OUTER)
        .map(|i| [format!("{extra}{}", 2 * i), format!("{extra}{}", 2 * i + 1)])
        .collect();
    (ids(&outer, OUTER), extras)
}

/// Runs `f` on a thread of its own and waits for what it returns, at most `WATCHDOG`.
fn within_watchdog<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(WATCHDOG)
        .unwrap_or_else(|_| panic!("{what} did not finish within {WATCHDOG:?}"))
}

/// 2,000 async hangups whose callbacks each call back into the same client (sync,
/// async, bulk in turn), with the client kept until every callback arrived: every
/// outer and nested callback exactly once, every hangup OK; then the client is dropped
/// (on the test's side, after the callbacks let go of it) and no callback comes after.
#[test]
fn callbacks_calling_back_into_their_client_under_load() {
    let _one = one_at_a_time();
    let s = sim_with(GlobalFaults::default());
    let (outer, extras) = callback_ids(&s, "cb-");
    let c = Arc::new(client(&s.base_url, |_| {}));
    let t = Tally::new();
    for (i, (id, x)) in outer.iter().zip(extras).enumerate() {
        let (c2, t2) = (Arc::clone(&c), Arc::clone(&t));
        c.hangup_async(id.clone(), move |id, r| {
            outer_callback(&c2, &t2, i, &id, r, x, false);
            drop(c2); // let go of the client before saying done
            t2.outer_done.fetch_add(1, Ordering::SeqCst);
        })
        .expect("hangup_async queued the hangup");
    }
    // The nested async hangups are one in three; each must call back too.
    let want_nested = (0..OUTER).filter(|i| i % 3 == 1).count();
    let until = Instant::now() + WATCHDOG;
    while t.outer_done.load(Ordering::SeqCst) < OUTER || t.delivered() < want_nested {
        if Instant::now() > until {
            let msg = format!(
                "after {WATCHDOG:?}: {} of {OUTER} outer callbacks, {} of {want_nested} nested",
                t.outer_done.load(Ordering::SeqCst),
                t.delivered()
            );
            std::mem::forget(c); // dropping it would wait for the lost hangups
            panic!("{msg}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(
        t.accepted(),
        want_nested,
        "every nested hangup_async was queued"
    );
    let c = Arc::try_unwrap(c).expect("no callback holds the client any more");
    within_watchdog("dropping the idle client", move || drop(c));
    let bad = t.exactly_once();
    assert!(
        bad.is_empty(),
        "{} problem(s):\n  {}",
        bad.len(),
        bad.join("\n  ")
    );
    // Each outer hangup ends its call, and its callback one more (two for hangup_many).
    let want: usize = OUTER
        + (0..OUTER)
            .map(|i| if i % 3 == 2 { 2 } else { 1 })
            .sum::<usize>();
    assert_eq!(
        sim_hangups(&s),
        want as u64,
        "the simulator ended every call asked for"
    );
}

/// A client the callbacks reach through a pointer, as a C caller's callbacks do, so it
/// can be dropped while they run: `Client`'s drop waits for every callback, so none
/// outlives it.
#[derive(Clone, Copy)]
struct ClientPtr(*mut Client);
// SAFETY: Client is Send + Sync; the pointer is only read while the client lives (its
// drop returns only after every callback has returned).
unsafe impl Send for ClientPtr {}
unsafe impl Sync for ClientPtr {}

impl ClientPtr {
    /// SAFETY: only from a callback of this client (or before it is dropped).
    unsafe fn get<'a>(self) -> &'a Client {
        unsafe { &*self.0 }
    }
}

/// The same 2,000 callbacks calling back in, with the client dropped right after the
/// last is submitted: when drop returns, every outer callback was delivered exactly
/// once, every nested async hangup that was accepted delivered its callback exactly once,
/// and what the callbacks asked for while the client was going is OK or refused with
/// BUSY (nothing sent).
#[test]
fn callbacks_calling_back_into_a_client_being_dropped() {
    let _one = one_at_a_time();
    let s = sim_with(GlobalFaults::default());
    let (outer, extras) = callback_ids(&s, "cbd-");
    let p = ClientPtr(Box::into_raw(Box::new(client(&s.base_url, |_| {}))));
    let t = Tally::new();
    for (i, (id, x)) in outer.iter().zip(extras).enumerate() {
        let t2 = Arc::clone(&t);
        // SAFETY: the client lives until the drop below.
        let c = unsafe { p.get() };
        c.hangup_async(id.clone(), move |id, r| {
            // SAFETY: a callback of this client runs before its drop returns.
            let c = unsafe { p.get() };
            outer_callback(c, &t2, i, &id, r, x, true);
            t2.outer_done.fetch_add(1, Ordering::SeqCst);
        })
        .expect("hangup_async queued the hangup");
    }
    let t2 = Arc::clone(&t);
    let (done, bad) = within_watchdog(
        "dropping the client with 2,000 callbacks queued",
        move || {
            let p = p; // the whole wrapper (Send), not its pointer field
                       // SAFETY: from Box::into_raw above, dropped once; callbacks end before it returns.
            drop(unsafe { Box::from_raw(p.0) });
            // Read the instant drop returns: anything missing now was late.
            (t2.outer_done.load(Ordering::SeqCst), t2.exactly_once())
        },
    );
    eprintln!(
        "dropped right after submitting: {done} outer callbacks done when drop returned; \
         {} of {} nested async hangups accepted",
        t.accepted(),
        (0..OUTER).filter(|i| i % 3 == 1).count()
    );
    assert_eq!(
        done, OUTER,
        "every outer callback finished before drop returned"
    );
    assert!(
        bad.is_empty(),
        "{} problem(s):\n  {}",
        bad.len(),
        bad.join("\n  ")
    );
}

// ---------------------------------------------------------------------------------------
// Free while busy.

/// 300 async hangups to a simulator that takes 1.5 s to answer, and the client dropped
/// at once: when drop returns, every callback was delivered exactly once, all OK.
#[test]
fn dropping_a_busy_client_delivers_every_callback_first() {
    let _one = one_at_a_time();
    const N: usize = 300;
    let s = sim_with(GlobalFaults {
        latency: Duration::from_millis(1500),
        ..GlobalFaults::default()
    });
    seed(&s, N, "busy-", None, None);
    let c = client(&s.base_url, |_| {});
    let delivered: Arc<Vec<AtomicUsize>> = Arc::new((0..N).map(|_| AtomicUsize::new(0)).collect());
    let results = Arc::new(Mutex::new(Vec::new()));
    for (i, id) in ids("busy-", N).into_iter().enumerate() {
        let (d, res) = (Arc::clone(&delivered), Arc::clone(&results));
        c.hangup_async(id, move |id, r| {
            d[i].fetch_add(1, Ordering::SeqCst);
            res.lock().unwrap().push((id, r));
        })
        .expect("hangup_async queued the hangup");
    }
    let d = Arc::clone(&delivered);
    let counts = within_watchdog("dropping the busy client", move || {
        drop(c);
        d.iter()
            .map(|a| a.load(Ordering::SeqCst))
            .collect::<Vec<_>>()
    });
    let late: Vec<_> = counts
        .iter()
        .enumerate()
        .filter(|(_, n)| **n != 1)
        .collect();
    assert!(
        late.is_empty(),
        "callbacks not delivered exactly once by drop's return (index, count): {late:?}"
    );
    let results = results.lock().unwrap();
    let not_ok: Vec<_> = results
        .iter()
        .filter(|(_, r)| !matches!(r, Ok(204)))
        .take(10)
        .collect();
    assert!(not_ok.is_empty(), "not all OK: {not_ok:?}");
    assert_eq!(sim_hangups(&s), N as u64);
}

// ---------------------------------------------------------------------------------------
// Threads.

const THREADS_CHILD: &str = "TRYVOX_ENGINE_THREADS_CHILD";

/// The library's threads in this process by name, counted per name; the simulator's
/// (`tryvox-sim`) are not the library's.
fn library_threads() -> Vec<(String, usize)> {
    let mut n: HashMap<String, usize> = HashMap::new();
    for t in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let Ok(name) = std::fs::read_to_string(t.path().join("comm")) else {
            continue;
        };
        let name = name.trim();
        if name.starts_with("tryvox-") && !name.starts_with("tryvox-sim") {
            *n.entry(name.to_owned()).or_default() += 1;
        }
    }
    let mut v: Vec<_> = n.into_iter().collect();
    v.sort();
    v
}

/// Runs `threads_in_a_process_of_its_own` in a fresh process of this test binary (the
/// other tests' clients would be counted too in this one), bounded by a watchdog.
#[test]
fn no_library_thread_outlives_its_client() {
    let _one = one_at_a_time();
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "threads_in_a_process_of_its_own",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(THREADS_CHILD, "1")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = r.read_to_string(&mut s);
            s
        })
    };
    let out = drain(Box::new(child.stdout.take().unwrap()));
    let err = drain(Box::new(child.stderr.take().unwrap()));
    let until = Instant::now() + Duration::from_secs(90);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break Some(st);
        }
        if Instant::now() > until {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let text = format!("{}{}", out.join().unwrap(), err.join().unwrap());
    eprintln!("{text}");
    let status = status.expect("the thread-count process did not finish within 90 s");
    assert!(
        status.success(),
        "the thread-count process failed: {status}\n{text}"
    );
    assert!(
        text.contains("1 passed"),
        "the thread-count test did not run in the child process:\n{text}"
    );
}

/// In a process of its own (see above): the library's threads before a client exists,
/// after 1,000 async hangups completed, 10 s later, and after the client is dropped.
/// Only the last is asserted: no `tryvox-` thread but (possibly) a detached
/// `tryvox-resolve` lookup is left.
#[test]
#[ignore = "run in a process of its own by no_library_thread_outlives_its_client"]
fn threads_in_a_process_of_its_own() {
    if std::env::var_os(THREADS_CHILD).is_none() {
        return; // run directly with --ignored among other tests: the count would lie
    }
    const N: usize = 1000;
    let s = sim_with(GlobalFaults::default());
    seed(&s, N, "thr-", None, None);
    let before = library_threads();
    let c = client(&s.base_url, |_| {});
    let (tx, rx) = mpsc::channel();
    for id in ids("thr-", N) {
        let tx = tx.clone();
        c.hangup_async(id, move |_, r| {
            let _ = tx.send(r);
        })
        .expect("hangup_async queued the hangup");
    }
    let until = Instant::now() + WATCHDOG;
    let mut results = Vec::new();
    while results.len() < N {
        match rx.recv_timeout(until.saturating_duration_since(Instant::now())) {
            Ok(r) => results.push(r),
            Err(_) => {
                let n = results.len();
                std::mem::forget(c);
                panic!("only {n} of {N} callbacks within {WATCHDOG:?}");
            }
        }
    }
    let after_hangups = library_threads();
    std::thread::sleep(Duration::from_secs(10));
    let later = library_threads();
    drop(c);
    let after_drop = library_threads();
    eprintln!("library threads before a client: {before:?}");
    eprintln!("after {N} async hangups completed: {after_hangups:?}");
    eprintln!("10 s later: {later:?}");
    eprintln!("after the client was dropped: {after_drop:?}");
    let not_ok = results.iter().filter(|r| !matches!(r, Ok(204))).count();
    eprintln!("{} of {N} hangups OK", N - not_ok);
    let left: Vec<_> = after_drop
        .iter()
        .filter(|(name, _)| name != "tryvox-resolve")
        .collect();
    assert!(left.is_empty(), "library threads left after drop: {left:?}");
}
