//! A hostile review of the event-driven engine (`hangup_async`, `hangup_many`): real
//! servers on 127.0.0.1 only, every wait bounded, no wall-clock assertion (CPU time of
//! the engine's thread is counted in scheduler ticks, not measured against a clock).
//!
//! Run one at a time: `cargo test --test review_engine -- --test-threads=1`.

mod support;

use support::procs::tinyproxy;
use support::{
    free_port, have_tool, raise_fd_limit, scratch, status_of, uniq, TestServer, API_KEY, AUTH_ID,
};

use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use tryvox_core::{Client, HangupResult, LogLevel, Options, Status};

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
fn one_at_a_time() -> MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

const WATCHDOG: Duration = Duration::from_secs(60);

/// Every outcome delivered, by id.
type Outcomes = HashMap<String, Vec<HangupResult>>;

fn client(base: &str, tweak: impl FnOnce(&mut Options)) -> Client {
    let mut o = Options::new();
    o.set_base_url(base).unwrap();
    tweak(&mut o);
    Client::with_options(AUTH_ID, API_KEY, &o).unwrap()
}

/// Threads of this process named `name`, with their CPU ticks (utime + stime).
fn threads_named(name: &str) -> Vec<(u32, u64)> {
    let mut out = Vec::new();
    for t in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        if comm.trim_end() != name {
            continue;
        }
        let stat = std::fs::read_to_string(t.path().join("stat")).unwrap_or_default();
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        // After the comm: state is field 3, utime 14, stime 15 (1-based) -> 0-based 0, 11, 12.
        let ticks = f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
            + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        let tid = t.file_name().to_string_lossy().parse().unwrap_or(0);
        out.push((tid, ticks));
    }
    // Linux gives a new thread its creator's name until it names itself: a callback
    // worker the engine thread has just started reads "tryvox-engine" for a moment (the
    // library names it from the creating side too, at once). A thread is counted only if
    // it still has the name a moment later; a library thread never renames itself.
    if !out.is_empty() {
        std::thread::sleep(std::time::Duration::from_millis(20));
        out.retain(|(tid, _)| {
            std::fs::read_to_string(format!("/proc/self/task/{tid}/comm"))
                .is_ok_and(|c| c.trim_end() == name)
        });
    }
    out
}

/// No engine thread started since `before` is left (another test's may exit meanwhile).
fn assert_no_new_engine(before: &[u32]) {
    let left: Vec<u32> = engine_tids()
        .into_iter()
        .filter(|t| !before.contains(t))
        .collect();
    assert!(
        left.is_empty(),
        "engine thread(s) {left:?} outlived the client"
    );
}

fn engine_tids() -> Vec<u32> {
    let mut v: Vec<u32> = threads_named("tryvox-engine")
        .into_iter()
        .map(|t| t.0)
        .collect();
    v.sort();
    v
}

/// Collects async outcomes by id and counts every delivery.
#[derive(Clone, Default)]
struct Tally {
    inner: Arc<(Mutex<Outcomes>, std::sync::Condvar)>,
    total: Arc<AtomicUsize>,
}

impl Tally {
    fn submit(&self, c: &Client, id: String) {
        let t = self.clone();
        c.hangup_async(id, move |id, r| {
            let (m, cv) = &*t.inner;
            m.lock().unwrap().entry(id).or_default().push(r);
            t.total.fetch_add(1, Ordering::SeqCst);
            cv.notify_all();
        })
        .expect("hangup_async queued");
    }
    /// Waits (bounded) until `n` deliveries have arrived; false if they did not.
    fn wait_for(&self, n: usize, limit: Duration) -> bool {
        let (m, cv) = &*self.inner;
        let g = m.lock().unwrap();
        let (_g, r) = cv
            .wait_timeout_while(g, limit, |_| self.total.load(Ordering::SeqCst) < n)
            .unwrap();
        !r.timed_out()
    }
    fn snapshot(&self) -> HashMap<String, Vec<HangupResult>> {
        let (m, _) = &*self.inner;
        m.lock()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.iter().map(clone_result).collect()))
            .collect()
    }
}

fn clone_result(r: &HangupResult) -> HangupResult {
    match r {
        Ok(v) => Ok(*v),
        Err(e) => Err(e.clone()),
    }
}

/// Runs `f` on its own thread; None if it did not finish within `limit` (the thread is
/// left behind, stuck).
fn within<T: Send + 'static>(limit: Duration, f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(limit).ok()
}

