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
        ] {
            assert_eq!(rc, INVALID);
            assert!(!last_error().is_empty());
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
    let texts: Vec<String> = (0..=12)
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
    let unknown = unsafe { CStr::from_ptr(tryvox_status_str(13)) }
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

static REENTRANT_DONE: AtomicUsize = AtomicUsize::new(0);

unsafe extern "C" fn reentrant_cb(
    ud: *mut c_void,
    id: *const c_char,
    status: c_int,
    _http: c_int,
    _msg: *const c_char,
) {
    let c = ud as *mut tryvox_client;
    assert_eq!(status, OK);
    // A callback may call back into the library: a blocking hangup, errors, bulk.
    let id = unsafe { CStr::from_ptr(id) }.to_string_lossy().into_owned();
    let again = cs(&id.replace("ok-", "end-flat-"));
    assert_eq!(unsafe { tryvox_hangup(c, again.as_ptr()) }, ALREADY_ENDED);
    assert_eq!(last_code(), "call_already_ended");
    let ids = [cs(&uniq("ok-")), cs(&uniq("nf-flat-"))];
    let ptrs = [ids[0].as_ptr(), ids[1].as_ptr()];
    let mut out = [0 as c_int; 2];
    assert_eq!(
        unsafe { tryvox_hangup_many(c, ptrs.as_ptr(), 2, out.as_mut_ptr(), 2) },
        OK
    );
    assert_eq!(out, [OK, NOT_FOUND]);
    REENTRANT_DONE.fetch_add(1, Ordering::SeqCst);
}

#[test]
fn callbacks_may_call_back_into_the_library() {
    let s = TestServer::start();
    let c = new_client(&s);
    for _ in 0..80 {
        let id = uniq("ok-");
        assert_eq!(
            unsafe { tryvox_hangup_async(c, cs(&id).as_ptr(), Some(reentrant_cb), c.cast()) },
            OK
        );
    }
    unsafe { tryvox_client_free(c) };
    assert_eq!(REENTRANT_DONE.load(Ordering::SeqCst), 80);
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
