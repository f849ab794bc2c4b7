//! The C ABI, called from Rust exactly as a C program calls it: NULL handling, per-thread
//! errors, async and bulk hangups, lifecycle.

mod support;

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::ptr::{null, null_mut};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use support::{uniq, TestServer, API_KEY, AUTH_ID};
use tryvox::ffi::*;

const OK: c_int = 0;
const NOT_FOUND: c_int = 1;
const ALREADY_ENDED: c_int = 2;
const INVALID: c_int = 3;
const BUSY: c_int = 13;

fn cs(s: &str) -> CString {
    CString::new(s).unwrap()
}

fn last_error() -> String {
    unsafe { CStr::from_ptr(tryvox_last_error()) }
        .to_string_lossy()
        .into_owned()
}

fn last_code() -> String {
    unsafe { CStr::from_ptr(tryvox_last_error_code()) }
        .to_string_lossy()
        .into_owned()
}

fn new_client(server: &TestServer) -> *mut tryvox_client {
    unsafe {
        let o = tryvox_options_new();
        assert_eq!(
            tryvox_options_set_base_url(o, cs(&server.base_url()).as_ptr()),
            OK
        );
        let c = tryvox_client_new_with_options(cs(AUTH_ID).as_ptr(), cs(API_KEY).as_ptr(), o);
        tryvox_options_free(o);
        assert!(!c.is_null(), "{}", last_error());
        c
    }
}

