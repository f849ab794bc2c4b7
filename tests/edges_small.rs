//! Issue 18, cases 8, 9, 12 and 13: a sweep ends by its own deadline, a sweep's status is
//! the same on identical runs, `tryvox_client_stats` writes whole fields only, and the CA
//! file is read only if it is a bounded regular file. Real servers on 127.0.0.1 (a
//! std::net server here), the C ABI called as a C program calls it.

mod support;

use std::ffi::{c_int, CStr, CString};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use support::{scratch, API_KEY, AUTH_ID};
use tryvox::ffi::*;
use tryvox_core::{Client, Options, Status, Sweep};

const OK: c_int = 0;
const INVALID: c_int = 3;

// ---------------------------------------------------------------------------------------
// A small account server: it lists `live` as ringing (one page), nothing in progress,
// and answers each DELETE by the id: `...-st-NNN` status NNN with an error envelope,
// `...-drop` closes without answering, `...-hang` never answers; `stall_listing` makes
// every listing page stall instead (head never sent).
// ---------------------------------------------------------------------------------------

#[derive(Clone)]
struct Account {
    live: Vec<String>,
    stall_listing: bool,
}

/// Serves `account` on 127.0.0.1 until the test process ends; one thread a connection,
/// one request a connection (`Connection: close`). Returns the base URL.
fn serve(account: Account) -> String {
    support::serve_each(move |_, s| answer(s, &account)).url()
}

