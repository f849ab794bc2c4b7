//! `hangup_all` (the sweep) against tryvox-sim: every live call of the client's tenant
//! ends and no other tenant's is touched; calls ending on their own meanwhile count as
//! gone; filters; 429 and 5xx storms while listing; a deadline mid-sweep; and the C
//! entry point with its size-versioned struct and progress callback.

mod support;
use support::{agent, hangup_log, seed, SweepAtPageEnd};

use std::ffi::{c_void, CString};
use std::time::{Duration, Instant};

use tryvox_core::{Client, Options, Status, Sweep};
use tryvox_sim::faults::GlobalFaults;
use tryvox_sim::server::{DEFAULT_ACCOUNT as ACCOUNT, DEFAULT_API_KEY as KEY};
use tryvox_sim::{spawn, Config, Running};

fn sim_with(faults: GlobalFaults) -> Running {
    spawn(Config {
        faults,
        ..Config::default()
    })
    .unwrap()
}

/// One page of the simulator's listing, asked again while its fault rates answer 429 or
/// 503 (the record is read by the test, not by the library under test).
fn record_page(s: &Running, tenant: Option<&str>, page: u64) -> serde_json::Value {
    for _ in 0..100 {
        let mut req = agent()
            .get(format!("{}?per_page=100&page={page}", s.calls_url()))
            .header("authorization", format!("Bearer {KEY}"));
        if let Some(t) = tenant {
            req = req.header("x-tenant-id", t);
        }
        let Ok(mut r) = req.call() else { continue };
        if r.status() != 200 {
            continue;
        }
        return serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap();
    }
    panic!("the simulator's listing kept failing");
}

/// The simulator's own record: (live, ended by an API hangup, ended on their own) calls
/// of `tenant` whose id starts with `prefix`.
fn record(s: &Running, tenant: Option<&str>, prefix: &str) -> (usize, usize, usize) {
    let (mut live, mut api, mut own) = (0, 0, 0);
    let mut page = 1;
    loop {
        let v = record_page(s, tenant, page);
        let calls = v["calls"].as_array().unwrap();
        for c in calls {
            if !c["call_uuid"].as_str().unwrap().starts_with(prefix) {
                continue;
            }
            match (c["status"].as_str().unwrap(), c["end_reason"].as_str()) {
                ("ringing" | "in-progress", _) => live += 1,
                (_, Some("api-hangup")) => api += 1,
                _ => own += 1,
            }
        }
        if page >= v["pagination"]["total_pages"].as_u64().unwrap() {
            break;
        }
        page += 1;
    }
    (live, api, own)
}

fn client(s: &Running, tenant: Option<&str>, tweak: impl FnOnce(&mut Options)) -> Client {
    let mut o = Options::new();
    o.set_base_url(&s.base_url).unwrap();
    if let Some(t) = tenant {
        o.set_tenant_id(t).unwrap();
    }
    tweak(&mut o);
    Client::with_options(ACCOUNT, KEY, &o).unwrap()
}

#[test]
fn ten_thousand_calls_of_one_tenant_end_and_the_other_tenant_is_untouched() {
    // 1% of list and hangup requests end a random live call on its own first.
    let s = sim_with(GlobalFaults {
        self_end_rate: 0.01,
        ..GlobalFaults::default()
    });
    seed(&s, 6000, "a-", Some("tenant-a"), None);
    seed(&s, 4000, "b-", Some("tenant-b"), None);
    let c = client(&s, Some("tenant-a"), |_| {});
    let mut progress = Vec::new();
    let t0 = Instant::now();
    let mut tell = |r: &tryvox_core::SweepReport| progress.push(*r);
    let (report, result) = c.hangup_all(
        &Sweep {
            max_parallel: 64,
            ..Sweep::default()
        },
        Some(&mut tell),
    );
    let took = t0.elapsed();
    println!(
        "10,000 live calls (6,000 ours): {report:?} in {} ms",
        took.as_millis()
    );
    assert_eq!(result.map_err(|e| e.to_string()), Ok(()));
    let (live, api, own) = record(&s, Some("tenant-a"), "a-");
    assert_eq!(live, 0, "no live call of tenant-a is left");
    assert_eq!(
        report.ended as usize, api,
        "ended = the simulator's api hangups"
    );
    assert_eq!(report.still_live, 0);
    assert_eq!(report.failed, 0);
    // Calls that ended on their own after being listed answered 404: counted as gone.
    assert!(
        report.already_gone as usize <= own,
        "{report:?}, {own} ended on their own"
    );
    assert!(own > 0, "the 1% rate ended some calls on their own");
    assert_eq!(
        report.ended as usize + own,
        6000,
        "every call of tenant-a ended: by us or on its own"
    );
    // Untouched by us: no API hangup in tenant-b (the simulator's 1% rate also applies to
    // this test's own listing of it, so a call there may have ended on its own).
    let (live_b, api_b, own_b) = record(&s, Some("tenant-b"), "b-");
    assert_eq!((api_b, live_b + own_b), (0, 4000), "tenant-b untouched");
    assert!(report.listings >= 2, "a final, empty listing");
    assert!(progress.len() >= 2 && progress.last() == Some(&report));
}

