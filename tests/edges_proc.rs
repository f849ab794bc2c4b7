//! Issue 18, the process-wide resources: fork() (case 1) and file descriptors (cases 10
//! and 11). Real servers on 127.0.0.1 (std::net); the descriptor tests run in a re-exec
//! of this test binary with a lowered RLIMIT_NOFILE, so the other tests are unaffected.

mod support;
use support::status_of as st;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use tryvox_core::{Client, HangupResult, Options, Status};

const AUTH_ID: &str = "AC123456";
const API_KEY: &str = "tvx_sk_edges_proc_SECRETKEY_0123456789";
/// A bound that only catches a hang.
const HANG: Duration = Duration::from_secs(30);

/// A keep-alive HTTP/1.1 server, a thread per connection: 404 call_not_found for ids
/// starting with "c-" (the child's), 204 for every other.
fn server() -> SocketAddr {
    support::serve_each(|_, s| serve(s)).addr
}

fn serve(mut s: TcpStream) {
    let mut heads = support::Heads::default();
    while let Some(head) = heads.next(&mut s) {
        let head = String::from_utf8_lossy(&head);
        let path = head.split_whitespace().nth(1).unwrap_or("");
        let id = path.rsplit('/').next().unwrap_or("");
        let answer = if id.starts_with("c-") {
            let body = r#"{"error": "call_not_found", "message": "Call not found"}"#;
            format!(
                "HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            )
        } else {
            "HTTP/1.1 204 No Content\r\n\r\n".to_owned()
        };
        if s.write_all(answer.as_bytes()).is_err() {
            return;
        }
    }
}

fn client(base: &str, tweak: impl FnOnce(&mut Options)) -> Client {
    let mut o = Options::new();
    o.allow_insecure_http(true); // names that stand for 127.0.0.1
    o.set_base_url(base).unwrap();
    o.set_timeout(Duration::from_secs(10)).unwrap();
    tweak(&mut o);
    Client::with_options(AUTH_ID, API_KEY, &o).unwrap()
}

/// Async hangups of `ids`, all at once; their statuses in order (an error if one does not
/// come within `HANG`).
fn async_statuses(c: &Client, ids: &[String]) -> Result<Vec<Status>, String> {
    let (tx, rx) = mpsc::channel::<(usize, Status)>();
    for (i, id) in ids.iter().enumerate() {
        let tx = tx.clone();
        c.hangup_async(id.clone(), move |_, r: HangupResult| {
            let _ = tx.send((i, st(&r)));
        })
        .map_err(|e| format!("{id}: not queued: {e}"))?;
    }
    let mut out = vec![Status::InternalError; ids.len()];
    for _ in ids {
        let (i, s) = rx
            .recv_timeout(HANG)
            .map_err(|_| "an async hangup's callback never came".to_owned())?;
        out[i] = s;
    }
    Ok(out)
}

/// Ten rounds of hangups on `a` (sync, async, bulk) and `b` (a client by name, sync and
/// async), every status checked: `want` for each.
fn rounds(a: &Client, b: &Client, prefix: &str, want: Status) -> Result<(), String> {
    let mut wrong = Vec::new();
    let mut check = |what: String, got: Status| {
        if got != want {
            wrong.push(format!("{what}: {got:?}"));
        }
    };
    for r in 0..10 {
        let id = |k: &str| format!("{prefix}{r}-{k}");
        check(id("sync"), st(&a.hangup(&id("sync"))));
        check(id("bsync"), st(&b.hangup(&id("bsync"))));
        let ids: Vec<String> = (0..4).map(|k| id(&format!("async{k}"))).collect();
        for (id, s) in ids.iter().zip(async_statuses(a, &ids)?) {
            check(id.clone(), s);
        }
        let ids: Vec<String> = (0..2).map(|k| id(&format!("basync{k}"))).collect();
        for (id, s) in ids.iter().zip(async_statuses(b, &ids)?) {
            check(id.clone(), s);
        }
        let ids: Vec<String> = (0..4).map(|k| id(&format!("bulk{k}"))).collect();
        let got = a.hangup_many(&ids, 0).map_err(|e| format!("bulk: {e}"))?;
        for (id, r) in ids.iter().zip(&got) {
            check(id.clone(), st(r));
        }
    }
    if wrong.is_empty() {
        Ok(())
    } else {
        Err(format!("{} wrong: {}", wrong.len(), wrong.join(", ")))
    }
}

static SCHEDULED_RAN: AtomicBool = AtomicBool::new(false);
static LOOKUP_WAITER_RAN: AtomicBool = AtomicBool::new(false);

/// Case 1. A client used before fork() (sync and async, keep-alive connections open in
/// the engine and in the caller's-thread path, a scheduled hangup pending, a name lookup
/// in flight); then parent and child hang up at once, ten rounds each on every path, the
/// parent ids answered 204, the child's 404: every status right on both sides, and the
/// parent's pending work never runs in the child.
#[test]
fn after_fork_the_child_has_a_fresh_client_and_the_parent_keeps_its_own() {
    let addr = server();
    let a = client(&format!("http://{addr}"), |_| {});
    // A client by name whose first lookup is held until after the fork.
    let (release, gate) = mpsc::channel::<()>();
    let gate = Mutex::new(gate);
    let lookups = Arc::new(AtomicUsize::new(0));
    let l2 = Arc::clone(&lookups);
    let lookup: tryvox_core::LookupFn = Arc::new(move |_: &str| {
        if l2.fetch_add(1, Ordering::SeqCst) == 0 {
            let _ = gate.lock().unwrap().recv();
        }
        Ok(vec![addr])
    });
    let b = client(&format!("http://fork.test:{}", addr.port()), |o| {
        o.set_resolver(lookup)
    });

    // Connections left open: the caller's-thread path's, and several of the engine's.
    for k in 0..3 {
        assert_eq!(st(&a.hangup(&format!("p-warm{k}"))), Status::Ok);
    }
    let warm: Vec<String> = (0..8).map(|k| format!("p-warm-async{k}")).collect();
    assert_eq!(async_statuses(&a, &warm).unwrap(), vec![Status::Ok; 8]);
    let got = a.hangup_many(&warm, 0).unwrap();
    assert!(got.iter().all(|r| st(r) == Status::Ok));
    // Pending at the fork: a scheduled hangup, and one waiting for the held lookup.
    let (sched_tx, sched_rx) = mpsc::channel();
    let sched = a
        .hangup_after("p-sched", Duration::from_millis(300), move |_, r| {
            SCHEDULED_RAN.store(true, Ordering::SeqCst);
            let _ = sched_tx.send(st(&r));
        })
        .unwrap();
    let (dns_tx, dns_rx) = mpsc::channel();
    b.hangup_async("p-dns", move |_, r| {
        LOOKUP_WAITER_RAN.store(true, Ordering::SeqCst);
        let _ = dns_tx.send(st(&r));
    })
    .unwrap();
    while lookups.load(Ordering::SeqCst) == 0 {
        std::thread::yield_now();
    }

    let mut fds = [0; 2];
    // SAFETY: a pipe for the child's report.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // SAFETY: the child runs only this test's code and leaves by _exit.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0);
    if pid == 0 {
        let report = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            rounds(&a, &b, "c-", Status::NotFound)?;
            if sched.cancel() {
                return Err("the parent's scheduled hangup was cancelled in the child".into());
            }
            // Freed in the child: returns (no thread of the parent's is waited for).
            drop(a);
            drop(b);
            std::thread::sleep(Duration::from_millis(500));
            if SCHEDULED_RAN.load(Ordering::SeqCst) || LOOKUP_WAITER_RAN.load(Ordering::SeqCst) {
                return Err("a callback of the parent's work ran in the child".into());
            }
            Ok::<(), String>(())
        }));
        let (code, msg) = match report {
            Ok(Ok(())) => (0, String::new()),
            Ok(Err(m)) => (1, m),
            Err(_) => (2, "the child panicked".into()),
        };
        // SAFETY: writes the report to the pipe and leaves without running the parent's
        // exit handlers.
        unsafe {
            libc::write(fds[1], msg.as_ptr().cast(), msg.len());
            libc::_exit(code);
        }
    }
    // SAFETY: the parent's copy of the write end.
    unsafe { libc::close(fds[1]) };
    release.send(()).unwrap();
    let parent = rounds(&a, &b, "p-", Status::Ok);

    // The child's outcome, within a bound that only catches a hang.
    let until = Instant::now() + Duration::from_secs(90);
    let mut wstatus = 0;
    loop {
        // SAFETY: waits for our own child.
        let r = unsafe { libc::waitpid(pid, &mut wstatus, libc::WNOHANG) };
        if r == pid {
            break;
        }
        if Instant::now() > until {
            // SAFETY: our own child.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, &mut wstatus, 0);
            }
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut msg = String::new();
    // SAFETY: the read end is ours; File takes it over.
    let mut f = unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fds[0]) };
    let _ = f.read_to_string(&mut msg);
    assert!(
        libc::WIFEXITED(wstatus) && libc::WEXITSTATUS(wstatus) == 0,
        "the child failed (wait status {wstatus}): {msg}"
    );
    assert_eq!(parent, Ok(()), "the parent's statuses");
    assert_eq!(sched_rx.recv_timeout(HANG).unwrap(), Status::Ok);
    assert_eq!(dns_rx.recv_timeout(HANG).unwrap(), Status::Ok);
}