#[test]
fn null_arguments_are_invalid_not_crashes() {
    let s = TestServer::start();
    unsafe {
        assert!(tryvox_client_new(null(), cs(API_KEY).as_ptr()).is_null());
        assert!(last_error().contains("auth_id is NULL"), "{}", last_error());
        assert!(tryvox_client_new(cs(AUTH_ID).as_ptr(), null()).is_null());
        assert!(last_error().contains("api_key"));
        // NULL options means defaults.
        let c = tryvox_client_new_with_options(cs(AUTH_ID).as_ptr(), cs(API_KEY).as_ptr(), null());
        assert!(!c.is_null());
        tryvox_client_free(c);
        tryvox_client_free(null_mut());
        tryvox_options_free(null_mut());

        let c = new_client(&s);
        assert_eq!(tryvox_hangup(null_mut(), cs("ok-1").as_ptr()), INVALID);
        assert!(last_error().contains("client is NULL"));
        assert_eq!(tryvox_last_http_status(), 0);
        assert_eq!(tryvox_hangup(c, null()), INVALID);
        assert!(last_error().contains("call_uuid is NULL"));
        let bad_utf8 = [0xffu8, 0xfe, 0];
        assert_eq!(tryvox_hangup(c, bad_utf8.as_ptr().cast()), INVALID);

        for rc in [
            tryvox_options_set_base_url(null_mut(), cs("https://x").as_ptr()),
            tryvox_options_set_timeout_ms(null_mut(), 5),
            tryvox_options_set_connect_timeout_ms(null_mut(), 5),
            tryvox_options_set_max_retries(null_mut(), 1),
            tryvox_options_set_tenant_id(null_mut(), cs("t").as_ptr()),
            tryvox_options_set_user_agent(null_mut(), cs("t").as_ptr()),
            tryvox_options_set_ca_file(null_mut(), cs("/x").as_ptr()),
            tryvox_options_set_proxy(null_mut(), cs("http://h:1").as_ptr()),
            tryvox_options_allow_insecure_http(null_mut(), 1),
            tryvox_options_set_trust_store(null_mut(), 0),
            tryvox_options_set_log_callback(null_mut(), None, null_mut()),
        ] {
            assert_eq!(rc, INVALID);
            assert!(last_error().contains("options is NULL"));
        }
        let o = tryvox_options_new();
        for rc in [
            tryvox_options_set_base_url(o, null()),
            tryvox_options_set_tenant_id(o, null()),
            tryvox_options_set_user_agent(o, null()),
            tryvox_options_set_ca_file(o, null()),
            tryvox_options_set_proxy(o, null()),
            tryvox_options_set_timeout_ms(o, 0),
            tryvox_options_set_connect_timeout_ms(o, 0),
            tryvox_options_set_base_url(o, cs("http://h/?q").as_ptr()),
            tryvox_options_set_base_url(
                o,
                cs(&format!("http://127.0.0.1/{}", "p".repeat(8200))).as_ptr(),
            ),
            tryvox_options_set_trust_store(o, 3),
            tryvox_options_set_trust_store(o, -1),
        ] {
            assert_eq!(rc, INVALID);
            assert!(!last_error().is_empty());
        }
        for store in [
            tryvox_trust_store::TRYVOX_TRUST_SYSTEM_OR_BUNDLED,
            tryvox_trust_store::TRYVOX_TRUST_SYSTEM,
            tryvox_trust_store::TRYVOX_TRUST_BUNDLED,
        ] {
            assert_eq!(tryvox_options_set_trust_store(o, store as c_int), 0);
        }
        tryvox_options_free(o);

        assert_eq!(
            tryvox_hangup_async(null_mut(), cs("ok-1").as_ptr(), Some(record_cb), null_mut()),
            INVALID
        );
        assert_eq!(
            tryvox_hangup_async(c, null(), Some(record_cb), null_mut()),
            INVALID
        );
        assert_eq!(
            tryvox_hangup_async(c, cs("ok-1").as_ptr(), None, null_mut()),
            INVALID
        );
        assert_eq!(
            tryvox_hangup_async(c, cs("a/b").as_ptr(), Some(record_cb), null_mut()),
            INVALID
        );

        let mut out = [99 as c_int; 2];
        let ids = [cs("ok-a"), cs("ok-b")];
        let ptrs = [ids[0].as_ptr(), ids[1].as_ptr()];
        assert_eq!(
            tryvox_hangup_many(null_mut(), ptrs.as_ptr(), 2, out.as_mut_ptr(), 0),
            INVALID
        );
        assert_eq!(
            tryvox_hangup_many(c, null(), 2, out.as_mut_ptr(), 0),
            INVALID
        );
        assert_eq!(
            tryvox_hangup_many(c, ptrs.as_ptr(), 2, null_mut(), 0),
            INVALID
        );
        let with_null = [ids[0].as_ptr(), null()];
        assert_eq!(
            tryvox_hangup_many(c, with_null.as_ptr(), 2, out.as_mut_ptr(), 0),
            INVALID
        );
        assert!(last_error().contains("call_uuids[1]"), "{}", last_error());
        let dots = cs("..");
        let with_bad = [ids[0].as_ptr(), dots.as_ptr()];
        assert_eq!(
            tryvox_hangup_many(c, with_bad.as_ptr(), 2, out.as_mut_ptr(), 0),
            INVALID
        );
        assert_eq!(out, [99, 99], "statuses_out untouched on INVALID_ARGUMENT");
        assert_eq!(tryvox_hangup_many(c, null(), 0, null_mut(), 0), OK);
        tryvox_client_free(c);
    }
    assert_eq!(s.requests().len(), 0, "no bad input sent anything");
}