#[test]
fn filters_narrow_the_sweep() {
    let s = sim_with(GlobalFaults::default());
    seed(&s, 120, "x-", None, Some("+14155550111"));
    seed(&s, 80, "y-", None, None);
    let c = client(&s, None, |_| {});
    let (report, result) = c.hangup_all(
        &Sweep {
            from: Some("+14155550111".into()),
            ..Sweep::default()
        },
        None,
    );
    assert_eq!(result.map_err(|e| e.to_string()), Ok(()));
    assert_eq!(report.ended, 120);
    assert_eq!(record(&s, None, "x-"), (0, 120, 0));
    assert_eq!(
        record(&s, None, "y-"),
        (80, 0, 0),
        "other callers untouched"
    );
    // A bad filter: nothing sent.
    let (_, result) = c.hangup_all(
        &Sweep {
            direction: Some("sideways".into()),
            ..Sweep::default()
        },
        None,
    );
    assert_eq!(result.unwrap_err().status(), Status::InvalidArgument);
    assert_eq!(record(&s, None, "y-"), (80, 0, 0));
}

#[test]
fn rate_limits_and_server_errors_while_listing_follow_the_retry_rules() {
    let s = sim_with(GlobalFaults {
        rate_limit_rate: 0.10,
        retry_after_secs: 0,
        error_rate: 0.05,
        ..GlobalFaults::default()
    });
    seed(&s, 500, "r-", None, None);
    let c = client(&s, None, |o| o.set_max_retries(8).unwrap());
    let (report, result) = c.hangup_all(&Sweep::default(), None);
    assert_eq!(result.map_err(|e| e.to_string()), Ok(()), "{report:?}");
    assert_eq!(record(&s, None, "r-"), (0, 500, 0));
    assert_eq!(report.ended, 500);
    let st = c.stats();
    assert!(
        st.retries_rate_limited + st.retries_server_error > 0,
        "{st:?}"
    );
}

#[test]
fn a_deadline_mid_sweep_is_timeout_with_the_counts_right() {
    // 20 ms per answer, 2 at a time: 400 calls need about 4 s; the sweep has 1.5 s.
    let s = sim_with(GlobalFaults {
        latency: Duration::from_millis(20),
        ..GlobalFaults::default()
    });
    seed(&s, 400, "d-", None, None);
    let c = client(&s, None, |_| {});
    let (report, result) = c.hangup_all(
        &Sweep {
            max_parallel: 2,
            timeout: Some(Duration::from_millis(1500)),
            ..Sweep::default()
        },
        None,
    );
    let e = result.unwrap_err();
    assert_eq!(e.status(), Status::Timeout, "{e}");
    let (live, api, own) = record(&s, None, "d-");
    assert_eq!(own, 0);
    assert_eq!(
        report.ended as usize, api,
        "ended = the simulator's api hangups"
    );
    assert!(report.ended > 0 && live > 0, "{report:?}");
    assert_eq!(
        report.still_live as usize, live,
        "still live = the simulator's live calls"
    );
    assert!(e.message().contains("deadline"), "{e}");
}

unsafe extern "C" fn count_progress(
    user_data: *mut c_void,
    sweep: *const tryvox::ffi::tryvox_sweep,
) {
    let (calls, last_listings) = unsafe { &mut *(user_data as *mut (u32, u64)) };
    *calls += 1;
    *last_listings = unsafe { (*sweep).listings };
}