const FD_CHILD: &str = "TRYVOX_EDGES_PROC_FD_CHILD";

/// Runs `test` (a test of this file) in a re-exec of this binary with `spec` in the
/// environment, and asserts it passed.
fn in_child_process(test: &str, spec: String) {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(FD_CHILD, spec)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the child process failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Cases 10 and 11. A process with a soft limit of 400 descriptors, three clients (one
/// per tenant) whose name resolves to two black-holed addresses before the real one, and
/// a burst of 400 hangups on every path: the host can open files all along, and every
/// hangup ends OK (none BUSY) within an ample deadline.
#[test]
fn three_clients_and_black_holes_leave_the_host_descriptors_and_every_hangup_ends_ok() {
    let Ok(spec) = std::env::var(FD_CHILD) else {
        support::raise_fd_limit();
        let addr = server();
        let port = addr.port();
        let h1 = support::black_hole(std::net::SocketAddrV4::new([127, 0, 0, 5].into(), port))
            .expect("black hole");
        let h2 = support::black_hole(std::net::SocketAddrV4::new([127, 0, 0, 6].into(), port))
            .expect("black hole");
        in_child_process(
            "three_clients_and_black_holes_leave_the_host_descriptors_and_every_hangup_ends_ok",
            format!("{} {} {}", h1.addr, h2.addr, addr),
        );
        return;
    };
    let addrs: Vec<SocketAddr> = spec.split(' ').map(|a| a.parse().unwrap()).collect();
    let real = addrs[2];
    // SAFETY: lowers this process's soft limit.
    unsafe {
        let mut l = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut l), 0);
        l.rlim_cur = 400;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &l), 0);
    }
    let lookup: tryvox_core::LookupFn = Arc::new(move |_: &str| Ok(addrs.clone()));
    let clients: Vec<Arc<Client>> = (0..3)
        .map(|t| {
            let lookup = lookup.clone();
            Arc::new(client(&format!("http://api.test:{}", real.port()), |o| {
                o.set_resolver(lookup);
                o.set_tenant_id(&format!("tenant-{t}")).unwrap();
                o.set_timeout(Duration::from_secs(60)).unwrap();
                o.set_connect_timeout(Duration::from_secs(10)).unwrap();
                o.set_max_retries(10).unwrap();
            }))
        })
        .collect();

    // The host opens a file again and again while the burst runs.
    let stop = Arc::new(AtomicBool::new(false));
    let host = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let (mut opened, mut failed) = (0u64, Vec::new());
            while !stop.load(Ordering::SeqCst) {
                match std::fs::File::open("/dev/null") {
                    Ok(f) => {
                        opened += 1;
                        drop(f);
                    }
                    Err(e) => failed.push(e.to_string()),
                }
                std::thread::sleep(Duration::from_micros(500));
            }
            (opened, failed)
        })
    };

    // 400 hangups at once: per client 110 async, a bulk of 20, 3 threads of 3 sync.
    let (tx, rx) = mpsc::channel::<(String, Status)>();
    let mut threads = Vec::new();
    for (t, c) in clients.iter().enumerate() {
        for k in 0..110 {
            let tx = tx.clone();
            c.hangup_async(format!("a{t}-{k}"), move |id, r| {
                let _ = tx.send((id, st(&r)));
            })
            .unwrap();
        }
        let (c2, tx2) = (Arc::clone(c), tx.clone());
        threads.push(std::thread::spawn(move || {
            let ids: Vec<String> = (0..20).map(|k| format!("b{t}-{k}")).collect();
            for (id, r) in ids.iter().zip(c2.hangup_many(&ids, 20).unwrap()) {
                let _ = tx2.send((id.clone(), st(&r)));
            }
        }));
        for s in 0..3 {
            let (c2, tx2) = (Arc::clone(c), tx.clone());
            threads.push(std::thread::spawn(move || {
                for k in 0..3 {
                    let id = format!("s{t}-{s}-{k}");
                    let r = c2.hangup(&id);
                    let _ = tx2.send((id, st(&r)));
                }
            }));
        }
    }
    drop(tx);
    let mut wrong = Vec::new();
    let mut n = 0;
    for (id, s) in rx.iter() {
        n += 1;
        if s != Status::Ok {
            wrong.push(format!("{id}: {s:?}"));
        }
    }
    for t in threads {
        t.join().unwrap();
    }
    stop.store(true, Ordering::SeqCst);
    let (opened, failed) = host.join().unwrap();
    assert_eq!(n, 3 * (110 + 20 + 9), "every outcome came");
    assert!(
        wrong.is_empty(),
        "{} of {n} not OK: {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(10)]
    );
    assert!(opened > 0);
    assert!(
        failed.is_empty(),
        "the host could not open a file {} times: {:?}",
        failed.len(),
        failed.first()
    );
}

