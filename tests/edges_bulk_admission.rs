//! Hostile review of issue 18: a bulk call crawled at the engine's connect window when
//! connects or lookups time out (its ids were admitted, their deadlines started, only as
//! connections could be set up). Fixed: a batch admits ids up to `max_parallel` counting
//! those waiting for a connection; both reproducers end near the 1 s timeout (10 s and
//! 25 s before). The other review tests of the reading and admission are in
//! `edges_review.rs`, those of fork and descriptors in `edges_review_proc.rs`.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use support::{status_of, API_KEY, AUTH_ID};
use tryvox_core::{Client, Options, Status};

/// Engine tests measure bursts: one at a time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

/// FINDING (late status, up to hang-like). A resolver that hangs (5 s) with a 1 s
/// timeout. Async hangups end TIMEOUT at their deadline, but a bulk call of 100 with
/// `max_parallel` 100 takes ~25 s: the connect window (4) is held by slots waiting on
/// the lookup, each until its 1 s connect deadline; a batch's hangups are created (and
/// their deadline starts) only when admitted, so the batch runs 4 per second instead of
/// 100 at once. Before the change all 100 ended at ~1 s.
#[test]
fn a_lookup_that_hangs_ends_a_bulk_call_near_its_timeout() {
    let _one = one_at_a_time();
    let calls = Arc::new(AtomicUsize::new(0));
    let c2 = calls.clone();
    let mut o = Options::new();
    o.set_base_url("http://hangs.example.test").unwrap();
    o.allow_insecure_http(true);
    o.set_timeout(Duration::from_secs(1)).unwrap();
    o.set_resolver(Arc::new(move |_: &str| {
        c2.fetch_add(1, Ordering::SeqCst);
        std::thread::sleep(Duration::from_secs(5));
        Err(std::io::Error::other("late"))
    }));
    let c = Client::with_options(AUTH_ID, API_KEY, &o).unwrap();
    // Async: each ends at its own deadline.
    let (tx, rx) = mpsc::channel();
    let t = Instant::now();
    for i in 0..100 {
        let tx = tx.clone();
        c.hangup_async(format!("h-{i}"), move |id, r| {
            let _ = tx.send((id, r));
        })
        .unwrap();
    }
    let mut got = Vec::new();
    for _ in 0..100 {
        got.push(
            rx.recv_timeout(Duration::from_secs(10))
                .expect("an outcome"),
        );
    }
    let async_took = t.elapsed();
    // Bulk: 100 at once, as asked.
    let ids: Vec<String> = (0..100).map(|i| format!("hb-{i}")).collect();
    let t = Instant::now();
    let bulk = c.hangup_many(&ids, 100).unwrap();
    let bulk_took = t.elapsed();
    // TIMEOUT, or NETWORK_ERROR for a hangup still waiting when the failure arrived.
    for r in got.iter().map(|(_, r)| r).chain(bulk.iter()) {
        let s = status_of(r);
        assert!(
            s == Status::Timeout || s == Status::NetworkError,
            "{:?}",
            r.as_ref().map_err(|e| e.to_string())
        );
    }
    assert!(
        async_took < Duration::from_millis(2500),
        "async took {async_took:?}"
    );
    assert!(
        bulk_took < Duration::from_millis(2500),
        "a bulk call of 100 (max_parallel 100, 1 s timeout) took {bulk_took:?}"
    );
}

/// FINDING (late status). A server that black-holes every connect (a dead host, a
/// firewall DROP), bulk of 40 with `max_parallel` 40 and a 1 s timeout: the connect
/// window starts at 4 and halves (not below 4) on each connect timeout, and a batch's
/// hangups start only as the window frees, so the call takes ~10 s (40/4 x 1 s)
/// instead of ~1 s; a real bulk of 1,000 at 3 s would take ~750 s.
#[test]
fn a_black_holed_server_ends_a_bulk_call_near_its_timeout() {
    let _one = one_at_a_time();
    let hole = match support::black_hole(std::net::SocketAddrV4::new(
        [127, 0, 0, 10].into(),
        support::free_port(),
    )) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("no black hole: {e}");
            return;
        }
    };
    let mut o = Options::new();
    o.set_base_url(&format!("http://{}", hole.addr)).unwrap();
    o.set_timeout(Duration::from_secs(1)).unwrap();
    let c = Client::with_options(AUTH_ID, API_KEY, &o).unwrap();
    let ids: Vec<String> = (0..40).map(|i| format!("bh-{i}")).collect();
    let t = Instant::now();
    let got = c.hangup_many(&ids, 40).unwrap();
    let took = t.elapsed();
    for r in &got {
        assert_eq!(
            status_of(r),
            Status::Timeout,
            "{:?}",
            r.as_ref().map_err(|e| e.to_string())
        );
    }
    assert!(
        took < Duration::from_millis(2500),
        "a bulk call of 40 (max_parallel 40, 1 s timeout) took {took:?}"
    );
}