#[test]
fn status_strings_and_version() {
    let texts: Vec<String> = (0..=13)
        .map(|i| {
            unsafe { CStr::from_ptr(tryvox_status_str(i)) }
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    assert_eq!(texts[0], "ok");
    assert_eq!(texts[1], "call not found");
    assert_eq!(texts[2], "call already ended");
    assert!(texts.iter().all(|t| !t.is_empty()));
    assert_eq!(texts[13], "busy: request not taken");
    let unknown = unsafe { CStr::from_ptr(tryvox_status_str(14)) }
        .to_str()
        .unwrap();
    assert_eq!(unknown, "unknown status");
    assert_eq!(
        unsafe { CStr::from_ptr(tryvox_status_str(-1)) }
            .to_str()
            .unwrap(),
        "unknown status"
    );
    let v = unsafe { CStr::from_ptr(tryvox_version()) }
        .to_str()
        .unwrap();
    assert_eq!(v, env!("CARGO_PKG_VERSION"));
}

#[test]
fn per_thread_errors_with_16_threads() {
    let s = TestServer::start();
    let c = new_client(&s) as usize;
    let threads: Vec<_> = (0..16)
        .map(|t| {
            std::thread::spawn(move || {
                let c = c as *mut tryvox_client;
                for i in 0..20 {
                    let (prefix, want, code, http) = match (t + i) % 4 {
                        0 => ("ok-", OK, "", 204),
                        1 => ("nf-flat-", NOT_FOUND, "call_not_found", 404),
                        2 => ("end-flat-", ALREADY_ENDED, "call_already_ended", 404),
                        _ => ("x/", INVALID, "", 0),
                    };
                    let id = uniq(prefix);
                    let rc = unsafe { tryvox_hangup(c, cs(&id).as_ptr()) };
                    assert_eq!(rc, want, "{id}");
                    // Another thread's call in between must not change what this one sees.
                    std::thread::yield_now();
                    assert_eq!(last_code(), code);
                    assert_eq!(tryvox_last_http_status(), http);
                    assert_eq!(last_error().is_empty(), want == OK, "{}", last_error());
                    if want == NOT_FOUND {
                        assert!(last_error().contains(&id), "{}", last_error());
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    unsafe { tryvox_client_free(c as *mut tryvox_client) };
}

struct Record {
    id: String,
    status: c_int,
    http: c_int,
    message: String,
}

static RECORDS: Mutex<Vec<Record>> = Mutex::new(Vec::new());

unsafe extern "C" fn record_cb(
    ud: *mut c_void,
    id: *const c_char,
    status: c_int,
    http: c_int,
    msg: *const c_char,
) {
    let tag = ud as usize;
    let id = unsafe { CStr::from_ptr(id) }.to_string_lossy().into_owned();
    let message = unsafe { CStr::from_ptr(msg) }
        .to_string_lossy()
        .into_owned();
    RECORDS.lock().unwrap().push(Record {
        id: format!("{tag}:{id}"),
        status,
        http,
        message,
    });
}

fn records_with_tag(tag: usize) -> Vec<Record> {
    let p = format!("{tag}:");
    let mut all = RECORDS.lock().unwrap();
    let (mine, rest): (Vec<Record>, Vec<Record>) =
        all.drain(..).partition(|r| r.id.starts_with(&p));
    *all = rest;
    mine.into_iter()
        .map(|mut r| {
            r.id = r.id[p.len()..].to_owned();
            r
        })
        .collect()
}

#[test]
fn async_callbacks_arrive_once_with_the_right_outcome() {
    let s = TestServer::start();
    let c = new_client(&s);
    let tag = 1usize;
    let mut expected = std::collections::HashMap::new();
    for i in 0..300 {
        let (prefix, want, http) = match i % 3 {
            0 => ("ok-", OK, 204),
            1 => ("nf-nested-", NOT_FOUND, 404),
            _ => ("end-flat-", ALREADY_ENDED, 404),
        };
        let id = uniq(prefix);
        let rc = unsafe {
            tryvox_hangup_async(c, cs(&id).as_ptr(), Some(record_cb), tag as *mut c_void)
        };
        assert_eq!(rc, OK);
        assert_eq!(last_error(), "");
        expected.insert(id, (want, http));
    }
    // Free waits for every queued hangup and delivers every callback before returning.
    unsafe { tryvox_client_free(c) };
    let got = records_with_tag(tag);
    assert_eq!(got.len(), 300, "every callback exactly once");
    for r in &got {
        let (want, http) = expected
            .remove(&r.id)
            .unwrap_or_else(|| panic!("unexpected or duplicate {}", r.id));
        assert_eq!(r.status, want, "{}", r.id);
        assert_eq!(r.http, http);
        assert_eq!(r.message.is_empty(), want == OK, "{}", r.message);
    }
    assert!(expected.is_empty());
    assert_eq!(s.requests().len(), 300);
}

#[test]
fn free_while_busy_delivers_everything() {
    let s = TestServer::start();
    let c = new_client(&s);
    let tag = 2usize;
    for _ in 0..100 {
        let id = uniq("slow-50-");
        assert_eq!(
            unsafe {
                tryvox_hangup_async(c, cs(&id).as_ptr(), Some(record_cb), tag as *mut c_void)
            },
            OK
        );
    }
    unsafe { tryvox_client_free(c) };
    let got = records_with_tag(tag);
    assert_eq!(got.len(), 100);
    assert!(got.iter().all(|r| r.status == OK));
}

/// What callbacks saw, asserted after the fact: an `assert!` inside an `extern "C"`
/// callback would abort the whole test binary instead of failing one test.
#[derive(Default)]
struct Tally {
    /// Deliveries per index of a top-level hangup (user_data is the index).
    delivered: Vec<AtomicUsize>,
    nested_accepted: AtomicUsize,
    nested_refused: AtomicUsize,
    nested_delivered: AtomicUsize,
    /// Bulk calls from callbacks that ran, and that were refused as busy during free.
    bulk_done: AtomicUsize,
    bulk_refused: AtomicUsize,
    /// Top-level callbacks that have returned (their nested call made).
    returned: AtomicUsize,
    problems: Mutex<Vec<String>>,
}

impl Tally {
    fn new(n: usize) -> Tally {
        Tally {
            delivered: (0..n).map(|_| AtomicUsize::new(0)).collect(),
            ..Default::default()
        }
    }
    fn problem(&self, p: String) {
        self.problems.lock().unwrap().push(p);
    }
    fn check_delivered_once(&self) {
        let problems = self.problems.lock().unwrap();
        assert!(
            problems.is_empty(),
            "{} problems, first: {}",
            problems.len(),
            problems[0]
        );
        for (i, d) in self.delivered.iter().enumerate() {
            assert_eq!(d.load(Ordering::SeqCst), 1, "callback {i}");
        }
        assert_eq!(
            self.nested_delivered.load(Ordering::SeqCst),
            self.nested_accepted.load(Ordering::SeqCst),
            "every accepted nested hangup called back exactly once"
        );
    }
}

/// The client and tally a reentrant test's callbacks use (one test at a time sets it).
struct Reentry {
    client: *mut tryvox_client,
    tally: Tally,
    /// What each callback does: 0 bulk only; 1 sync, async or bulk by index.
    mode: usize,
}
// SAFETY: the client is thread-safe by contract; the rest is atomics and a mutex.
unsafe impl Sync for Reentry {}

static REENTRY: Mutex<Option<&'static Reentry>> = Mutex::new(None);
static REENTRY_TEST: Mutex<()> = Mutex::new(());

fn reentry() -> &'static Reentry {
    REENTRY.lock().unwrap().expect("set by the test")
}

unsafe extern "C" fn nested_cb(
    _ud: *mut c_void,
    _id: *const c_char,
    status: c_int,
    _http: c_int,
    _msg: *const c_char,
) {
    let r = reentry();
    if status != OK {
        r.tally
            .problem(format!("nested async hangup: status {status}"));
    }
    r.tally.nested_delivered.fetch_add(1, Ordering::SeqCst);
}

unsafe extern "C" fn reentrant_cb(
    ud: *mut c_void,
    _id: *const c_char,
    status: c_int,
    _http: c_int,
    _msg: *const c_char,
) {
    let r = reentry();
    let i = ud as usize;
    let t = &r.tally;
    t.delivered[i].fetch_add(1, Ordering::SeqCst);
    if status != OK {
        t.problem(format!("callback {i}: status {status}: {}", last_error()));
    }
    let c = r.client;
    let what = if r.mode == 0 { 2 } else { i % 3 };
    match what {
        0 => {
            let again = cs(&uniq("end-flat-"));
            let rc = unsafe { tryvox_hangup(c, again.as_ptr()) };
            if rc != ALREADY_ENDED || last_code() != "call_already_ended" {
                t.problem(format!("sync from callback {i}: {rc} {}", last_error()));
            }
        }
        1 => {
            let id = cs(&uniq("ok-"));
            match unsafe { tryvox_hangup_async(c, id.as_ptr(), Some(nested_cb), null_mut()) } {
                OK => t.nested_accepted.fetch_add(1, Ordering::SeqCst),
                BUSY => t.nested_refused.fetch_add(1, Ordering::SeqCst),
                rc => {
                    t.problem(format!("async from callback {i}: {rc} {}", last_error()));
                    0
                }
            };
        }
        _ => {
            let ids = [cs(&uniq("ok-")), cs(&uniq("nf-flat-"))];
            let ptrs = [ids[0].as_ptr(), ids[1].as_ptr()];
            let mut out = [-1 as c_int; 2];
            let rc = unsafe { tryvox_hangup_many(c, ptrs.as_ptr(), 2, out.as_mut_ptr(), 2) };
            match (rc, out) {
                (OK, [OK, NOT_FOUND]) => t.bulk_done.fetch_add(1, Ordering::SeqCst),
                // Once free has begun: refused, nothing sent, nothing written.
                (BUSY, [-1, -1]) => t.bulk_refused.fetch_add(1, Ordering::SeqCst),
                _ => {
                    t.problem(format!("bulk from callback {i}: {rc} {out:?}"));
                    0
                }
            };
        }
    }
    t.returned.fetch_add(1, Ordering::SeqCst);
}

/// Queues `n` async hangups of `prefix` ids whose callbacks call back into the library
/// (`mode` as in `Reentry`), then frees the client on a watched thread, at once or after
/// every callback ran: free must return (a deadlock fails the test at the watchdog instead
/// of hanging it), and every callback must have run exactly once.
fn reentrant_run(
    n: usize,
    prefix: &str,
    mode: usize,
    free_at_once: bool,
) -> (&'static Reentry, TestServer) {
    let s = TestServer::start();
    let r: &'static Reentry = Box::leak(Box::new(Reentry {
        client: new_client(&s),
        tally: Tally::new(n),
        mode,
    }));
    *REENTRY.lock().unwrap() = Some(r);
    for i in 0..n {
        let id = cs(&uniq(prefix));
        let rc = unsafe {
            tryvox_hangup_async(r.client, id.as_ptr(), Some(reentrant_cb), i as *mut c_void)
        };
        assert_eq!(rc, OK, "{}", last_error());
    }
    let watchdog = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let t = &r.tally;
    // Every callback returned (a callback still inside its nested call when free began
    // would see it refused), and every nested async hangup called back.
    while !free_at_once
        && (t.returned.load(Ordering::SeqCst) < n
            || t.nested_delivered.load(Ordering::SeqCst) < t.nested_accepted.load(Ordering::SeqCst))
    {
        // Each hangup here takes milliseconds: a minute without progress is a deadlock.
        assert!(std::time::Instant::now() < watchdog, "callbacks deadlocked");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let c = r.client as usize;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        unsafe { tryvox_client_free(c as *mut tryvox_client) };
        let _ = tx.send(());
    });
    rx.recv_timeout(std::time::Duration::from_secs(60))
        .expect("tryvox_client_free did not return: the callbacks deadlocked the client");
    r.tally.check_delivered_once();
    (r, s)
}

#[test]
fn async_callbacks_calling_hangup_many_do_not_deadlock() {
    let _one = REENTRY_TEST.lock().unwrap_or_else(|e| e.into_inner());
    // The review's case: 100 async hangups, slow enough that all 64 workers are in a
    // callback at once, each callback a hangup_many of 2 ids. Before the fix, each waited
    // for a helper queued behind the others and free never returned.
    // The client is freed only after every callback ran: while free runs, a callback's
    // helpers are refused and it does all the work itself, which would hide the deadlock.
    let (_, s) = reentrant_run(100, "slow-50-", 0, false);
    // Every request of every level reached the server exactly once.
    assert_eq!(s.requests().len(), 100 + 200);
    let mut paths: Vec<String> = s.requests().into_iter().map(|r| r.path).collect();
    paths.sort();
    paths.dedup();
    assert_eq!(paths.len(), 300);
}

#[test]
fn thousands_of_callbacks_mixing_sync_async_and_bulk_while_freed() {
    let _one = REENTRY_TEST.lock().unwrap_or_else(|e| e.into_inner());
    // 3,000 callbacks, a third each calling tryvox_hangup, tryvox_hangup_async and
    // tryvox_hangup_many, and the client freed while they run. Nested async and bulk
    // hangups are accepted (async ones then called back exactly once) or, once free has
    // begun, refused with TRYVOX_BUSY (nothing sent, never called back).
    let n = 3000;
    for free_at_once in [false, true] {
        let (r, s) = reentrant_run(n, "ok-", 1, free_at_once);
        let t = &r.tally;
        let accepted = t.nested_accepted.load(Ordering::SeqCst);
        let refused = t.nested_refused.load(Ordering::SeqCst);
        let bulk_done = t.bulk_done.load(Ordering::SeqCst);
        let bulk_refused = t.bulk_refused.load(Ordering::SeqCst);
        assert_eq!(accepted + refused, n / 3);
        assert_eq!(bulk_done + bulk_refused, n / 3);
        if !free_at_once {
            assert_eq!(refused + bulk_refused, 0, "nothing is refused before free");
        }
        println!(
            "free at once: {free_at_once}: nested async: {accepted} accepted, {refused} refused \
             as busy; bulk: {bulk_done} ran, {bulk_refused} refused as busy"
        );
        // Top level, sync, accepted nested async, and two per bulk call that ran.
        assert_eq!(s.requests().len(), n + n / 3 + accepted + 2 * bulk_done);
    }
}

/// What `tryvox_hangup_many` returned inside free: status, message, its ids, and whether
/// `statuses_out` was left untouched.
#[allow(clippy::type_complexity)]
static BULK_DURING_FREE: Mutex<Option<(c_int, String, Vec<String>, bool)>> = Mutex::new(None);

unsafe extern "C" fn queue_until_refused_cb(
    ud: *mut c_void,
    _id: *const c_char,
    _status: c_int,
    _http: c_int,
    _msg: *const c_char,
) {
    // Runs inside tryvox_client_free: queues on its own client until refused.
    let out = unsafe { &*(ud as *const Mutex<Option<(c_int, String)>>) };
    let r = reentry();
    for _ in 0..100_000 {
        let id = cs(&uniq("ok-"));
        let rc = unsafe { tryvox_hangup_async(r.client, id.as_ptr(), Some(nested_cb), null_mut()) };
        if rc != OK {
            *out.lock().unwrap() = Some((rc, last_error()));
            // The client is being freed: a bulk call is refused as well, not run one id at
            // a time on this thread while free waits (its helpers could not be queued).
            let ids: Vec<String> = (0..40).map(|_| uniq("slow-50-")).collect();
            let cids: Vec<CString> = ids.iter().map(|i| cs(i)).collect();
            let ptrs: Vec<*const c_char> = cids.iter().map(|c| c.as_ptr()).collect();
            let mut st = vec![-1 as c_int; ids.len()];
            let rc = unsafe {
                tryvox_hangup_many(r.client, ptrs.as_ptr(), ptrs.len(), st.as_mut_ptr(), 8)
            };
            let untouched = st.iter().all(|&s| s == -1);
            *BULK_DURING_FREE.lock().unwrap() = Some((rc, last_error(), ids, untouched));
            return;
        }
        r.tally.nested_accepted.fetch_add(1, Ordering::SeqCst);
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

#[test]
fn work_refused_during_free_is_busy_not_internal_error() {
    let _one = REENTRY_TEST.lock().unwrap_or_else(|e| e.into_inner());
    let s = TestServer::start();
    let r: &'static Reentry = Box::leak(Box::new(Reentry {
        client: new_client(&s),
        tally: Tally::new(0),
        mode: 0,
    }));
    *REENTRY.lock().unwrap() = Some(r);
    let seen: &'static Mutex<Option<(c_int, String)>> = Box::leak(Box::new(Mutex::new(None)));
    let id = cs(&uniq("ok-"));
    let ud = seen as *const _ as *mut c_void;
    assert_eq!(
        unsafe { tryvox_hangup_async(r.client, id.as_ptr(), Some(queue_until_refused_cb), ud) },
        OK
    );
    unsafe { tryvox_client_free(r.client) };
    let (rc, message) = seen
        .lock()
        .unwrap()
        .clone()
        .expect("the callback was refused");
    assert_eq!(rc, BUSY, "{message}");
    assert!(message.contains("being freed"), "{message}");
    assert_eq!(
        r.tally.nested_delivered.load(Ordering::SeqCst),
        r.tally.nested_accepted.load(Ordering::SeqCst)
    );
    let (rc, message, ids, untouched) = BULK_DURING_FREE
        .lock()
        .unwrap()
        .take()
        .expect("the callback tried a bulk hangup");
    assert_eq!(rc, BUSY, "bulk inside free: {message}");
    assert!(message.contains("being freed"), "{message}");
    assert!(
        untouched,
        "statuses_out is untouched when the bulk call is refused"
    );
    for id in &ids {
        assert!(s.requests_for(id).is_empty(), "{id} was sent");
    }
}

#[test]
fn hangup_many_mixed_outcomes_in_order() {
    let s = TestServer::start();
    let c = new_client(&s);
    let n = 2000;
    let ids: Vec<CString> = (0..n)
        .map(|i| {
            cs(&uniq(
                ["ok-", "nf-flat-", "end-nested-", "flaky-503-1-"][i % 4],
            ))
        })
        .collect();
    let ptrs: Vec<*const c_char> = ids.iter().map(|s| s.as_ptr()).collect();
    let mut out = vec![-1 as c_int; n];
    let rc = unsafe { tryvox_hangup_many(c, ptrs.as_ptr(), n, out.as_mut_ptr(), 16) };
    assert_eq!(rc, OK);
    assert_eq!(last_error(), "");
    for (i, st) in out.iter().enumerate() {
        assert_eq!(*st, [OK, NOT_FOUND, ALREADY_ENDED, OK][i % 4], "entry {i}");
    }
    assert_eq!(s.requests().len(), n + n / 4, "one retry per flaky id");
    assert!(
        s.connections() <= 17,
        "at most max_parallel + 1 connections: {}",
        s.connections()
    );
    unsafe { tryvox_client_free(c) };
}

static LOG_LINES: Mutex<Vec<(c_int, String)>> = Mutex::new(Vec::new());

unsafe extern "C" fn log_cb(_ud: *mut c_void, level: c_int, msg: *const c_char) {
    let m = unsafe { CStr::from_ptr(msg) }
        .to_string_lossy()
        .into_owned();
    LOG_LINES.lock().unwrap().push((level, m));
}

#[test]
fn log_callback_gets_levels_and_no_key() {
    let s = TestServer::start();
    unsafe {
        let o = tryvox_options_new();
        tryvox_options_set_base_url(o, cs(&s.base_url()).as_ptr());
        assert_eq!(
            tryvox_options_set_log_callback(o, Some(log_cb), null_mut()),
            OK
        );
        let c = tryvox_client_new_with_options(cs(AUTH_ID).as_ptr(), cs(API_KEY).as_ptr(), o);
        tryvox_options_free(o);
        let id = uniq("flaky-503-1-");
        assert_eq!(tryvox_hangup(c, cs(&id).as_ptr()), OK);
        assert_eq!(tryvox_hangup(c, cs(&uniq("echo-key-")).as_ptr()), 4);
        tryvox_client_free(c);
    }
    let lines = LOG_LINES.lock().unwrap().clone();
    assert!(
        lines
            .iter()
            .any(|(l, m)| *l == 1 && m.contains("retry 1 of 2")),
        "{lines:?}"
    );
    assert!(
        lines.iter().any(|(l, m)| *l == 3 && m.contains("HTTP 204")),
        "{lines:?}"
    );
    assert!(lines
        .iter()
        .all(|(l, m)| (0..=3).contains(l) && !m.contains(API_KEY)));
}

/// (callbacks with TRYVOX_OK, callbacks with anything else) for the free-burst test.
static GATE_RESULTS: [AtomicUsize; 2] = [AtomicUsize::new(0), AtomicUsize::new(0)];

unsafe extern "C" fn gate_cb(
    _ud: *mut c_void,
    _id: *const c_char,
    status: c_int,
    _http: c_int,
    _msg: *const c_char,
) {
    GATE_RESULTS[usize::from(status != OK)].fetch_add(1, Ordering::SeqCst);
}

#[test]
fn free_starts_every_queued_hangup_at_once() {
    // 300 async hangups queued behind the 64 workers, then freed at once. The server holds
    // each `gate-300-` request until 300 are in flight together: drained 64 at a time (as
    // before), the gate never opens and every hangup fails; started all at once by free,
    // they all succeed, and free takes about one hangup's time, not five.
    let s = TestServer::start();
    let c = new_client(&s);
    for _ in 0..300 {
        let id = cs(&uniq("gate-300-"));
        let rc = unsafe { tryvox_hangup_async(c, id.as_ptr(), Some(gate_cb), null_mut()) };
        assert_eq!(rc, OK, "{}", last_error());
    }
    unsafe { tryvox_client_free(c) };
    let ok = GATE_RESULTS[0].load(Ordering::SeqCst);
    let other = GATE_RESULTS[1].load(Ordering::SeqCst);
    assert_eq!((ok, other), (300, 0), "peak in flight {}", s.gate_peak());
    assert!(s.gate_peak() >= 300);
}

#[test]
fn stats_are_size_versioned_and_checked() {
    let s = TestServer::start();
    let c = new_client(&s);
    for p in ["ok-", "ok-", "nf-flat-"] {
        let id = cs(&uniq(p));
        unsafe { tryvox_hangup(c, id.as_ptr()) };
    }
    unsafe {
        let mut full: tryvox_stats = std::mem::zeroed();
        full.size = std::mem::size_of::<tryvox_stats>();
        assert_eq!(tryvox_client_stats(c, &mut full), OK, "{}", last_error());
        assert_eq!(full.size, std::mem::size_of::<tryvox_stats>());
        assert_eq!(full.hangups_by_status[OK as usize], 2);
        assert_eq!(full.hangups_by_status[NOT_FOUND as usize], 1);
        assert_eq!(full.attempts, 3);
        // An older caller that knows only `size` and `hangups_by_status`: nothing after
        // them is written.
        let mut old: tryvox_stats = std::mem::zeroed();
        let known = std::mem::offset_of!(tryvox_stats, attempts);
        old.size = known;
        old.attempts = 0xABAB;
        old.latency_max_us = 0xCDCD;
        assert_eq!(tryvox_client_stats(c, &mut old), OK);
        assert_eq!(old.size, known, "size is left as the caller set it");
        assert_eq!(old.hangups_by_status[OK as usize], 2);
        assert_eq!((old.attempts, old.latency_max_us), (0xABAB, 0xCDCD));
        // Bad arguments.
        let mut bad: tryvox_stats = std::mem::zeroed();
        bad.size = 4;
        bad.attempts = 7;
        assert_eq!(tryvox_client_stats(c, &mut bad), INVALID);
        assert!(last_error().contains("size"), "{}", last_error());
        assert_eq!(bad.attempts, 7, "nothing written");
        assert_eq!(tryvox_client_stats(c, null_mut()), INVALID);
        assert_eq!(tryvox_client_stats(null(), &mut full), INVALID);
        tryvox_client_free(c);
    }
}