fn wait_in_flight_zero(c: &Client) -> u64 {
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let n = c.stats().in_flight;
        if n == 0 || Instant::now() > until {
            return n;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

// ---------------------------------------------------------------------------------------
// Exactly-once under every path: admission wait, connect, mid-exchange, retry wait.
// ---------------------------------------------------------------------------------------

#[test]
fn exactly_once_with_mixed_outcomes_deadlines_everywhere_and_bulk_beside() {
    let _g = one_at_a_time();
    let engines_before = engine_tids();
    raise_fd_limit();
    let s = TestServer::start();
    // Time ample for every answered id even on a loaded 2-core machine (a 900 ms deadline
    // and a 300 ms connect timeout failed 15 of 20 runs under `stress-ng --cpu 2`: 2,200
    // hangups set up at once); an outcome a deadline can still decide on a slower one is
    // in `allowed` below.
    let c = Arc::new(client(&s.base_url(), |o| {
        o.set_timeout(Duration::from_millis(3000)).unwrap();
        o.set_connect_timeout(Duration::from_millis(1000)).unwrap();
        o.set_max_retries(3).unwrap();
    }));
    let tally = Tally::default();
    let mut ids = Vec::new();
    for i in 0..400 {
        ids.push(match i % 8 {
            0 => uniq("ok-"),
            1 => uniq("nf-flat-"),
            2 => uniq("drop-1-"),
            3 => uniq("flaky-503-1-"),
            4 => uniq("flaky-503-9-"),
            5 => uniq("rasec-0-1-"),
            6 => uniq("slow-500-"),
            _ => uniq("rasec-5-5-"), // a retry wait longer than the deadline allows
        });
    }
    // Then 1,200 that never answer: with the 400 above, 1,024 are admitted and the rest
    // meet their deadline while waiting for admission.
    for _ in 0..1200 {
        ids.push(uniq("hang-"));
    }
    let bulk_small: Vec<String> = (0..20)
        .map(|i| {
            if i % 2 == 0 {
                uniq("ok-")
            } else {
                uniq("flaky-503-1-")
            }
        })
        .collect();
    let bulk_big: Vec<String> = (0..600)
        .map(|i| match i % 3 {
            0 => uniq("ok-"),
            1 => uniq("hang-"),
            _ => uniq("drop-1-"),
        })
        .collect();
    let (c1, c2) = (Arc::clone(&c), Arc::clone(&c));
    let (bs, bb) = (bulk_small.clone(), bulk_big.clone());
    let small = std::thread::spawn(move || c1.hangup_many(&bs, 1));
    let big = std::thread::spawn(move || c2.hangup_many(&bb, 1024));
    for id in &ids {
        tally.submit(&c, id.clone());
    }
    assert!(
        tally.wait_for(ids.len(), WATCHDOG),
        "only {} of {} callbacks arrived",
        tally.total.load(Ordering::SeqCst),
        ids.len()
    );
    let small = small.join().unwrap().unwrap();
    let big = big.join().unwrap().unwrap();
    assert_eq!((small.len(), big.len()), (bulk_small.len(), bulk_big.len()));
    for (id, r) in bulk_big.iter().zip(&big) {
        assert!(allowed(id, r), "bulk {id}: {r:?}");
    }
    for (id, r) in bulk_small.iter().zip(&small) {
        assert!(allowed(id, r), "bulk(1) {id}: {r:?}");
    }
    // A late duplicate would show here.
    std::thread::sleep(Duration::from_millis(300));
    let got = tally.snapshot();
    assert_eq!(got.len(), ids.len(), "one entry per id");
    for id in &ids {
        let rs = &got[id];
        assert_eq!(rs.len(), 1, "{id} delivered {} times: {rs:?}", rs.len());
        assert!(allowed(id, &rs[0]), "{id}: {:?}", rs[0]);
        if let Err(e) = &rs[0] {
            assert!(!e.to_string().contains(API_KEY));
        }
    }
    // For the record (not asserted: it depends on the machine): how many outcomes a
    // deadline decided rather than the server.
    let decided_by_time = ids
        .iter()
        .map(|id| (id, &got[id][0]))
        .chain(bulk_big.iter().zip(&big))
        .chain(bulk_small.iter().zip(&small))
        .filter(|(id, r)| own_outcome(id).is_some_and(|(own, _)| status_of(r) != own))
        .count();
    eprintln!(
        "{decided_by_time} of {} outcomes decided by a deadline, not the server",
        ids.len() + big.len() + small.len()
    );
    assert_eq!(wait_in_flight_zero(&c), 0, "in_flight returns to 0");
    let c = Arc::try_unwrap(c).ok().unwrap();
    assert!(within(WATCHDOG, move || drop(c)).is_some(), "drop returned");
    // This client's engine thread is gone (another test's may exit meanwhile).
    assert_no_new_engine(&engines_before);
}

/// The outcomes the contract allows for an id of `exactly_once_...` by its server
/// behaviour, under any scheduling: the id's own outcome, or one a deadline decided:
/// TIMEOUT (the deadline or the connect timeout passed first), or the failure in hand
/// when no retry fitted in what was left (the server's scripted failure: a dropped
/// connection's NETWORK_ERROR, a 503's SERVER_ERROR, a 429's RATE_LIMITED). An id never
/// answered is TIMEOUT and nothing else; no id gets a status its server cannot cause.
fn allowed(id: &str, r: &HangupResult) -> bool {
    let st = status_of(r);
    let Some((own, scripted_failure)) = own_outcome(id) else {
        return false;
    };
    if id.starts_with("hang-") {
        return st == Status::Timeout;
    }
    st == own || st == Status::Timeout || Some(st) == scripted_failure
}

/// The outcome of an id of `exactly_once_...` when no deadline interferes, and the
/// failure its server scripts before that (None for an unknown prefix).
fn own_outcome(id: &str) -> Option<(Status, Option<Status>)> {
    Some(match id.split('-').next()? {
        "hang" => (Status::Timeout, None),
        "ok" | "slow" => (Status::Ok, None),
        "nf" => (Status::NotFound, None),
        "drop" => (Status::Ok, Some(Status::NetworkError)),
        "flaky" if id.starts_with("flaky-503-1-") => (Status::Ok, Some(Status::ServerError)),
        "flaky" => (Status::ServerError, None),
        "rasec" if id.starts_with("rasec-5-") => (Status::RateLimited, None),
        "rasec" => (Status::Ok, Some(Status::RateLimited)),
        _ => return None,
    })
}

// ---------------------------------------------------------------------------------------
// Bulk budgets: max_parallel 1 is 1 request at a time; a retry's wait holds no slot.
// ---------------------------------------------------------------------------------------

/// A raw HTTP server: each request answered after `delay`, 429 `Retry-After: 1` to the
/// first request of an id starting with `wait-`; it records the largest number of
/// requests it held at once and the order requests arrived in.
struct Counting {
    addr: SocketAddr,
    peak: Arc<AtomicUsize>,
    order: Arc<Mutex<Vec<String>>>,
}

fn counting_server(delay: Duration) -> Counting {
    let now = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let order = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::new(Mutex::new(HashMap::<String, usize>::new()));
    let (p, o) = (Arc::clone(&peak), Arc::clone(&order));
    let server = support::serve_each(move |_, mut s| {
        let (now, peak, order, seen) = (&now, &p, &o, &seen);
        let mut heads = support::Heads::default();
        while let Some(head) = heads.next(&mut s) {
            let head = String::from_utf8_lossy(&head).into_owned();
            let path = head.split_whitespace().nth(1).unwrap_or("").to_owned();
            let id = path.rsplit('/').next().unwrap_or("").to_owned();
            order.lock().unwrap().push(id.clone());
            let n = now.fetch_add(1, Ordering::SeqCst) + 1;
            peak.fetch_max(n, Ordering::SeqCst);
            std::thread::sleep(delay);
            let nth = {
                let mut m = seen.lock().unwrap();
                let e = m.entry(id.clone()).or_insert(0);
                *e += 1;
                *e
            };
            now.fetch_sub(1, Ordering::SeqCst);
            let r: &[u8] = if id.starts_with("wait-") && nth == 1 {
                b"HTTP/1.1 429 Too Many\r\nRetry-After: 1\r\nContent-Length: 0\r\n\r\n"
            } else {
                b"HTTP/1.1 204 No Content\r\n\r\n"
            };
            if s.write_all(r).is_err() {
                return;
            }
        }
    });
    let addr = server.addr;
    Counting { addr, peak, order }
}

#[test]
fn bulk_max_parallel_1_is_one_request_at_a_time_and_a_retry_wait_gives_its_slot_away() {
    let _g = one_at_a_time();
    let srv = counting_server(Duration::from_millis(20));
    let c = client(&format!("http://{}", srv.addr), |o| {
        o.set_timeout(Duration::from_secs(10)).unwrap();
    });
    let mut ids = vec![uniq("wait-")];
    ids.extend((0..10).map(|_| uniq("ok-")));
    let r = within(WATCHDOG, move || {
        let r = c.hangup_many(&ids, 1);
        (r, ids)
    })
    .expect("hangup_many returned");
    let (r, ids) = r;
    let r = r.unwrap();
    assert!(r.iter().all(|x| x.is_ok()), "{r:?}");
    assert_eq!(
        srv.peak.load(Ordering::SeqCst),
        1,
        "max_parallel 1: one request at a time"
    );
    let order = srv.order.lock().unwrap().clone();
    // The 429's retry waits 1 s without its slot: the others go meanwhile.
    let second = order.iter().rposition(|x| *x == ids[0]).unwrap();
    assert!(
        second > 1,
        "the retry of {} waited holding the slot: {order:?}",
        ids[0]
    );
}

// ---------------------------------------------------------------------------------------
// Through a proxy (tinyproxy) on the async and bulk paths: https tunnelled, http forwarded.
// ---------------------------------------------------------------------------------------

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tls")
}

fn sim_client(base: &str, tweak: impl FnOnce(&mut Options)) -> Client {
    use tryvox_sim::server::{DEFAULT_ACCOUNT, DEFAULT_API_KEY};
    let mut o = Options::new();
    o.set_base_url(base).unwrap();
    o.set_timeout(Duration::from_secs(8)).unwrap();
    tweak(&mut o);
    Client::with_options(DEFAULT_ACCOUNT, DEFAULT_API_KEY, &o).unwrap()
}

fn async_and_bulk(c: &Client, prefix: &str, n: usize) -> (Vec<HangupResult>, Vec<HangupResult>) {
    let tally = Tally::default();
    for i in 0..n {
        tally.submit(c, format!("{prefix}-a{i}"));
    }
    assert!(tally.wait_for(n, WATCHDOG), "async callbacks arrived");
    let ids: Vec<String> = (0..n).map(|i| format!("{prefix}-b{i}")).collect();
    let bulk = c.hangup_many(&ids, 8).unwrap();
    let got = tally.snapshot();
    let asy = (0..n)
        .map(|i| {
            let v = &got[&format!("{prefix}-a{i}")];
            assert_eq!(v.len(), 1);
            clone_result(&v[0])
        })
        .collect();
    (asy, bulk)
}

#[test]
fn proxy_tunnel_on_the_async_and_bulk_paths() {
    let _g = one_at_a_time();
    if !have_tool("tinyproxy") {
        eprintln!("no tinyproxy: skipped");
        return;
    }
    let dir = scratch("review_engine", "tinyproxy");
    let (_p, proxy, log) = tinyproxy(&dir, 100);
    let fx = fixtures();
    let tls = tryvox_sim::spawn(tryvox_sim::Config {
        tls: Some((fx.join("server.pem"), fx.join("server.key"))),
        ..Default::default()
    })
    .unwrap();
    let plain = tryvox_sim::spawn(Default::default()).unwrap();
    for (name, sim, ca) in [("https", &tls, true), ("http", &plain, false)] {
        let c = sim_client(&sim.base_url, |o| {
            o.set_proxy(&proxy).unwrap();
            if ca {
                o.set_ca_file(fx.join("ca.pem").to_str().unwrap()).unwrap();
            }
        });
        let (a, b) = within(WATCHDOG, move || {
            let r = async_and_bulk(&c, &format!("nosuch-{name}"), 20);
            drop(c);
            r
        })
        .unwrap_or_else(|| panic!("{name}: the proxied hangups did not finish"));
        for r in a.iter().chain(&b) {
            assert_eq!(status_of(r), Status::NotFound, "{name}: {r:?}");
        }
    }
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        text.contains(&format!("CONNECT 127.0.0.1:{} HTTP/1.1", tls.addr.port())),
        "went through the proxy:\n{text}"
    );
    // Plain http: the requests themselves, in absolute form, and no tunnel.
    let plain_at = format!("127.0.0.1:{}", plain.addr.port());
    assert!(
        text.contains(&format!("DELETE http://{plain_at}/v1/voice/accounts/"))
            && !text.contains(&format!("CONNECT {plain_at} ")),
        "plain http went through the proxy in absolute form:\n{text}"
    );
}

