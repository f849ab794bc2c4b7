//! Scheduled hangups (`hangup_after`, `tryvox_hangup_after`): firing, cancel before and
//! after firing, free with pending ones (each callback once, BUSY, nothing sent), and
//! 100,000 pending on one timer thread. The tests of this file run one at a time: one
//! counts the process's threads.

mod support;

use std::ffi::{c_char, c_int, c_void, CString};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use support::{uniq, TestServer, API_KEY, AUTH_ID};
use tryvox_core::{Client, Options, Status};

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn client(s: &TestServer) -> Client {
    let mut o = Options::new();
    o.set_base_url(&s.base_url()).unwrap();
    Client::with_options(AUTH_ID, API_KEY, &o).unwrap()
}

/// The library's threads in this process, by name (`tryvox-timer`, `tryvox-worker`, ...):
/// the test server's and the harness's own threads are not counted.
fn library_threads() -> Vec<String> {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .map(|name| name.trim().to_owned())
        .filter(|name| name.starts_with("tryvox-"))
        .collect()
}

#[test]
fn fire_cancel_and_free() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let s = TestServer::start();
    let c = client(&s);
    let (tx, rx) = mpsc::channel();
    let send = |tx: &mpsc::Sender<(String, Result<u16, Status>, Instant)>| {
        let tx = tx.clone();
        move |id: String, r: tryvox_core::HangupResult| {
            let _ = tx.send((id, r.map_err(|e| e.status()), Instant::now()));
        }
    };
    let fired = uniq("ok-");
    let cancelled = uniq("ok-");
    let pending = uniq("ok-");
    let at = Instant::now() + Duration::from_millis(200);
    let h_fired = c
        .hangup_after(fired.clone(), Duration::from_millis(200), send(&tx))
        .unwrap();
    let h_cancelled = c
        .hangup_after(cancelled.clone(), Duration::from_secs(30), send(&tx))
        .unwrap();
    let _h_pending = c
        .hangup_after(pending.clone(), Duration::from_secs(3600), send(&tx))
        .unwrap();
    assert!(h_cancelled.cancel(), "cancelled before its time");
    assert!(!h_cancelled.cancel(), "a second cancel is too late");
    let (id, r, when) = rx.recv_timeout(Duration::from_secs(20)).unwrap();
    assert_eq!((id.as_str(), r), (fired.as_str(), Ok(204)));
    println!(
        "fired {} ms after its time",
        when.saturating_duration_since(at).as_millis()
    );
    assert!(!h_fired.cancel(), "too late: it fired");
    assert!(rx.try_recv().is_err(), "nothing else ran yet");
    drop(c);
    // Freed with one pending: its callback once, BUSY; the cancelled one never.
    let (id, r, _) = rx.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!((id.as_str(), r), (pending.as_str(), Err(Status::Busy)));
    assert!(
        rx.try_recv().is_err(),
        "the cancelled hangup's callback never ran"
    );
    assert_eq!(s.requests_for(&fired).len(), 1);
    assert!(
        s.requests_for(&cancelled).is_empty(),
        "nothing sent for the cancelled"
    );
    assert!(
        s.requests_for(&pending).is_empty(),
        "nothing sent for the pending"
    );
}

#[test]
fn a_hundred_thousand_pending_on_one_thread() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let s = TestServer::start();
    let c = client(&s);
    let before = library_threads();
    let delivered = Arc::new(AtomicUsize::new(0));
    let busy = Arc::new(AtomicUsize::new(0));
    for _ in 0..100_000 {
        let (d, b) = (Arc::clone(&delivered), Arc::clone(&busy));
        c.hangup_after(uniq("ok-"), Duration::from_secs(3600), move |_, r| {
            d.fetch_add(1, Ordering::SeqCst);
            if r.is_err_and(|e| e.status() == Status::Busy) {
                b.fetch_add(1, Ordering::SeqCst);
            }
        })
        .unwrap();
    }
    let during = library_threads();
    println!("library threads: {before:?} before, {during:?} with 100,000 pending");
    assert!(before.is_empty(), "{before:?}");
    assert_eq!(during, ["tryvox-timer"], "one timer thread holds them all");
    drop(c);
    assert_eq!(
        delivered.load(Ordering::SeqCst),
        100_000,
        "every callback once"
    );
    assert_eq!(busy.load(Ordering::SeqCst), 100_000, "all BUSY");
    assert!(s.requests().is_empty(), "nothing sent");
}

static C_RESULTS: Mutex<Vec<(String, c_int)>> = Mutex::new(Vec::new());

unsafe extern "C" fn record(
    _ud: *mut c_void,
    id: *const c_char,
    status: c_int,
    _http: c_int,
    _msg: *const c_char,
) {
    let id = unsafe { std::ffi::CStr::from_ptr(id) }
        .to_string_lossy()
        .into_owned();
    C_RESULTS.lock().unwrap().push((id, status));
}