#[test]
fn the_c_sweep_with_its_struct_and_progress() {
    use tryvox::ffi::*;
    let s = sim_with(GlobalFaults::default());
    seed(&s, 150, "c-", None, Some("+14155550122"));
    seed(&s, 30, "k-", None, None);
    unsafe {
        let o = tryvox_options_new();
        let url = CString::new(s.base_url.clone()).unwrap();
        tryvox_options_set_base_url(o, url.as_ptr());
        let acct = CString::new(ACCOUNT).unwrap();
        let key = CString::new(KEY).unwrap();
        let c = tryvox_client_new_with_options(acct.as_ptr(), key.as_ptr(), o);
        tryvox_options_free(o);
        assert!(!c.is_null());
        let from = CString::new("+14155550122").unwrap();
        let mut seen = (0u32, 0u64);
        let mut sw: tryvox_sweep = std::mem::zeroed();
        sw.size = std::mem::size_of::<tryvox_sweep>();
        sw.from = from.as_ptr();
        sw.progress = Some(count_progress);
        sw.user_data = &mut seen as *mut (u32, u64) as *mut c_void;
        assert_eq!(tryvox_hangup_all(c, &mut sw), 0);
        assert_eq!((sw.ended, sw.failed, sw.still_live), (150, 0, 0));
        assert!(seen.0 >= 2 && seen.1 == sw.listings, "{seen:?}");
        assert_eq!(record(&s, None, "k-"), (30, 0, 0));
        // Bad input: a size too small for the inputs, a bad direction: nothing sent.
        let mut small: tryvox_sweep = std::mem::zeroed();
        small.size = 8;
        assert_eq!(tryvox_hangup_all(c, &mut small), 3);
        let dir = CString::new("sideways").unwrap();
        let mut bad: tryvox_sweep = std::mem::zeroed();
        bad.size = std::mem::size_of::<tryvox_sweep>();
        bad.direction = dir.as_ptr();
        assert_eq!(tryvox_hangup_all(c, &mut bad), 3);
        assert_eq!(record(&s, None, "k-"), (30, 0, 0));
        // NULL sweep: the defaults, every live call.
        assert_eq!(tryvox_hangup_all(c, std::ptr::null_mut()), 0);
        assert_eq!(record(&s, None, "k-"), (0, 30, 0));
        tryvox_client_free(c);
    }
}

#[test]
fn a_server_that_repeats_its_listing_and_never_ends_a_call_is_bounded() {
    // Every page lists the same 100 calls, total_pages claims a billion, and DELETE
    // answers 204 without ending anything. The sweep must stay bounded in what it keeps
    // and sends, and end in TIMEOUT with those calls counted as still live.
    let s = support::TestServer::start();
    let mut o = Options::new();
    o.set_base_url(&s.base_url()).unwrap();
    o.set_tenant_id("repeat-listing").unwrap();
    let c = Client::with_options(support::AUTH_ID, support::API_KEY, &o).unwrap();
    let (report, result) = c.hangup_all(
        &Sweep {
            timeout: Some(Duration::from_secs(2)),
            ..Sweep::default()
        },
        None,
    );
    let e = result.unwrap_err();
    assert_eq!(e.status(), Status::Timeout, "{e}");
    assert_eq!(report.ended, 100, "each call counted once: {report:?}");
    assert!(report.still_live >= 100, "{report:?}");
    let requests = s.requests();
    let gets = requests.iter().filter(|r| r.method == "GET").count();
    let deletes = requests.len() - gets;
    println!("{report:?}: {gets} listing requests, {deletes} hangups in 2 s");
    // A repeated batch ends a status's listing (1 + 8 pages each), and a round that
    // settles nothing new waits (50 ms, doubling to 1 s) before the next.
    assert!(report.listings <= 12, "{report:?}");
    assert!(gets <= 2 * 9 * 12, "{gets} listing requests");
    assert!(deletes <= 100 * 12, "{deletes} hangups");
}

#[test]
fn a_sweep_struct_as_small_as_its_inputs_is_read_no_further() {
    // A caller built against a header whose struct ends after the inputs: `size` is the
    // offset of the first count. Put it at the very end of a page followed by an
    // inaccessible one: reading a byte past `size` would crash the test.
    use tryvox::ffi::*;
    let s = sim_with(GlobalFaults::default());
    seed(&s, 5, "g-", None, None);
    let guarded = SweepAtPageEnd::new(std::mem::offset_of!(tryvox_sweep, ended));
    unsafe {
        let c = c_client(&s);
        assert_eq!(tryvox_hangup_all(c, guarded.sweep), 0);
        tryvox_client_free(c);
    }
    assert_eq!(record(&s, None, "g-"), (0, 5, 0));
}

/// What the C callbacks of the tests below saw.
#[derive(Default)]
struct Seen {
    calls: Vec<(String, i32, i32, String)>,
    listed: Vec<String>,
    /// Call `tryvox_sweep_stop` on this struct after this many outcomes (0: never).
    stop_after: usize,
    sweep: usize,
}