// ---------------------------------------------------------------------------------------
// TLS refused (unknown CA, wrong name) on the async and bulk paths.
// ---------------------------------------------------------------------------------------

#[test]
fn tls_errors_on_the_async_and_bulk_paths() {
    let _g = one_at_a_time();
    let fx = fixtures();
    for (cert, key, trust_ca) in [
        ("server.pem", "server.key", false), // unknown CA (built-in roots)
        ("wrongname.pem", "wrongname.key", true), // trusted CA, wrong name
        ("selfsigned.pem", "selfsigned.key", true),
    ] {
        let sim = tryvox_sim::spawn(tryvox_sim::Config {
            tls: Some((fx.join(cert), fx.join(key))),
            ..Default::default()
        })
        .unwrap();
        let c = sim_client(&sim.base_url, |o| {
            if trust_ca {
                o.set_ca_file(fx.join("ca.pem").to_str().unwrap()).unwrap();
            }
        });
        let (a, b) = within(WATCHDOG, move || {
            let r = async_and_bulk(&c, "tls", 10);
            let n = wait_in_flight_zero(&c);
            assert_eq!(n, 0);
            drop(c);
            r
        })
        .unwrap_or_else(|| panic!("{cert}: did not finish"));
        for r in a.iter().chain(&b) {
            assert_eq!(status_of(r), Status::TlsError, "{cert}: {r:?}");
        }
    }
}