/// Case 1 through the C API, as a C host (a prefork server, a dialer) does it: a client
/// used before fork() (keep-alive connections on both paths, a scheduled hangup
/// pending), then parent (ids answered 204) and child (ids answered 404) hang up at once
/// on the three paths for 10 rounds, every status its side's; the parent's scheduled
/// hangup never calls back in the child, which cannot cancel it; the parent's client
/// still works after the child exits (tests/c/fork.c).
#[test]
fn a_c_program_forks_after_using_a_client() {
    let s = support::TestServer::start();
    let exe = support::compile_c("tests/c/fork.c", "edges_fork");
    // Before the fix the child's tryvox_hangup_many never returned: a watchdog kills
    // the program (and its child, in its process group) after 120 s.
    let mut child = std::process::Command::new(exe)
        .arg(s.base_url())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap();
    let pgid = child.id() as i32;
    let until = Instant::now() + Duration::from_secs(120);
    while child.try_wait().unwrap().is_none() && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(50));
    }
    let hung = child.try_wait().unwrap().is_none();
    if hung {
        // SAFETY: signals the test's own process group.
        unsafe { libc::kill(-pgid, libc::SIGKILL) };
    }
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{text}");
    assert!(!hung, "the program hung (killed after 120 s):\n{text}");
    assert!(
        out.status.success()
            && text.contains("child: 0 failures")
            && text.ends_with("0 failures\n"),
        "exit {:?}:\n{text}",
        out.status
    );
    assert!(!text.contains("s3cr3t"));
}