unsafe extern "C" fn seen_call(
    user_data: *mut c_void,
    id: *const std::ffi::c_char,
    status: i32,
    http: i32,
    message: *const std::ffi::c_char,
) {
    let seen = unsafe { &mut *(user_data as *mut Seen) };
    let text = |p| {
        unsafe { std::ffi::CStr::from_ptr(p) }
            .to_string_lossy()
            .into_owned()
    };
    seen.calls.push((text(id), status, http, text(message)));
    if seen.stop_after > 0 && seen.calls.len() == seen.stop_after {
        // As a SIGINT handler would: the sweep starts no more hangups.
        let st =
            unsafe { tryvox::ffi::tryvox_sweep_stop(seen.sweep as *mut tryvox::ffi::tryvox_sweep) };
        assert_eq!(st, 0);
    }
}

unsafe extern "C" fn seen_listed(user_data: *mut c_void, id: *const std::ffi::c_char) {
    let seen = unsafe { &mut *(user_data as *mut Seen) };
    seen.listed.push(
        unsafe { std::ffi::CStr::from_ptr(id) }
            .to_string_lossy()
            .into_owned(),
    );
}

unsafe fn c_client(s: &Running) -> *mut tryvox::ffi::tryvox_client {
    use tryvox::ffi::*;
    unsafe {
        let o = tryvox_options_new();
        let url = CString::new(s.base_url.clone()).unwrap();
        tryvox_options_set_base_url(o, url.as_ptr());
        let (a, k) = (CString::new(ACCOUNT).unwrap(), CString::new(KEY).unwrap());
        let c = tryvox_client_new_with_options(a.as_ptr(), k.as_ptr(), o);
        tryvox_options_free(o);
        assert!(!c.is_null());
        c
    }
}

fn last_error() -> String {
    unsafe { std::ffi::CStr::from_ptr(tryvox::ffi::tryvox_last_error()) }
        .to_string_lossy()
        .into_owned()
}

#[test]
fn the_c_hangup_each_reports_every_id_with_its_http_status() {
    use tryvox::ffi::*;
    let s = sim_with(GlobalFaults::default());
    seed(&s, 40, "e-", None, None);
    let mut names: Vec<String> = (0..40).map(|i| format!("e-{i}")).collect();
    names.push("no-such-call".into());
    let ids: Vec<CString> = names
        .iter()
        .map(|n| CString::new(n.as_str()).unwrap())
        .collect();
    let ptrs: Vec<*const std::ffi::c_char> = ids.iter().map(|c| c.as_ptr()).collect();
    unsafe {
        let c = c_client(&s);
        let mut seen = Seen::default();
        let mut sw: tryvox_sweep = std::mem::zeroed();
        sw.size = std::mem::size_of::<tryvox_sweep>();
        sw.max_parallel = 8;
        sw.on_call = Some(seen_call);
        sw.user_data = &mut seen as *mut Seen as *mut c_void;
        let mut st = vec![-1; 41];
        let mut http = vec![-1; 41];
        assert_eq!(
            tryvox_hangup_each(
                c,
                ptrs.as_ptr(),
                41,
                st.as_mut_ptr(),
                http.as_mut_ptr(),
                &mut sw
            ),
            0
        );
        assert!(st[..40].iter().all(|&x| x == 0) && http[..40].iter().all(|&h| h == 204));
        assert_eq!((st[40], http[40]), (Status::NotFound.code(), 404));
        assert_eq!(
            (
                sw.ended,
                sw.already_gone,
                sw.failed,
                sw.still_live,
                sw.found
            ),
            (40, 1, 0, 0, 41)
        );
        // Every id once, as it settled, with its HTTP status.
        let mut got: Vec<&str> = seen.calls.iter().map(|c| c.0.as_str()).collect();
        got.sort();
        let mut want: Vec<&str> = names.iter().map(String::as_str).collect();
        want.sort();
        assert_eq!(got, want);
        assert!(seen.calls.iter().all(|(id, s, h, _)| (*s, *h)
            == if id == "no-such-call" {
                (1, 404)
            } else {
                (0, 204)
            }));
        assert_eq!(hangup_log(&s).len(), 41);

        // Bad input the header names: INVALID_ARGUMENT, nothing sent, nothing written.
        let sent = hangup_log(&s).len();
        let from = CString::new("+14155550100").unwrap();
        let bad_id = CString::new("not valid!").unwrap();
        let mixed = [ptrs[0], bad_id.as_ptr()];
        let mut out = [-7; 2];
        let mut filtered: tryvox_sweep = std::mem::zeroed();
        filtered.size = std::mem::size_of::<tryvox_sweep>();
        filtered.from = from.as_ptr();
        let mut dry: tryvox_sweep = std::mem::zeroed();
        dry.size = std::mem::size_of::<tryvox_sweep>();
        dry.dry_run = 1;
        let mut small: tryvox_sweep = std::mem::zeroed();
        small.size = 8;
        let (o, n) = (out.as_mut_ptr(), std::ptr::null_mut());
        let none: *mut tryvox_sweep = std::ptr::null_mut();
        let cases: [(&str, &mut dyn FnMut() -> i32, &str); 6] = [
            (
                "a filter",
                &mut || tryvox_hangup_each(c, ptrs.as_ptr(), 2, o, n, &mut filtered),
                "nothing was sent",
            ),
            (
                "dry_run",
                &mut || tryvox_hangup_each(c, ptrs.as_ptr(), 2, o, n, &mut dry),
                "nothing was sent",
            ),
            (
                "a small size",
                &mut || tryvox_hangup_each(c, ptrs.as_ptr(), 2, o, n, &mut small),
                "sizeof(tryvox_sweep)",
            ),
            (
                "NULL ids",
                &mut || tryvox_hangup_each(c, std::ptr::null(), 2, o, n, none),
                "call_uuids is NULL",
            ),
            (
                "an invalid id",
                &mut || tryvox_hangup_each(c, mixed.as_ptr(), 2, o, n, none),
                "call_uuids[1]",
            ),
            (
                "NULL client",
                &mut || tryvox_hangup_each(std::ptr::null_mut(), ptrs.as_ptr(), 2, o, n, none),
                "client",
            ),
        ];
        for (what, call, want) in cases {
            assert_eq!(call(), 3, "{what}");
            assert!(last_error().contains(want), "{what}: {}", last_error());
        }
        assert_eq!(out, [-7; 2], "nothing written");
        assert_eq!(hangup_log(&s).len(), sent, "nothing sent");
        // No ids: nothing to do. NULL arrays and sweep: outcomes not wanted, still run.
        assert_eq!(
            tryvox_hangup_each(
                c,
                std::ptr::null(),
                0,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                std::ptr::null_mut()
            ),
            0
        );
        assert_eq!(
            tryvox_hangup_each(
                c,
                ptrs.as_ptr(),
                1,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                std::ptr::null_mut()
            ),
            0
        );
        assert_eq!(hangup_log(&s).len(), sent + 1);
        tryvox_client_free(c);
    }
}