// ---------------------------------------------------------------------------------------
// Resolver: stuck with async work queued, then the client dropped; black-holed first
// address on the async path.
// ---------------------------------------------------------------------------------------

#[test]
fn a_stuck_resolver_with_async_work_then_drop() {
    let _g = one_at_a_time();
    let engines_before = engine_tids();
    let (release, gate) = mpsc::channel::<()>();
    let gate = Mutex::new(gate);
    let lookup: tryvox_core::LookupFn = Arc::new(move |_: &str| {
        let _ = gate.lock().unwrap().recv();
        Err(std::io::Error::other("released"))
    });
    let mut o = Options::new();
    o.set_base_url("http://stuck.test:9").unwrap();
    o.allow_insecure_http(true);
    o.set_timeout(Duration::from_millis(1500)).unwrap();
    o.set_connect_timeout(Duration::from_millis(400)).unwrap();
    o.set_resolver(lookup);
    let c = Client::with_options(AUTH_ID, API_KEY, &o).unwrap();
    let tally = Tally::default();
    for _ in 0..50 {
        tally.submit(&c, uniq("ok-"));
    }
    let ids: Vec<String> = (0..20).map(|_| uniq("ok-")).collect();
    let c = Arc::new(c);
    let c2 = Arc::clone(&c);
    let bulk = std::thread::spawn(move || c2.hangup_many(&ids, 4));
    let bulk = bulk.join().unwrap().unwrap();
    assert!(
        bulk.iter().all(|r| status_of(r) == Status::Timeout),
        "{bulk:?}"
    );
    // More async, then drop at once, while every lookup is still stuck.
    for _ in 0..50 {
        tally.submit(&c, uniq("ok-"));
    }
    let c = Arc::try_unwrap(c).ok().unwrap();
    let dropped = within(Duration::from_secs(30), move || drop(c));
    let _ = release.send(());
    assert!(dropped.is_some(), "drop waited for the stuck resolver");
    assert_eq!(
        tally.total.load(Ordering::SeqCst),
        100,
        "every callback delivered by drop"
    );
    for (id, v) in tally.snapshot() {
        assert_eq!(v.len(), 1, "{id}");
        assert_eq!(status_of(&v[0]), Status::Timeout, "{id}: {:?}", v[0]);
    }
    assert_no_new_engine(&engines_before);
}