#[test]
fn the_c_timer_api() {
    use tryvox::ffi::*;
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let s = TestServer::start();
    unsafe {
        let o = tryvox_options_new();
        let url = CString::new(s.base_url()).unwrap();
        tryvox_options_set_base_url(o, url.as_ptr());
        let (a, k) = (
            CString::new(AUTH_ID).unwrap(),
            CString::new(API_KEY).unwrap(),
        );
        let c = tryvox_client_new_with_options(a.as_ptr(), k.as_ptr(), o);
        tryvox_options_free(o);
        let soon = CString::new(uniq("ok-")).unwrap();
        let later = CString::new(uniq("ok-")).unwrap();
        let mut t1: *mut tryvox_timer = std::ptr::null_mut();
        let mut t2: *mut tryvox_timer = std::ptr::null_mut();
        assert_eq!(
            tryvox_hangup_after(
                c,
                soon.as_ptr(),
                50,
                Some(record),
                std::ptr::null_mut(),
                &mut t1
            ),
            0
        );
        assert_eq!(
            tryvox_hangup_after(
                c,
                later.as_ptr(),
                60_000,
                Some(record),
                std::ptr::null_mut(),
                &mut t2
            ),
            0
        );
        assert_eq!(tryvox_timer_cancel(t2), 0, "cancelled");
        assert_eq!(tryvox_timer_cancel(t2), 13, "a second cancel: BUSY");
        let until = Instant::now() + Duration::from_secs(20);
        while C_RESULTS.lock().unwrap().is_empty() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(tryvox_timer_cancel(t1), 13, "too late: fired");
        // Bad input: nothing scheduled, the handle NULL.
        let bad = CString::new("bad id").unwrap();
        let mut t3: *mut tryvox_timer = 1 as *mut tryvox_timer;
        assert_eq!(
            tryvox_hangup_after(
                c,
                bad.as_ptr(),
                10,
                Some(record),
                std::ptr::null_mut(),
                &mut t3
            ),
            3
        );
        assert!(t3.is_null());
        assert_eq!(
            tryvox_hangup_after(
                c,
                soon.as_ptr(),
                10,
                None,
                std::ptr::null_mut(),
                std::ptr::null_mut()
            ),
            3
        );
        assert_eq!(tryvox_timer_cancel(std::ptr::null_mut()), 3);
        tryvox_client_free(c);
        // Handles outlive their client.
        assert_eq!(tryvox_timer_cancel(t1), 13);
        tryvox_timer_free(t1);
        tryvox_timer_free(t2);
        tryvox_timer_free(std::ptr::null_mut());
    }
    let results = C_RESULTS.lock().unwrap().clone();
    assert_eq!(results.len(), 1, "{results:?}");
    assert_eq!(results[0].1, 0, "the fired one ended its call");
    assert_eq!(s.requests().len(), 1, "only the fired hangup was sent");
}

#[test]
fn cancel_racing_firing_goes_exactly_one_way() {
    // 2,000 hangups due at the same moment, cancelled by another thread around that
    // moment: each is either cancelled (true; no callback, nothing sent) or fired (false;
    // one callback, one request), never both, never neither.
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let s = TestServer::start();
    let c = client(&s);
    let ran: Arc<Vec<AtomicUsize>> = Arc::new((0..2000).map(|_| AtomicUsize::new(0)).collect());
    let mut handles = Vec::new();
    for i in 0..2000 {
        let ran = Arc::clone(&ran);
        handles.push(
            c.hangup_after(uniq("ok-"), Duration::from_millis(100), move |_, _| {
                ran[i].fetch_add(1, Ordering::SeqCst);
            })
            .unwrap(),
        );
    }
    std::thread::sleep(Duration::from_millis(95));
    let cancelled: Vec<bool> = handles.iter().map(|h| h.cancel()).collect();
    drop(c); // every fired hangup has delivered its callback
    let mut fired = 0;
    for (i, was_cancelled) in cancelled.iter().enumerate() {
        let runs = ran[i].load(Ordering::SeqCst);
        assert_eq!(
            (runs, *was_cancelled),
            if *was_cancelled {
                (0, true)
            } else {
                (1, false)
            },
            "hangup {i}"
        );
        fired += runs;
    }
    println!("{} cancelled, {fired} fired", 2000 - fired);
    assert_eq!(s.requests().len(), fired, "one request per fired hangup");
}

#[test]
fn fire_times_against_the_simulators_record() {
    // Each scheduled hangup ends its call no earlier than its time: the simulator's
    // end_time of each call against the time it was scheduled for (printed: lateness).
    use tryvox_sim::server::{DEFAULT_ACCOUNT, DEFAULT_API_KEY};
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let s = tryvox_sim::spawn(tryvox_sim::Config::default()).unwrap();
    let ids = support::seed_calls(&s, 20);
    let mut o = Options::new();
    o.set_base_url(&s.base_url).unwrap();
    let c = Client::with_options(DEFAULT_ACCOUNT, DEFAULT_API_KEY, &o).unwrap();
    let (tx, rx) = mpsc::channel();
    let mut due = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let delay = Duration::from_millis(100 + 50 * i as u64);
        due.push(std::time::SystemTime::now() + delay);
        let tx = tx.clone();
        c.hangup_after(id.clone(), delay, move |_, r| {
            let _ = tx.send(r.map_err(|e| e.status()));
        })
        .unwrap();
    }
    for _ in &ids {
        assert_eq!(rx.recv_timeout(Duration::from_secs(30)).unwrap(), Ok(204));
    }
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut late = Vec::new();
    for (id, due) in ids.iter().zip(&due) {
        let mut r = agent
            .get(format!("{}/{id}", s.calls_url()))
            .header("authorization", format!("Bearer {DEFAULT_API_KEY}"))
            .call()
            .unwrap();
        let v: serde_json::Value =
            serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap();
        assert_eq!(v["end_reason"], "api-hangup", "{id}");
        let ended = humantime::parse_rfc3339(v["end_time"].as_str().unwrap()).unwrap();
        // The record has millisecond precision: a millisecond of slack, never more.
        assert!(
            ended + Duration::from_millis(1) >= *due,
            "{id} ended before its time"
        );
        late.push(ended.duration_since(*due).unwrap_or_default().as_millis());
    }
    late.sort();
    println!(
        "lateness against the simulator's record (ms): median {}, max {}",
        late[late.len() / 2],
        late[late.len() - 1]
    );
}