#[test]
fn tryvox_sweep_stop_stops_starting_and_loses_nothing_in_flight() {
    use tryvox::ffi::*;
    let s = sim_with(GlobalFaults {
        latency: Duration::from_millis(5),
        ..GlobalFaults::default()
    });
    seed(&s, 2000, "s-", None, None);
    unsafe {
        assert_eq!(tryvox_sweep_stop(std::ptr::null_mut()), 3);
        let mut small: tryvox_sweep = std::mem::zeroed();
        small.size = std::mem::offset_of!(tryvox_sweep, stop);
        assert_eq!(
            tryvox_sweep_stop(&mut small),
            3,
            "size does not reach `stop`"
        );
        assert_eq!(small.stop, 0);

        let c = c_client(&s);
        // Stopped before it starts: a sweep lists, starts no hangup, says BUSY.
        let mut sw: tryvox_sweep = std::mem::zeroed();
        sw.size = std::mem::size_of::<tryvox_sweep>();
        assert_eq!(tryvox_sweep_stop(&mut sw), 0);
        assert_eq!(tryvox_hangup_all(c, &mut sw), Status::Busy.code());
        assert!(last_error().contains("stopped"), "{}", last_error());
        assert_eq!(hangup_log(&s).len(), 0);
        // ... and given ids: each one BUSY, HTTP 0, none sent.
        let id = CString::new("s-1").unwrap();
        let one = [id.as_ptr()];
        let (mut st, mut http) = ([-1], [-1]);
        assert_eq!(
            tryvox_hangup_each(
                c,
                one.as_ptr(),
                1,
                st.as_mut_ptr(),
                http.as_mut_ptr(),
                &mut sw
            ),
            0
        );
        assert_eq!((st[0], http[0]), (Status::Busy.code(), 0));
        assert_eq!(hangup_log(&s).len(), 0);

        // Stopped mid-sweep (from the 100th outcome, as a signal handler would): those
        // in flight finish and are reported; nothing starts after.
        let mut seen = Seen {
            stop_after: 100,
            ..Seen::default()
        };
        let mut sw: tryvox_sweep = std::mem::zeroed();
        sw.size = std::mem::size_of::<tryvox_sweep>();
        sw.max_parallel = 16;
        sw.on_call = Some(seen_call);
        sw.user_data = &mut seen as *mut Seen as *mut c_void;
        seen.sweep = &mut sw as *mut tryvox_sweep as usize;
        assert_eq!(tryvox_hangup_all(c, &mut sw), Status::Busy.code());
        let sent = hangup_log(&s).len();
        assert_eq!(seen.calls.len(), sent, "every hangup sent was reported");
        assert_eq!(sw.ended as usize, sent);
        assert!((100..2000).contains(&sent), "{sent}");
        assert_eq!(record(&s, None, "s-"), (2000 - sent, sent, 0));
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(hangup_log(&s).len(), sent, "none after the return");
        tryvox_client_free(c);
    }
}