#[test]
fn a_black_holed_first_address_on_the_async_path() {
    let _g = one_at_a_time();
    let s = TestServer::start();
    let port = s.addr.port();
    let hole = support::black_hole(std::net::SocketAddrV4::new([127, 0, 0, 3].into(), port))
        .expect("black hole");
    let order = vec![hole.addr, s.addr];
    let lookup: tryvox_core::LookupFn = Arc::new(move |_: &str| Ok(order.clone()));
    let mut o = Options::new();
    o.set_base_url(&format!("http://holed.test:{port}"))
        .unwrap();
    o.allow_insecure_http(true);
    o.set_timeout(Duration::from_secs(4)).unwrap();
    o.set_connect_timeout(Duration::from_secs(3)).unwrap();
    o.set_max_retries(0).unwrap();
    o.set_resolver(lookup);
    let c = Client::with_options(AUTH_ID, API_KEY, &o).unwrap();
    let tally = Tally::default();
    for _ in 0..30 {
        tally.submit(&c, uniq("slow-100-"));
    }
    assert!(tally.wait_for(30, WATCHDOG));
    for (id, v) in tally.snapshot() {
        assert_eq!(status_of(&v[0]), Status::Ok, "{id}: {:?}", v[0]);
    }
    drop(c);
    drop(hole);
}

// ---------------------------------------------------------------------------------------
// CPU: the loop must sleep while idle (keep-alive connections open) and while waiting for
// a server that does not answer.
// ---------------------------------------------------------------------------------------

#[test]
fn the_engine_sleeps_while_idle_and_while_waiting() {
    let _g = one_at_a_time();
    let engines_before = engine_tids();
    let s = TestServer::start();
    let c = client(&s.base_url(), |o| {
        o.set_timeout(Duration::from_secs(30)).unwrap();
    });
    let tally = Tally::default();
    for _ in 0..50 {
        tally.submit(&c, uniq("ok-"));
    }
    assert!(tally.wait_for(50, WATCHDOG));
    let engine: Vec<(u32, u64)> = threads_named("tryvox-engine")
        .into_iter()
        .filter(|t| !engines_before.contains(&t.0))
        .collect();
    assert_eq!(engine.len(), 1, "one engine thread");
    let (tid, before) = engine[0];
    std::thread::sleep(Duration::from_millis(2500)); // idle, 50 keep-alive connections
    let after = threads_named("tryvox-engine")
        .into_iter()
        .find(|t| t.0 == tid)
        .map(|t| t.1);
    let idle_ticks = after.unwrap_or(before) - before;
    // Now busy waiting: 20 hangups the server never answers (deadline 30 s).
    for _ in 0..20 {
        tally.submit(&c, uniq("hang-"));
    }
    std::thread::sleep(Duration::from_millis(200));
    let ticks = |tid: u32| {
        threads_named("tryvox-engine")
            .into_iter()
            .find(|t| t.0 == tid)
            .map_or(0, |t| t.1)
    };
    let before = ticks(tid);
    std::thread::sleep(Duration::from_millis(2500));
    let after = ticks(tid);
    let busy_ticks = after - before;
    eprintln!("engine CPU ticks: idle {idle_ticks}, waiting {busy_ticks}");
    assert!(idle_ticks <= 5, "the idle engine used {idle_ticks} ticks");
    assert!(
        busy_ticks <= 5,
        "the waiting engine used {busy_ticks} ticks"
    );
    // Drop waits for the 20 hanging hangups' deadline: not here, leak the wait instead.
    let _ = within(Duration::from_secs(1), move || drop(c));
}

// ---------------------------------------------------------------------------------------
// Callbacks the library runs on its engine thread: the log function.
// ---------------------------------------------------------------------------------------

/// The header says the log callback runs "on a library thread for async and bulk
/// hangups" and "must not free the client": nothing else is forbidden. On the engine
/// thread, a log callback that calls `hangup_many` (a bulk call, allowed from every other
/// callback) waits for the engine to run the batch, and the engine is the thread waiting.
#[test]
fn a_log_callback_calling_hangup_many_does_not_deadlock_the_engine() {
    let _g = one_at_a_time();
    let s = TestServer::start();
    // Weak: the client's log function must not keep the client alive.
    let slot: Arc<OnceLock<std::sync::Weak<Client>>> = Arc::new(OnceLock::new());
    let once = Arc::new(AtomicBool::new(false));
    let (sl, on) = (Arc::clone(&slot), Arc::clone(&once));
    let log: tryvox_core::LogFn = Arc::new(move |level: LogLevel, msg: &str| {
        // Say, a host that ends the call's peer leg when it sees a failure logged.
        if level == LogLevel::Debug && msg.contains("nf-flat-") && !on.swap(true, Ordering::SeqCst)
        {
            if let Some(c) = sl.get().and_then(std::sync::Weak::upgrade) {
                let _ = c.hangup_many(&[uniq("ok-")], 1);
            }
        }
    });
    let c = Arc::new(client(&s.base_url(), |o| {
        o.set_timeout(Duration::from_secs(5)).unwrap();
        o.set_log_fn(Some(log));
    }));
    let _ = slot.set(Arc::downgrade(&c));
    let tally = Tally::default();
    tally.submit(&c, uniq("nf-flat-"));
    tally.submit(&c, uniq("ok-"));
    let arrived = tally.wait_for(2, Duration::from_secs(20));
    // Normally written before the callback; another thread writing the queue may write
    // it a moment later.
    let until = Instant::now() + WATCHDOG;
    while !once.load(Ordering::SeqCst) && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(10));
    }
    let (ok, ran) = (arrived, once.load(Ordering::SeqCst));
    // The log function may still hold the client (its hangup_many) for a moment.
    let until = Instant::now() + WATCHDOG;
    while Arc::strong_count(&c) > 1 && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(10));
    }
    let Ok(c) = Arc::try_unwrap(c) else {
        panic!("the log function kept the client")
    };
    let dropped = within(WATCHDOG, move || drop(c)).is_some();
    assert!(ran, "the log callback ran");
    assert!(dropped, "drop did not return");
    assert!(
        ok,
        "deadlock: {} of 2 callbacks within 20 s (the engine thread is blocked in the log \
         callback's hangup_many, waiting for itself)",
        tally.total.load(Ordering::SeqCst)
    );
}