fn answer(mut s: TcpStream, account: &Account) {
    let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
    let Some(head) = support::read_through_head(&mut s) else {
        return;
    };
    let head = String::from_utf8_lossy(&head).into_owned();
    let line = head.lines().next().unwrap_or("");
    let mut parts = line.split(' ');
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    if method == "GET" {
        if account.stall_listing {
            return stall(s);
        }
        let calls: Vec<String> = if target.contains("status=ringing") {
            account
                .live
                .iter()
                .map(|id| format!(r#"{{"call_uuid":"{id}"}}"#))
                .collect()
        } else {
            Vec::new()
        };
        let body = format!(
            r#"{{"calls":[{}],"pagination":{{"total_pages":1}}}}"#,
            calls.join(",")
        );
        return reply(s, 200, &body);
    }
    let id = target.rsplit('/').next().unwrap_or("");
    if id.ends_with("-hang") {
        return stall(s);
    }
    if id.ends_with("-drop") {
        return; // closed without an answer
    }
    match id
        .rsplit_once("-st-")
        .and_then(|(_, c)| c.parse::<u16>().ok())
    {
        Some(code) => reply(
            s,
            code,
            &format!(r#"{{"error":{{"code":"E_{code}","message":"scripted {code}"}}}}"#),
        ),
        None => reply(s, 204, ""),
    }
}

/// Holds the request until the client gives up (closes), 30 s at most.
fn stall(mut s: TcpStream) {
    let mut b = [0u8; 512];
    while matches!(s.read(&mut b), Ok(n) if n > 0) {}
}

fn reply(mut s: TcpStream, code: u16, body: &str) {
    let _ = write!(
        s,
        "HTTP/1.1 {code} Scripted\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}

fn client(base: &str, timeout: Duration, max_retries: u32) -> Client {
    let mut o = Options::new();
    o.set_base_url(base).unwrap();
    o.set_timeout(timeout).unwrap();
    o.set_max_retries(max_retries).unwrap();
    Client::with_options(AUTH_ID, API_KEY, &o).unwrap()
}

/// Runs `f` on its own thread; None if it did not finish within `limit` (the thread is
/// left behind).
fn within<T: Send + 'static>(limit: Duration, f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(limit).ok()
}

fn cs(s: &str) -> CString {
    CString::new(s).unwrap()
}

fn last_error() -> String {
    unsafe { CStr::from_ptr(tryvox_last_error()) }
        .to_string_lossy()
        .into_owned()
}

// ---------------------------------------------------------------------------------------
// 8. Every request of a sweep ends by the sweep's deadline.
// ---------------------------------------------------------------------------------------

/// A 1 s sweep against a listing that stalls, with a 10 s client timeout: the sweep
/// answers TIMEOUT by its own deadline, not the page's (which once took the whole 10 s).
#[test]
fn a_stalled_listing_ends_at_the_sweeps_deadline() {
    let base = serve(Account {
        live: Vec::new(),
        stall_listing: true,
    });
    let c = client(&base, Duration::from_secs(10), 2);
    let sweep = Sweep {
        timeout: Some(Duration::from_secs(1)),
        ..Default::default()
    };
    let t0 = Instant::now();
    let (report, result) = c.hangup_all(&sweep, None);
    let took = t0.elapsed();
    let e = result.expect_err("a stalled listing cannot succeed");
    assert_eq!(e.status(), Status::Timeout, "{e:?}");
    assert!(
        e.message().contains("sweep's 1000 ms deadline"),
        "the sweep's deadline is named: {e:?}"
    );
    assert!(
        took < Duration::from_secs(5),
        "the 1 s sweep returned after {took:?} (the client's timeout is 10 s)"
    );
    assert_eq!(report.listings, 0, "{report:?}");
}

/// A listing answered at once, then a hangup that stalls: the hangup ends by the sweep's
/// deadline too, and the sweep says TIMEOUT with the call still live.
#[test]
fn a_stalled_hangup_ends_at_the_sweeps_deadline() {
    let base = serve(Account {
        live: vec!["a-hang".into()],
        stall_listing: false,
    });
    let c = client(&base, Duration::from_secs(10), 2);
    let sweep = Sweep {
        timeout: Some(Duration::from_secs(1)),
        ..Default::default()
    };
    let t0 = Instant::now();
    let (report, result) = c.hangup_all(&sweep, None);
    let took = t0.elapsed();
    let e = result.expect_err("a stalled hangup cannot succeed");
    assert_eq!(e.status(), Status::Timeout, "{e:?}");
    assert!(e.message().contains("sweep's 1000 ms deadline"), "{e:?}");
    assert!(
        took < Duration::from_secs(5),
        "the 1 s sweep returned after {took:?} (the client's timeout is 10 s)"
    );
    assert_eq!((report.ended, report.still_live), (0, 1), "{report:?}");
}

/// The same through the C API: `tryvox_hangup_all` with `timeout_ms` 1000.
#[test]
fn c_hangup_all_keeps_its_deadline_against_a_stalled_listing() {
    let base = serve(Account {
        live: Vec::new(),
        stall_listing: true,
    });
    unsafe {
        let o = tryvox_options_new();
        assert_eq!(tryvox_options_set_base_url(o, cs(&base).as_ptr()), OK);
        assert_eq!(tryvox_options_set_timeout_ms(o, 10_000), OK);
        let c = tryvox_client_new_with_options(cs(AUTH_ID).as_ptr(), cs(API_KEY).as_ptr(), o);
        tryvox_options_free(o);
        assert!(!c.is_null(), "{}", last_error());
        let mut sweep: tryvox_sweep = std::mem::zeroed();
        sweep.size = std::mem::size_of::<tryvox_sweep>();
        sweep.timeout_ms = 1000;
        let t0 = Instant::now();
        let st = tryvox_hangup_all(c, &mut sweep);
        let took = t0.elapsed();
        let msg = last_error();
        tryvox_client_free(c);
        assert_eq!(st, Status::Timeout.code(), "{msg}");
        assert!(
            took < Duration::from_secs(5),
            "returned after {took:?}: {msg}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// 9. Only failed calls left: the same status on every identical run.
// ---------------------------------------------------------------------------------------

/// Six live calls whose hangups fail six ways. The status is chosen by the documented
/// order (UNAUTHORIZED first), the same on every run, with that failure's HTTP status and
/// server code; the 401 is deliberately not the smallest id.
#[test]
fn only_failed_calls_left_gives_the_same_status_every_run() {
    let live: Vec<String> = [
        "a-st-500", "b-st-429", "c-drop", "d-st-403", "e-st-401", "f-st-400",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let base = serve(Account {
        live,
        stall_listing: false,
    });
    let mut seen = Vec::new();
    for _ in 0..8 {
        // A fresh client each run: nothing carried over but the server's behaviour.
        let c = client(&base, Duration::from_secs(10), 0);
        let (report, result) = c.hangup_all(&Sweep::default(), None);
        let e = result.expect_err("no call can be ended");
        assert_eq!((report.failed, report.still_live), (6, 6), "{report:?}");
        seen.push((
            e.status(),
            e.http_status(),
            e.server_code().to_owned(),
            e.message().to_owned(),
        ));
    }
    for s in &seen {
        assert_eq!(s, &seen[0], "identical runs differ");
    }
    let (status, http, code, message) = &seen[0];
    assert_eq!(
        (*status, *http, code.as_str()),
        (Status::Unauthorized, 401, "E_401"),
        "{message}"
    );
    assert!(message.contains("call e-st-401"), "{message}");
    assert!(!message.contains(API_KEY));
}

/// The order among the rest: without the 401 and 403, PROTOCOL_ERROR (the 400) comes
/// before SERVER_ERROR, RATE_LIMITED and NETWORK_ERROR.
#[test]
fn the_order_is_fixed_below_the_first_too() {
    let live: Vec<String> = ["a-st-503", "b-st-429", "c-drop", "z-st-418"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let base = serve(Account {
        live,
        stall_listing: false,
    });
    for _ in 0..4 {
        let c = client(&base, Duration::from_secs(10), 0);
        let (_, result) = c.hangup_all(&Sweep::default(), None);
        let e = result.expect_err("no call can be ended");
        assert_eq!(
            (e.status(), e.http_status()),
            (Status::ProtocolError, 418),
            "{e:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// 12. tryvox_client_stats writes whole fields only.
// ---------------------------------------------------------------------------------------

/// Every `size` from the size field to the whole struct: the bytes of a field that fits
/// whole are written, every byte from the first field that does not fit on keeps its
/// sentinel (a half-written counter is a wrong number).
#[test]
fn stats_never_write_part_of_a_field() {
    let base = serve(Account {
        live: Vec::new(),
        stall_listing: false,
    });
    const SENTINEL: u8 = 0xA5;
    let full = std::mem::size_of::<tryvox_stats>();
    unsafe {
        let o = tryvox_options_new();
        assert_eq!(tryvox_options_set_base_url(o, cs(&base).as_ptr()), OK);
        let c = tryvox_client_new_with_options(cs(AUTH_ID).as_ptr(), cs(API_KEY).as_ptr(), o);
        tryvox_options_free(o);
        assert!(!c.is_null(), "{}", last_error());
        // Some counters that are not 0xA5A5...: a hangup answered 204.
        assert_eq!(
            tryvox_hangup(c, cs("ok-1").as_ptr()),
            OK,
            "{}",
            last_error()
        );
        // Field ends, from the layout itself.
        let mut ends = vec![
            std::mem::offset_of!(tryvox_stats, size) + std::mem::size_of::<usize>(),
            std::mem::offset_of!(tryvox_stats, hangups_by_status) + 32 * 8,
        ];
        let mut at = std::mem::offset_of!(tryvox_stats, attempts);
        while at < full {
            ends.push(at + 8);
            at += 8;
        }
        assert_eq!(*ends.last().unwrap(), full);
        for size in std::mem::size_of::<usize>()..=full {
            let mut buf = vec![SENTINEL; full + 16];
            buf[..std::mem::size_of::<usize>()].copy_from_slice(&size.to_ne_bytes());
            let out = buf.as_mut_ptr().cast::<tryvox_stats>();
            assert_eq!(tryvox_client_stats(c, out), OK, "{}", last_error());
            let whole = ends.iter().copied().filter(|&e| e <= size).max().unwrap();
            assert!(
                buf[whole..].iter().all(|&b| b == SENTINEL),
                "size {size}: bytes from {whole} (the first field that does not fit) were written"
            );
            // The hangup was counted: the written part holds it once the array fits.
            if whole >= ends[1] {
                let ok = std::ptr::addr_of!((*out).hangups_by_status[0]).read_unaligned();
                assert_eq!(ok, 1, "size {size}");
            }
        }
        tryvox_client_free(c);
    }
}

// ---------------------------------------------------------------------------------------
// 13. The CA file: a bounded regular file, or INVALID_ARGUMENT at once.
// ---------------------------------------------------------------------------------------

fn fifo(dir: &Path) -> PathBuf {
    let p = dir.join("ca.fifo");
    let _ = std::fs::remove_file(&p);
    let c = CString::new(p.to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
    p
}

/// A file one byte over the bound (1 MiB).
fn oversized(dir: &Path) -> PathBuf {
    let p = dir.join("huge-ca.pem");
    let line = "MIIBszCCAVmgAwIBAgIUSomeBase64TextThatLooksLikeACertificateLine12\n";
    let mut body = String::from("-----BEGIN CERTIFICATE-----\n");
    while body.len() <= (1 << 20) {
        body.push_str(line);
    }
    body.truncate((1 << 20) + 1);
    std::fs::write(&p, body).unwrap();
    p
}

/// The paths refused, each with the words its message must carry.
fn refused_paths(dir: &Path) -> Vec<(PathBuf, &'static str)> {
    vec![
        (fifo(dir), "not a regular file"),
        (PathBuf::from("/dev/zero"), "not a regular file"),
        (dir.to_path_buf(), "not a regular file"),
        (oversized(dir), "1048576"),
    ]
}

/// After a FIFO check, a writer unblocks a reader the old code left waiting (if any).
fn release_fifo(p: &Path) {
    let p = p.to_path_buf();
    std::thread::spawn(move || {
        use std::os::unix::fs::OpenOptionsExt;
        let _ = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(p);
    });
}

#[test]
fn ca_file_must_be_a_bounded_regular_file() {
    let dir = scratch("edges_small", "ca_rust");
    for (path, why) in refused_paths(&dir) {
        let shown = path.display().to_string();
        let p = path.clone();
        let r = within(Duration::from_secs(5), move || {
            let mut o = Options::new();
            o.set_base_url("https://127.0.0.1:9").unwrap();
            o.set_ca_file(p.to_str().unwrap()).unwrap();
            Client::with_options(AUTH_ID, API_KEY, &o).map(|_| ())
        });
        release_fifo(&path);
        let r = r.unwrap_or_else(|| panic!("building a client with CA file {shown} hung"));
        let e = r.expect_err(&shown);
        assert_eq!(e.status(), Status::InvalidArgument, "{shown}: {e:?}");
        assert!(
            e.message().contains(&shown) && e.message().contains(why),
            "{shown}: the message names the path and says why: {e:?}"
        );
    }
    // A regular file within the bound is still read (and refused only for its content).
    let small = dir.join("not-a-cert.pem");
    std::fs::write(&small, "hello\n").unwrap();
    let mut o = Options::new();
    o.set_ca_file(small.to_str().unwrap()).unwrap();
    let e = Client::with_options(AUTH_ID, API_KEY, &o).unwrap_err();
    assert!(e.message().contains("no PEM certificate"), "{e:?}");
}

#[test]
fn c_ca_file_must_be_a_bounded_regular_file() {
    let dir = scratch("edges_small", "ca_c");
    for (path, why) in refused_paths(&dir) {
        let shown = path.display().to_string();
        let p = shown.clone();
        let r = within(Duration::from_secs(5), move || unsafe {
            let o = tryvox_options_new();
            assert_eq!(
                tryvox_options_set_base_url(o, cs("https://127.0.0.1:9").as_ptr()),
                OK
            );
            assert_eq!(tryvox_options_set_ca_file(o, cs(&p).as_ptr()), OK);
            let c = tryvox_client_new_with_options(cs(AUTH_ID).as_ptr(), cs(API_KEY).as_ptr(), o);
            tryvox_options_free(o);
            let msg = last_error();
            if !c.is_null() {
                tryvox_client_free(c);
            }
            (c.is_null(), msg)
        });
        release_fifo(&path);
        let (refused, msg) =
            r.unwrap_or_else(|| panic!("tryvox_client_new_with_options with {shown} hung"));
        assert!(refused, "{shown}: a client was built");
        assert!(
            msg.contains(&shown) && msg.contains(why) && msg.contains("CA file"),
            "{shown}: {msg}"
        );
    }
    // INVALID_ARGUMENT is the status: the setter's own check of an empty path says so,
    // and the constructor's failure is the same class (checked through Rust above).
    unsafe {
        let o = tryvox_options_new();
        assert_eq!(tryvox_options_set_ca_file(o, cs("").as_ptr()), INVALID);
        tryvox_options_free(o);
    }
}

// ---------------------------------------------------------------------------------------
// 12 and 13 as a C program sees them (the header's struct as a C compiler lays it out).
// ---------------------------------------------------------------------------------------

#[test]
fn c_program_stats_whole_fields_and_ca_file_limits() {
    let base = serve(Account {
        live: Vec::new(),
        stall_listing: false,
    });
    let dir = scratch("edges_small", "c_program");
    let exe = support::compile_c("tests/c/edges_small.c", "edges_small");
    let out = std::process::Command::new(exe)
        .arg(&base)
        .arg(&dir)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{text}");
    assert!(
        out.status.success() && text.contains("0 failures"),
        "exit {:?}:\n{text}",
        out.status
    );
    assert!(!text.contains(API_KEY));
}