#[test]
fn a_c_dry_run_lists_and_sends_no_hangup() {
    use tryvox::ffi::*;
    let s = sim_with(GlobalFaults::default());
    seed(&s, 230, "d-", None, None);
    unsafe {
        let c = c_client(&s);
        let mut seen = Seen::default();
        let mut sw: tryvox_sweep = std::mem::zeroed();
        sw.size = std::mem::size_of::<tryvox_sweep>();
        sw.dry_run = 1;
        sw.on_listed = Some(seen_listed);
        sw.on_call = Some(seen_call);
        sw.user_data = &mut seen as *mut Seen as *mut c_void;
        assert_eq!(tryvox_hangup_all(c, &mut sw), 0);
        assert_eq!((sw.found, sw.still_live, sw.ended), (230, 230, 0));
        // Until a listing finds nothing new: twice for a set that holds still.
        assert!((2..=5).contains(&sw.listings), "{}", sw.listings);
        let mut listed = seen.listed.clone();
        listed.sort();
        listed.dedup();
        assert_eq!(listed.len(), 230);
        assert_eq!(seen.listed.len(), 230, "each call reported once");
        assert!(seen.calls.is_empty());
        assert_eq!(hangup_log(&s).len(), 0);
        assert_eq!(record(&s, None, "d-"), (230, 0, 0));
        tryvox_client_free(c);
    }
}

#[test]
fn a_first_version_sweep_struct_gets_no_byte_past_its_size() {
    // A caller built against the header before on_call: `size` ends after `listings`.
    // The struct sits at the end of a page followed by an inaccessible one: reading or
    // writing a byte past `size` would crash the test.
    use tryvox::ffi::*;
    let s = sim_with(GlobalFaults::default());
    seed(&s, 5, "v1-", None, None);
    let guarded = SweepAtPageEnd::new(std::mem::offset_of!(tryvox_sweep, on_call));
    let sw = guarded.sweep;
    unsafe {
        let c = c_client(&s);
        assert_eq!(tryvox_hangup_all(c, sw), 0);
        assert_eq!(std::ptr::addr_of!((*sw).ended).read_unaligned(), 5);
        assert_eq!(tryvox_sweep_stop(sw), 3, "no `stop` in this version");
        tryvox_client_free(c);
    }
}

/// An observer that records what a sweep reports, and asks to stop once `stop_when`
/// holds for the counts it has seen.
struct Watch {
    settled: Vec<(String, Result<u16, Status>)>,
    stop_when: fn(&tryvox_core::SweepReport) -> bool,
    stop: bool,
}

impl tryvox_core::SweepObserver for Watch {
    fn progress(&mut self, r: &tryvox_core::SweepReport) {
        self.stop |= (self.stop_when)(r);
    }
    fn settled(&mut self, id: &str, r: &tryvox_core::HangupResult) {
        self.settled.push((
            id.to_owned(),
            r.as_ref().map(|h| *h).map_err(|e| e.status()),
        ));
    }
    fn stop_requested(&mut self) -> bool {
        self.stop
    }
}

fn watch(stop_when: fn(&tryvox_core::SweepReport) -> bool) -> Watch {
    Watch {
        settled: Vec::new(),
        stop_when,
        stop: false,
    }
}

#[test]
fn a_call_ended_then_refused_is_counted_under_its_latest_outcome() {
    // The server answers 204 without ending the call, lists it again, then refuses
    // its hangup (403): reported ended, then failed; counted once, as failed; the
    // refusal ends the sweep.
    let s = sim_with(GlobalFaults::default());
    seed(&s, 1, "twice-", None, None);
    let r = agent()
        .post(format!("{}/_sim/calls/twice-0/faults", s.base_url))
        .header("content-type", "application/json")
        .send(
            br#"{"responses":[{"status":204},{"status":403},{"status":403},{"status":403},{"status":403}]}"#
                .as_slice(),
        )
        .unwrap();
    assert_eq!(r.status(), 204);
    let mut o = Options::new();
    o.set_base_url(&s.base_url).unwrap();
    o.set_max_retries(0).unwrap();
    let c = Client::with_options(ACCOUNT, KEY, &o).unwrap();
    let mut w = watch(|_| false);
    let (report, result) = c.hangup_all_observed(&Sweep::default(), &mut w);
    assert_eq!(
        w.settled,
        [
            ("twice-0".to_owned(), Ok(204)),
            ("twice-0".to_owned(), Err(Status::Forbidden))
        ],
        "{report:?}"
    );
    assert_eq!((report.ended, report.failed), (0, 1), "{report:?}");
    assert_eq!(result.unwrap_err().status(), Status::Forbidden);
}