/// One panic in the loop (here: a log function that panics on one line, a Rust caller's
/// bug) ends every hangup the engine holds with INTERNAL_ERROR, unrelated async hangups
/// and a whole emergency bulk call included (its ids not yet started are never sent).
#[test]
fn a_panicking_log_line_fails_no_hangup() {
    let _g = one_at_a_time();
    let s = TestServer::start();
    let log: tryvox_core::LogFn = Arc::new(move |_: LogLevel, msg: &str| {
        if msg.contains("nf-flat-boom") {
            panic!("a log function's bug");
        }
    });
    let c = Arc::new(client(&s.base_url(), |o| {
        o.set_timeout(Duration::from_secs(10)).unwrap();
        o.set_log_fn(Some(log));
    }));
    let tally = Tally::default();
    for _ in 0..20 {
        tally.submit(&c, uniq("slow-1500-"));
    }
    let ids: Vec<String> = (0..200).map(|_| uniq("slow-300-")).collect();
    let c2 = Arc::clone(&c);
    let bulk = std::thread::spawn(move || c2.hangup_many(&ids, 4));
    std::thread::sleep(Duration::from_millis(200));
    tally.submit(&c, uniq("nf-flat-boom-"));
    assert!(tally.wait_for(21, WATCHDOG));
    let bulk = bulk.join().unwrap().unwrap();
    let got = tally.snapshot();
    let internal_async = got
        .iter()
        .filter(|(id, v)| id.starts_with("slow-") && status_of(&v[0]) == Status::InternalError)
        .count();
    let internal_bulk = bulk
        .iter()
        .filter(|r| status_of(r) == Status::InternalError)
        .count();
    eprintln!(
        "after one panic: {internal_async}/20 async and {internal_bulk}/200 bulk INTERNAL_ERROR"
    );
    let c = Arc::try_unwrap(c).ok().unwrap();
    let _ = within(WATCHDOG, move || drop(c));
    assert_eq!(
        (internal_async, internal_bulk),
        (0, 0),
        "hangups unrelated to the panic were failed (and bulk ids never sent)"
    );
}

/// Deadlines in the connect phase: every address black-holed, a connect timeout longer
/// than the deadline, async and bulk together; each outcome once, TIMEOUT, in_flight 0.
#[test]
fn deadlines_while_connecting_to_a_black_hole() {
    let _g = one_at_a_time();
    let engines_before = engine_tids();
    let port = free_port();
    let hole = support::black_hole(std::net::SocketAddrV4::new([127, 0, 0, 4].into(), port))
        .expect("black hole");
    let addr = hole.addr;
    let lookup: tryvox_core::LookupFn = Arc::new(move |_: &str| Ok(vec![addr, addr]));
    let mut o = Options::new();
    o.set_base_url(&format!("http://hole.test:{port}")).unwrap();
    o.allow_insecure_http(true);
    o.set_timeout(Duration::from_millis(700)).unwrap();
    o.set_connect_timeout(Duration::from_secs(5)).unwrap();
    o.set_resolver(lookup);
    let c = Arc::new(Client::with_options(AUTH_ID, API_KEY, &o).unwrap());
    let tally = Tally::default();
    for _ in 0..300 {
        tally.submit(&c, uniq("ok-"));
    }
    let ids: Vec<String> = (0..300).map(|_| uniq("ok-")).collect();
    let c2 = Arc::clone(&c);
    let bulk = std::thread::spawn(move || c2.hangup_many(&ids, 1024));
    assert!(tally.wait_for(300, WATCHDOG));
    let bulk = bulk.join().unwrap().unwrap();
    assert!(
        bulk.iter().all(|r| status_of(r) == Status::Timeout),
        "{:?}",
        &bulk[..3]
    );
    std::thread::sleep(Duration::from_millis(200));
    for (id, v) in tally.snapshot() {
        assert_eq!(v.len(), 1, "{id}");
        assert_eq!(status_of(&v[0]), Status::Timeout, "{id}: {:?}", v[0]);
    }
    assert_eq!(wait_in_flight_zero(&c), 0);
    assert_eq!(c.stats().connections_open, 0);
    let c = Arc::try_unwrap(c).ok().unwrap();
    assert!(within(WATCHDOG, move || drop(c)).is_some());
    assert_no_new_engine(&engines_before);
    drop(hole);
}

// ---------------------------------------------------------------------------------------
// A chunked body that never yields a line end: the unread input hits its bound.
// ---------------------------------------------------------------------------------------

/// CPU ticks (utime + stime) of the calling thread.
fn my_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
    let (_, rest) = stat.rsplit_once(')').unwrap();
    let f: Vec<&str> = rest.split_whitespace().collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

/// A raw server whose every answer is a 404 head, chunked, then one 5-byte chunk and
/// 32 KiB of bytes with no CRLF (a chunk longer than it said, or a mangled chunk-size
/// line); it then keeps the connection open without a word more.
fn unterminated_chunk_server() -> SocketAddr {
    let server = support::serve_each(|_, mut s| {
        if support::read_through_head(&mut s).is_none() {
            return;
        }
        let mut r =
            b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello".to_vec();
        r.extend(std::iter::repeat_n(b'x', 32 * 1024));
        let _ = s.write_all(&r);
        std::thread::sleep(Duration::from_secs(30));
    });
    server.addr
}

#[test]
fn an_unterminated_chunk_is_reported_without_spinning() {
    let _g = one_at_a_time();
    let addr = unterminated_chunk_server();
    let c = client(&format!("http://{addr}"), |o| {
        o.set_timeout(Duration::from_secs(2)).unwrap();
        o.set_max_retries(0).unwrap();
    });
    let t0 = my_ticks();
    let r = c.hangup(&uniq("nf-"));
    let ticks = my_ticks() - t0;
    eprintln!("sync: {r:?} after {ticks} CPU ticks on the caller's thread");
    // Async: the same answer on the engine.
    let tally = Tally::default();
    tally.submit(&c, uniq("nf-"));
    assert!(tally.wait_for(1, WATCHDOG));
    let a = tally.snapshot().into_values().next().unwrap().remove(0);
    eprintln!("async: {a:?}");
    assert!(
        ticks <= 20,
        "the caller's thread spun: {ticks} CPU ticks inside one hangup (poll() level-triggered \
         on bytes fill() refuses to read)"
    );
    assert_ne!(
        status_of(&r),
        Status::Timeout,
        "sync waited out the deadline: {r:?}"
    );
    assert_ne!(
        status_of(&a),
        Status::Timeout,
        "async waited out the deadline: {a:?}"
    );
}

/// The engine exits after 5 s idle (closing its connections) and a later hangup starts
/// it again; nothing is left after drop.
#[test]
fn the_engine_exits_when_idle_and_comes_back() {
    let _g = one_at_a_time();
    let engines_before = engine_tids();
    let s = TestServer::start();
    let c = client(&s.base_url(), |o| {
        o.set_timeout(Duration::from_secs(5)).unwrap()
    });
    let tally = Tally::default();
    for _ in 0..20 {
        tally.submit(&c, uniq("ok-"));
    }
    assert!(tally.wait_for(20, WATCHDOG));
    let first: Vec<u32> = engine_tids()
        .into_iter()
        .filter(|t| !engines_before.contains(t))
        .collect();
    assert_eq!(first.len(), 1);
    let until = Instant::now() + Duration::from_secs(20);
    while engine_tids().contains(&first[0]) && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!engine_tids().contains(&first[0]), "the idle engine exited");
    assert_eq!(c.stats().connections_open, 0, "its connections closed");
    // A burst right as it comes back, from many threads.
    let c = Arc::new(c);
    let hs: Vec<_> = (0..8)
        .map(|_| {
            let (c, t) = (Arc::clone(&c), tally.clone());
            std::thread::spawn(move || {
                for _ in 0..25 {
                    t.submit(&c, uniq("ok-"));
                }
            })
        })
        .collect();
    for h in hs {
        h.join().unwrap();
    }
    assert!(tally.wait_for(220, WATCHDOG));
    assert!(tally
        .snapshot()
        .values()
        .all(|v| v.len() == 1 && v[0].is_ok()));
    let now: Vec<u32> = engine_tids()
        .into_iter()
        .filter(|t| !engines_before.contains(t))
        .collect();
    assert_eq!(now.len(), 1, "one engine thread: {now:?}");
    let c = Arc::try_unwrap(c).ok().unwrap();
    assert!(within(WATCHDOG, move || drop(c)).is_some());
    assert_no_new_engine(&engines_before);
}

/// The key is never in an outcome or a log line on the async and bulk paths, whatever
/// the server quotes back.
#[test]
fn the_key_never_shows_on_the_async_and_bulk_paths() {
    let _g = one_at_a_time();
    let s = TestServer::start();
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let l2 = Arc::clone(&lines);
    let log: tryvox_core::LogFn =
        Arc::new(move |_: LogLevel, m: &str| l2.lock().unwrap().push(m.to_owned()));
    let c = client(&s.base_url(), |o| {
        o.set_timeout(Duration::from_secs(5)).unwrap();
        o.set_log_fn(Some(log));
    });
    let kinds = [
        "echo-key-",
        "leak-0-",
        "leak-7-",
        "leak-code-",
        "leak-pieces-",
        "leak-4000-",
    ];
    let tally = Tally::default();
    for k in kinds {
        tally.submit(&c, uniq(k));
    }
    assert!(tally.wait_for(kinds.len(), WATCHDOG));
    let ids: Vec<String> = kinds.iter().map(|k| uniq(k)).collect();
    let bulk = c.hangup_many(&ids, 3).unwrap();
    let mut texts: Vec<String> = bulk.iter().map(|r| format!("{r:?}")).collect();
    texts.extend(tally.snapshot().values().map(|v| format!("{v:?}")));
    texts.extend(lines.lock().unwrap().iter().cloned());
    for t in &texts {
        assert!(!t.contains(API_KEY), "the key shows: {t}");
        assert!(!t.contains(&API_KEY[12..]), "part of the key shows: {t}");
    }
}