#[test]
fn a_call_listed_again_and_rate_limited_gets_its_later_rounds() {
    // 204 without ending it, then 429 (Retry-After 1) through one round's attempts, then
    // the server relents: the sweep asks again in a later round and ends it.
    let s = sim_with(GlobalFaults::default());
    seed(&s, 2, "again-", None, None);
    let r = agent()
        .post(format!("{}/_sim/calls/again-0/faults", s.base_url))
        .header("content-type", "application/json")
        .send(br#"{"responses":[{"status":204},{"status":429,"retry_after":"1"}]}"#.as_slice())
        .unwrap();
    assert_eq!(r.status(), 204);
    let mut o = Options::new();
    o.set_base_url(&s.base_url).unwrap();
    o.set_max_retries(0).unwrap();
    let c = Client::with_options(ACCOUNT, KEY, &o).unwrap();
    let mut w = watch(|_| false);
    let (report, result) = c.hangup_all_observed(&Sweep::default(), &mut w);
    assert_eq!(result.map_err(|e| e.to_string()), Ok(()), "{report:?}");
    assert_eq!((report.ended, report.failed, report.still_live), (2, 0, 0));
    assert_eq!(record(&s, None, "again-"), (0, 2, 0));
    assert_eq!(w.settled.len(), 2, "{:?}", w.settled);
}

#[test]
fn a_stop_while_listing_leaves_the_live_count_true() {
    // Listing pages take 300 ms each; the stop comes once the first page is in.
    let s = sim_with(GlobalFaults {
        latency: Duration::from_millis(300),
        ..GlobalFaults::default()
    });
    seed(&s, 1500, "ls-", None, None);
    let c = client(&s, None, |_| {});
    let mut w = watch(|r| r.found > 0);
    let (report, result) = c.hangup_all_observed(&Sweep::default(), &mut w);
    let e = result.unwrap_err();
    assert_eq!(e.status(), Status::Busy, "{e}");
    assert!(report.found >= 100, "{report:?}");
    assert_eq!(report.still_live, report.found, "{report:?}");
    assert!(e
        .message()
        .contains(&format!("{} live call(s) left", report.found)));
    assert!(w.settled.is_empty());
    assert_eq!(hangup_log(&s).len(), 0);
}

#[test]
fn a_paced_batch_keeps_its_deadline() {
    // One hangup a second, a 200 ms deadline: the first starts, the rest are not sent,
    // and the call returns at the deadline, not at the next paced start.
    let s = sim_with(GlobalFaults::default());
    seed(&s, 4, "pace-", None, None);
    let c = client(&s, None, |_| {});
    let ids: Vec<String> = (0..4).map(|i| format!("pace-{i}")).collect();
    let t0 = Instant::now();
    let (report, result) = c.hangup_each(
        &ids,
        &Sweep {
            max_rate: 1,
            timeout: Some(Duration::from_millis(200)),
            ..Sweep::default()
        },
        &mut watch(|_| false),
    );
    let took = t0.elapsed();
    let results = result.unwrap();
    assert_eq!(results[0], Ok(204));
    for r in &results[1..] {
        let e = r.as_ref().unwrap_err();
        assert_eq!(e.status(), Status::Timeout);
        assert!(e.message().starts_with("not sent"), "{e}");
    }
    assert_eq!((report.ended, report.still_live), (1, 3));
    assert_eq!(hangup_log(&s).len(), 1);
    // The next paced start would be at 1 s.
    assert!(took < Duration::from_millis(950), "{took:?}");
}

#[test]
fn a_hangup_waiting_out_a_429_holds_its_place() {
    // Every hangup is answered 429 with Retry-After 1 once, then 204. With two in
    // flight at most, a sweep must not send a third id while the first two wait.
    let s = sim_with(GlobalFaults::default());
    seed(&s, 6, "hold-", None, None);
    for i in 0..6 {
        let r = agent()
            .post(format!("{}/_sim/calls/hold-{i}/faults", s.base_url))
            .header("content-type", "application/json")
            .send(br#"{"responses":[{"status":429,"retry_after":"1"}]}"#.as_slice())
            .unwrap();
        assert_eq!(r.status(), 204);
    }
    let c = client(&s, None, |_| {});
    let ids: Vec<String> = (0..6).map(|i| format!("hold-{i}")).collect();
    let (report, result) = c.hangup_each(
        &ids,
        &Sweep {
            max_parallel: 2,
            ..Sweep::default()
        },
        &mut watch(|_| false),
    );
    assert!(result.unwrap().iter().all(|r| *r == Ok(204)));
    assert!(report.rate_limited >= 6, "{report:?}");
    // In the order the server saw them: never more than two distinct ids begun and
    // not yet answered 204.
    let order: Vec<String> = hangup_log(&s).into_iter().map(|(_, id, _)| id).collect();
    let mut seen = std::collections::HashMap::new();
    let mut open = 0usize;
    for id in &order {
        let n = seen.entry(id.as_str()).or_insert(0);
        *n += 1;
        if *n == 1 {
            open += 1; // its first request: a 429, it now waits
        } else {
            open -= 1; // its retry: the 204
        }
        assert!(open <= 2, "more than two ids begun at once: {order:?}");
    }
}

/// What the re-entering callbacks below share.
struct Reenter {
    client: usize,
    /// Ids of the second set, one hung up synchronously from each `on_call`.
    others: Vec<CString>,
    next: usize,
    statuses: Vec<i32>,
    progress_stats: u64,
}

unsafe extern "C" fn reenter_call(
    user_data: *mut c_void,
    _id: *const std::ffi::c_char,
    _status: i32,
    _http: i32,
    _message: *const std::ffi::c_char,
) {
    let r = unsafe { &mut *(user_data as *mut Reenter) };
    let c = r.client as *mut tryvox::ffi::tryvox_client;
    if let Some(id) = r.others.get(r.next) {
        r.next += 1;
        // A blocking hangup of another call from inside the sweep's own callback.
        r.statuses
            .push(unsafe { tryvox::ffi::tryvox_hangup(c, id.as_ptr()) });
    }
}

unsafe extern "C" fn reenter_progress(
    user_data: *mut c_void,
    _sweep: *const tryvox::ffi::tryvox_sweep,
) {
    let r = unsafe { &mut *(user_data as *mut Reenter) };
    let mut st: tryvox::ffi::tryvox_stats = unsafe { std::mem::zeroed() };
    st.size = std::mem::size_of::<tryvox::ffi::tryvox_stats>();
    assert_eq!(
        unsafe { tryvox::ffi::tryvox_client_stats(r.client as *mut _, &mut st) },
        0
    );
    r.progress_stats += 1;
}

#[test]
fn callbacks_that_reenter_the_library_by_the_thousand() {
    // 1,000 calls from one number swept; each on_call hangs up one of 1,000 calls from
    // another number (outside the sweep's filter) with a blocking tryvox_hangup on the
    // same client, and each progress reads the statistics.
    use tryvox::ffi::*;
    let s = sim_with(GlobalFaults::default());
    seed(&s, 1000, "ra-", None, Some("+15550003333"));
    seed(&s, 1000, "rb-", None, Some("+15550004444"));
    unsafe {
        let c = c_client(&s);
        let mut r = Reenter {
            client: c as usize,
            others: (0..1000)
                .map(|i| CString::new(format!("rb-{i}")).unwrap())
                .collect(),
            next: 0,
            statuses: Vec::new(),
            progress_stats: 0,
        };
        let from = CString::new("+15550003333").unwrap();
        let mut sw: tryvox_sweep = std::mem::zeroed();
        sw.size = std::mem::size_of::<tryvox_sweep>();
        sw.from = from.as_ptr();
        sw.max_parallel = 64;
        sw.on_call = Some(reenter_call);
        sw.progress = Some(reenter_progress);
        sw.user_data = &mut r as *mut Reenter as *mut c_void;
        assert_eq!(tryvox_hangup_all(c, &mut sw), 0, "{}", last_error());
        assert_eq!(sw.ended, 1000);
        assert_eq!(r.statuses.len(), 1000);
        assert!(
            r.statuses.iter().all(|&st| st == 0),
            "every re-entrant hangup ended its call"
        );
        assert!(r.progress_stats >= 1);
        assert_eq!(record(&s, None, "ra-"), (0, 1000, 0));
        assert_eq!(record(&s, None, "rb-"), (0, 1000, 0));
        tryvox_client_free(c);
    }
}