/// Free lets every queued hangup start at once: 3,000 queued (three times the async
/// budget) against a server answering in 1.5 s, with a 4 s deadline, dropped at once.
/// Drained 1,024 at a time, the last third would meet its deadline queued (TIMEOUT).
#[test]
fn drop_starts_the_whole_queue_at_once() {
    let _g = one_at_a_time();
    raise_fd_limit();
    let s = TestServer::start();
    // Ample time: started at once the 3,000 end in about 2 s (3 s on a loaded machine
    // with the file's earlier tests still dropping their clients in the background; 4 s
    // failed 1 run of 10 under stress-ng --cpu 2); 64 at a time would take 70 s.
    let c = client(&s.base_url(), |o| {
        o.set_timeout(Duration::from_secs(10)).unwrap()
    });
    let tally = Tally::default();
    for _ in 0..3000 {
        tally.submit(&c, uniq("slow-1500-"));
    }
    assert!(within(WATCHDOG, move || drop(c)).is_some(), "drop returned");
    assert_eq!(
        tally.total.load(Ordering::SeqCst),
        3000,
        "every callback before drop returned"
    );
    let got = tally.snapshot();
    let bad: Vec<_> = got
        .iter()
        .filter(|(_, v)| v.len() != 1 || v[0].is_err())
        .take(3)
        .collect();
    let n_bad = got
        .values()
        .filter(|v| v.len() != 1 || v[0].is_err())
        .count();
    assert_eq!(n_bad, 0, "{n_bad} not OK, e.g. {bad:?}");
}

/// A bulk call never waits behind async backlog: 1,024 async hangups in flight that the
/// server never answers (20 s deadline) and 1,000 more queued; a bulk call of 50 must
/// still finish (bounded wait far below the async deadline).
#[test]
fn bulk_is_not_behind_a_full_async_queue() {
    let _g = one_at_a_time();
    raise_fd_limit();
    let s = TestServer::start();
    let c = Arc::new(client(&s.base_url(), |o| {
        o.set_timeout(Duration::from_secs(20)).unwrap()
    }));
    let tally = Tally::default();
    for _ in 0..2024 {
        tally.submit(&c, uniq("hang-"));
    }
    let ids: Vec<String> = (0..50).map(|_| uniq("ok-")).collect();
    let c2 = Arc::clone(&c);
    let r = within(Duration::from_secs(15), move || c2.hangup_many(&ids, 8));
    // Leave the client (and its 20 s of hanging hangups) to a background drop.
    std::thread::spawn(move || drop(c));
    let r = r
        .expect("the bulk call waited behind the async backlog")
        .unwrap();
    assert!(
        r.iter().all(|x| x.is_ok()),
        "{:?}",
        r.iter().find(|x| x.is_err())
    );
}

/// Log lines of async and bulk hangups are written on the one engine thread: a log
/// function that takes 20 ms a line (a syslog under pressure) serializes every hangup of
/// the client behind it; 200 async hangups of a fast server with a 2 s deadline time out.
#[test]
fn a_slow_log_function_does_not_stall_async_hangups() {
    let _g = one_at_a_time();
    let s = TestServer::start();
    let log: tryvox_core::LogFn = Arc::new(move |_: LogLevel, _: &str| {
        std::thread::sleep(Duration::from_millis(20));
    });
    let c = client(&s.base_url(), |o| {
        o.set_timeout(Duration::from_secs(2)).unwrap();
        o.set_log_fn(Some(log));
    });
    let tally = Tally::default();
    for _ in 0..200 {
        tally.submit(&c, uniq("ok-"));
    }
    assert!(tally.wait_for(200, WATCHDOG));
    let timeouts = tally
        .snapshot()
        .values()
        .filter(|v| status_of(&v[0]) == Status::Timeout)
        .count();
    drop(c);
    assert_eq!(
        timeouts, 0,
        "{timeouts} of 200 hangups of a server answering at once timed out"
    );
}

// ---------------------------------------------------------------------------------------
// Callbacks the pool could not take (no thread could start), then a panic in the loop:
// fail_everything clears every timer, the Redeliver one included.
// ---------------------------------------------------------------------------------------

/// The root cause, at the parser: a chunked body whose chunk never ends in CRLF is kept
/// unread past the bound the fuzz target (and `Conn::fill`) relies on.
#[test]
fn wire_bounds_an_unterminated_chunk() {
    let mut r = b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello".to_vec();
    r.extend(std::iter::repeat_n(b'x', 40 * 1024));
    let got =
        std::panic::catch_unwind(|| tryvox_core::fuzzing::read_in_pieces(&r, 4096, 64 * 1024));
    assert!(
        matches!(got, Ok(Some((404, _)))),
        "the 404 is not reported (the fuzz target's bound assertion fires, or the status is lost): {got:?}"
    );
}
