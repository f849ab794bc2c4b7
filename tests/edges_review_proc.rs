//! Hostile review of issue 18's cases 1 (fork), 10 and 11 (descriptors). Each test says
//! what it shows. Real servers on 127.0.0.1; the descriptor tests run in a re-exec of this
//! binary with a lowered RLIMIT_NOFILE (as tests/edges_proc.rs does).

mod support;
use support::status_of as st;
use support::TestServer;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use tryvox_core::{Client, HangupResult, Options, Status};

const AUTH_ID: &str = "AC123456";
const API_KEY: &str = "tvx_sk_review_proc_SECRETKEY_0123456789";
const HANG: Duration = Duration::from_secs(30);

fn client_for(base: &str, tweak: impl FnOnce(&mut Options)) -> Client {
    let mut o = Options::new();
    o.allow_insecure_http(true);
    o.set_base_url(base).unwrap();
    o.set_timeout(Duration::from_secs(10)).unwrap();
    tweak(&mut o);
    Client::with_options(AUTH_ID, API_KEY, &o).unwrap()
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count() - 1
}

fn fd_targets() -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .flatten()
        .map(|e| {
            format!(
                "{} -> {}",
                e.file_name().to_string_lossy(),
                std::fs::read_link(e.path())
                    .map(|p| p.display().to_string())
                    .unwrap_or_default()
            )
        })
        // Less read_dir's own descriptor.
        .filter(|s: &String| !s.ends_with("/fd"))
        .collect();
    v.sort();
    v
}

/// Threads of this process whose name starts with "tryvox".
fn tryvox_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .flatten()
        .filter(|t| {
            std::fs::read_to_string(t.path().join("comm"))
                .map(|c| c.starts_with("tryvox"))
                .unwrap_or(false)
        })
        .count()
}

fn cpu_time() -> Duration {
    // SAFETY: getrusage writes the struct it is given.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(u.ru_utime) + tv(u.ru_stime)
}

/// Waits for child `pid` at most `bound`, killing it then. Some(wait status) if it exited.
fn wait_child(pid: libc::pid_t, bound: Duration) -> Option<i32> {
    let until = Instant::now() + bound;
    let mut ws = 0;
    loop {
        // SAFETY: our own child.
        if unsafe { libc::waitpid(pid, &mut ws, libc::WNOHANG) } == pid {
            return Some(ws);
        }
        if Instant::now() > until {
            if std::env::var("REVIEW_GDB").is_ok() {
                let out = std::process::Command::new("gdb")
                    .args([
                        "-p",
                        &pid.to_string(),
                        "-batch",
                        "-ex",
                        "thread apply all bt",
                    ])
                    .output();
                if let Ok(o) = out {
                    eprintln!("{}", String::from_utf8_lossy(&o.stdout));
                }
            }
            // SAFETY: our own child.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, &mut ws, 0);
            }
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Forks; the child runs `f` and leaves by _exit with its report on a pipe. Returns the
/// child's outcome (Err: a message, or "hung" if it did not exit within `bound`).
fn in_fork(bound: Duration, f: impl FnOnce() -> Result<(), String>) -> Result<(), String> {
    let mut fds = [0; 2];
    // SAFETY: a pipe for the child's report.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // SAFETY: the child runs only test code and leaves by _exit.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0);
    if pid == 0 {
        // SAFETY: the child's copy of the read end.
        unsafe { libc::close(fds[0]) };
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
        let (code, msg) = match r {
            Ok(Ok(())) => (0, String::new()),
            Ok(Err(m)) => (1, m),
            Err(_) => (2, "the child panicked".to_owned()),
        };
        // SAFETY: report and leave without the parent's exit handlers.
        unsafe {
            libc::write(fds[1], msg.as_ptr().cast(), msg.len());
            libc::_exit(code);
        }
    }
    // SAFETY: the parent's copy of the write end.
    unsafe { libc::close(fds[1]) };
    let ws = wait_child(pid, bound);
    let mut msg = String::new();
    // SAFETY: the read end is ours.
    let mut f = unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fds[0]) };
    let _ = f.read_to_string(&mut msg);
    match ws {
        None => Err(format!("the child hung (killed after {bound:?}) {msg}")),
        Some(ws) if libc::WIFEXITED(ws) && libc::WEXITSTATUS(ws) == 0 => Ok(()),
        Some(ws) => Err(format!("the child failed (wait status {ws}): {msg}")),
    }
}

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
            .map_err(|_| "an async callback never came".to_owned())?;
        out[i] = s;
    }
    Ok(out)
}

/// Sync, async and bulk hangups of `prefix`-ids, each expected `want`.
fn every_path(c: &Client, prefix: &str, want: Status) -> Result<(), String> {
    let mut wrong = Vec::new();
    for k in 0..3 {
        let id = format!("{prefix}s{k}");
        let s = st(&c.hangup(&id));
        if s != want {
            wrong.push(format!("{id}: {s:?}"));
        }
    }
    let ids: Vec<String> = (0..6).map(|k| format!("{prefix}a{k}")).collect();
    for (id, s) in ids.iter().zip(async_statuses(c, &ids)?) {
        if s != want {
            wrong.push(format!("{id}: {s:?}"));
        }
    }
    let ids: Vec<String> = (0..6).map(|k| format!("{prefix}b{k}")).collect();
    let got = c.hangup_many(&ids, 0).map_err(|e| format!("bulk: {e}"))?;
    for (id, r) in ids.iter().zip(&got) {
        if st(r) != want {
            wrong.push(format!("{id}: {:?}", st(r)));
        }
    }
    if wrong.is_empty() {
        Ok(())
    } else {
        Err(wrong.join(", "))
    }
}

// ---------------------------------------------------------------------------------------
// fork()

/// The tests here count the whole process's descriptors and library threads, and fork
/// it: one at a time, so that another test's sockets and threads are not counted (a
/// parallel run once saw 74 descriptors where 60 were left).
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

static FORKED: AtomicBool = AtomicBool::new(false);
static CHILD_PID: AtomicI32 = AtomicI32::new(0);

/// SHOWS: a callback that forks (Python multiprocessing started from a callback, a dialer
/// that forks a worker when a hangup completes) and whose child returns from it: the
/// child goes on running the *parent's* other callbacks (the rest of the engine's
/// per-turn callback batch, and whatever the pool has queued), so each of those
/// callbacks runs twice, once in each process. The header promises "callbacks of async
/// hangups ... the parent had pending never run in the child". Cause: the pool worker
/// (and the batch job's loop over its callbacks) has no notion of the process
/// generation; only the client's entry points check it.
#[test]
fn fork_in_a_callback_the_child_runs_the_parents_other_callbacks() {
    let _serial = serial();
    let server = TestServer::start();
    let c = client_for(&server.base_url(), |_| {});
    let log = std::env::temp_dir().join(format!("review_proc_cb_{}", std::process::id()));
    let _ = std::fs::remove_file(&log);
    let log2 = log.clone();
    let parent = std::process::id() as i32;
    let (tx, rx) = mpsc::channel::<()>();
    let n = 120;
    for k in 0..n {
        let tx = tx.clone();
        let log = log2.clone();
        c.hangup_async(format!("ok-cbfork-{k}"), move |id, _r| {
            // The callback that forks goes on in both processes (that is fork's own
            // doing, not the library's): only the *other* callbacks must not run in the
            // child.
            let i_forked = !FORKED.swap(true, Ordering::SeqCst);
            if i_forked {
                // SAFETY: the child returns from this callback into the library, as a
                // host's child that goes on with its work does.
                let pid = unsafe { libc::fork() };
                if pid > 0 {
                    CHILD_PID.store(pid, Ordering::SeqCst);
                }
            }
            // SAFETY: getpid has no preconditions.
            let me = unsafe { libc::getpid() };
            if me != parent && !i_forked {
                let mut f = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&log)
                    .unwrap();
                let _ = writeln!(f, "{me} {id}");
            }
            let _ = tx.send(());
        })
        .unwrap();
    }
    drop(tx);
    for _ in 0..n {
        rx.recv_timeout(HANG).expect("every callback in the parent");
    }
    while CHILD_PID.load(Ordering::SeqCst) == 0 {
        std::thread::yield_now();
    }
    // The child ends when its last thread (the forking worker) exits when idle.
    let ws = wait_child(CHILD_PID.load(Ordering::SeqCst), Duration::from_secs(20));
    let ran = std::fs::read_to_string(&log).unwrap_or_default();
    let _ = std::fs::remove_file(&log);
    assert!(
        ran.is_empty(),
        "callbacks of the parent's hangups ran in the child (wait status {ws:?}):\n{}",
        ran.lines().take(10).collect::<Vec<_>>().join("\n")
    );
}

/// Tries: fork twice (a grandchild), each generation using the client on every path with
/// its own expected status, freeing it, and checking that no library thread and no
/// descriptor opened since its fork is left; the parent goes on using its keep-alive
/// connections after its child exited, then frees its client, leaving nothing.
#[test]
fn child_and_grandchild_use_and_free_the_client_and_leave_nothing() {
    let _serial = serial();
    let server = TestServer::start();
    let fds_before = open_fds();
    let c = client_for(&server.base_url(), |_| {});
    every_path(&c, "ok-gen0-", Status::Ok).unwrap();
    let r = in_fork(Duration::from_secs(60), || {
        let fds0 = fd_targets();
        every_path(&c, "nf-flat-gen1-", Status::NotFound)?;
        in_fork(Duration::from_secs(40), || {
            let fds0 = fd_targets();
            every_path(&c, "end-flat-gen2-", Status::AlreadyEnded)?;
            // The grandchild frees the client it used.
            drop(unsafe { std::ptr::read(&c) });
            std::thread::sleep(Duration::from_millis(100));
            if tryvox_threads() != 0 {
                return Err(format!(
                    "grandchild: {} tryvox threads left",
                    tryvox_threads()
                ));
            }
            let fds1 = fd_targets();
            if fds1 != fds0 {
                return Err(format!("grandchild: descriptors {fds0:?} -> {fds1:?}"));
            }
            Ok(())
        })
        .map_err(|e| format!("grandchild: {e}"))?;
        every_path(&c, "nf-flat-gen1b-", Status::NotFound)?;
        drop(unsafe { std::ptr::read(&c) });
        std::thread::sleep(Duration::from_millis(100));
        if tryvox_threads() != 0 {
            return Err(format!("child: {} tryvox threads left", tryvox_threads()));
        }
        let fds1 = fd_targets();
        if fds1 != fds0 {
            return Err(format!("child: descriptors {fds0:?} -> {fds1:?}"));
        }
        Ok(())
    });
    assert_eq!(r, Ok(()));
    // The parent, after its child is gone: its keep-alive connections still work.
    let conns = server.connections();
    every_path(&c, "ok-gen0b-", Status::Ok).unwrap();
    let _ = conns;
    // A child that never uses the client and frees it: returns at once.
    let r = in_fork(Duration::from_secs(10), || {
        let t = Instant::now();
        drop(unsafe { std::ptr::read(&c) });
        if t.elapsed() > Duration::from_secs(2) {
            return Err(format!("free in an unused child took {:?}", t.elapsed()));
        }
        Ok(())
    });
    assert_eq!(r, Ok(()));
    every_path(&c, "ok-gen0c-", Status::Ok).unwrap();
    drop(c);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(tryvox_threads(), 0, "threads left after free");
    assert_eq!(open_fds(), fds_before, "descriptors left after free");
}

/// Tries: the main thread forks 30 times while other threads hang up without pause on
/// sync, async and bulk paths; each child hangs up on every path (404 expected) and frees
/// the client. Any lock held by a parent's thread at the fork and reached by the child
/// would hang it.
#[test]
fn fork_while_other_threads_hang_up_on_every_path() {
    let _serial = serial();
    let server = TestServer::start();
    let c = Arc::new(client_for(&server.base_url(), |_| {}));
    let stop = Arc::new(AtomicBool::new(false));
    let bad = Arc::new(AtomicUsize::new(0));
    let mut threads = Vec::new();
    for kind in 0..4 {
        let (c, stop, bad) = (Arc::clone(&c), Arc::clone(&stop), Arc::clone(&bad));
        threads.push(std::thread::spawn(move || {
            let mut k = 0u64;
            while !stop.load(Ordering::SeqCst) {
                k += 1;
                let ok = match kind {
                    0 | 1 => st(&c.hangup(&format!("ok-busy{kind}-{k}"))) == Status::Ok,
                    2 => {
                        let ids: Vec<String> = (0..10).map(|i| format!("ok-ba{k}-{i}")).collect();
                        async_statuses(&c, &ids).is_ok_and(|v| v.iter().all(|s| *s == Status::Ok))
                    }
                    _ => {
                        let ids: Vec<String> = (0..10).map(|i| format!("ok-bb{k}-{i}")).collect();
                        c.hangup_many(&ids, 0)
                            .is_ok_and(|v| v.iter().all(|r| st(r) == Status::Ok))
                    }
                };
                if !ok {
                    bad.fetch_add(1, Ordering::SeqCst);
                }
            }
        }));
    }
    let mut failures = Vec::new();
    for f in 0..30 {
        std::thread::sleep(Duration::from_millis(15));
        let c2 = Arc::clone(&c);
        let r = in_fork(Duration::from_secs(25), move || {
            every_path(&c2, &format!("nf-flat-f{f}-"), Status::NotFound)
        });
        if let Err(e) = r {
            failures.push(format!("fork {f}: {e}"));
            if failures.len() >= 3 {
                break;
            }
        }
    }
    stop.store(true, Ordering::SeqCst);
    for t in threads {
        t.join().unwrap();
    }
    assert!(failures.is_empty(), "{failures:#?}");
    assert_eq!(
        bad.load(Ordering::SeqCst),
        0,
        "the parent saw wrong statuses"
    );
}

// A TLS server (thread per connection) that answers each request 204 and closes: every
// hangup is a new handshake, with TLS 1.3 session tickets (the client's resumption cache
// is written and read on each).
fn tls_server() -> u16 {
    // TLS 1.3 and 1.2, as `with_safe_default_protocol_versions`.
    let cfg = support::tls_server_config(rustls::DEFAULT_VERSIONS, None);
    // A deep backlog: the three hammering threads connect faster than the accept thread
    // takes them on busy cores, and a child's SYN dropped from a full queue times out
    // its connect (seen as "timed out connecting to the server").
    let server = support::Loopback::bind()
        .backlog(4096)
        .serve_each(move |_, mut s| {
            let mut conn = rustls::ServerConnection::new(Arc::clone(&cfg)).unwrap();
            let mut tls = rustls::Stream::new(&mut conn, &mut s);
            if support::read_through_head(&mut tls).is_none() {
                return;
            }
            let _ = tls.write_all(b"HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n");
            let _ = tls.flush();
            tls.conn.send_close_notify();
            let _ = tls.flush();
        });
    server.port()
}

/// SHOWS (fails intermittently: 2 of 4 runs here, 150 forks each): the child of a fork
/// taken while other threads do TLS handshakes hangs forever in its first TLS hangup,
/// past its 5 s deadline (gdb: futex wait in rustls `ClientSessionMemoryCache::
/// take_tls13_ticket`, from `Conn::start_tls`; run with REVIEW_GDB=1 to see it). Cause: the rustls ClientConfig (its session resumption
/// cache, a std Mutex) lives in the client's Core, shared, not per process: a parent's
/// thread holding that lock at the fork leaves it locked forever in the child.
#[test]
fn fork_while_tls_handshakes_run_never_hangs_the_child() {
    let _serial = serial();
    let port = tls_server();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tls");
    let mut o = Options::new();
    o.set_ca_file(dir.join("ca.pem").to_str().unwrap()).unwrap();
    o.set_base_url(&format!("https://localhost:{port}"))
        .unwrap();
    o.set_resolver(Arc::new(move |_: &str| {
        Ok(vec![SocketAddr::from(([127, 0, 0, 1], port))])
    }));
    o.set_timeout(Duration::from_secs(5)).unwrap();
    let c = Arc::new(Client::with_options(AUTH_ID, API_KEY, &o).unwrap());
    assert_eq!(st(&c.hangup("warm")), Status::Ok);
    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    for t in 0..3 {
        let (c, stop) = (Arc::clone(&c), Arc::clone(&stop));
        threads.push(std::thread::spawn(move || {
            let mut k = 0;
            while !stop.load(Ordering::SeqCst) {
                k += 1;
                if t == 2 {
                    let ids: Vec<String> = (0..8).map(|i| format!("tb{k}-{i}")).collect();
                    let _ = c.hangup_many(&ids, 0);
                } else {
                    let _ = c.hangup(&format!("t{t}-{k}"));
                }
            }
        }));
    }
    let mut failures = Vec::new();
    for f in 0..150 {
        let c2 = Arc::clone(&c);
        let r = in_fork(Duration::from_secs(12), move || {
            let r = c2.hangup(&format!("child-{f}"));
            let s = st(&r);
            if s != Status::Ok {
                // The message too: a timeout's says what it waited for.
                let why = r.err().map(|e| e.to_string()).unwrap_or_default();
                return Err(format!("child hangup: {s:?}: {why}"));
            }
            Ok(())
        });
        if let Err(e) = r {
            failures.push(format!("fork {f}: {e}"));
            break;
        }
    }
    stop.store(true, Ordering::SeqCst);
    for t in threads {
        t.join().unwrap();
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

// ---------------------------------------------------------------------------------------
// Descriptors, in a re-exec with a lowered soft limit.

const FD_CHILD: &str = "TRYVOX_REVIEW_PROC_FD_CHILD";

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

fn set_soft_limit(n: u64) {
    // SAFETY: lowers this process's soft limit.
    unsafe {
        let mut l = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut l), 0);
        l.rlim_cur = n;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &l), 0);
    }
}

/// The budget the library computes now (no library descriptor open).
fn budget_now(soft: usize) -> usize {
    (soft - open_fds()) / 2
}

/// SHOWS: a client's idle connections of the blocking path (tryvox_hangup) hold places in
/// the process's descriptor budget for as long as that client's blocking path is not used
/// again: another client's hangup waits for a place that never frees, and ends TIMEOUT
/// with nothing sent, though every one of those sockets is idle. The header promises
/// "idle keep-alive connections of every client give theirs up then". Cause: the
/// blocking path's IdleStack sheds on `fds::wanted()` only in its own `lock()` (no
/// thread watches it; `want()` wakes engines only), and it keeps up to MAX_IDLE = 128.
#[test]
fn idle_sync_connections_of_one_client_starve_another_client() {
    let _serial = serial();
    let Ok(spec) = std::env::var(FD_CHILD) else {
        let server = TestServer::start();
        in_child_process(
            "idle_sync_connections_of_one_client_starve_another_client",
            server.base_url(),
        );
        return;
    };
    set_soft_limit(64);
    // The budget less the two places sockets leave for an engine to start (the header:
    // every descriptor counts, the engines' too; sockets never take the last two).
    let n = budget_now(64) - 2;
    // Client A: n hangups at once on the blocking path (each on its own connection: the
    // server holds them until all n are in), then A goes quiet.
    let a = Arc::new(client_for(&spec, |o| {
        o.set_timeout(Duration::from_secs(20)).unwrap();
    }));
    let hs: Vec<_> = (0..n)
        .map(|k| {
            let a = Arc::clone(&a);
            std::thread::spawn(move || st(&a.hangup(&format!("gate-{n}-a{k}"))))
        })
        .collect();
    for h in hs {
        assert_eq!(h.join().unwrap(), Status::Ok);
    }
    // Client B, sync and async: the budget is held by A's idle sockets only.
    let b = client_for(&spec, |o| {
        o.set_timeout(Duration::from_secs(3)).unwrap();
    });
    let t = Instant::now();
    let sync = b.hangup("ok-b-sync");
    let sync_took = t.elapsed();
    let asy = async_statuses(&b, &["ok-b-async".to_owned()]).unwrap();
    assert_eq!(
        (st(&sync), asy[0]),
        (Status::Ok, Status::Ok),
        "budget {n}: B's sync {:?} after {sync_took:?} ({}), async {:?}",
        st(&sync),
        sync.as_ref()
            .err()
            .map(|e| e.message().to_owned())
            .unwrap_or_default(),
        asy[0]
    );
}

/// A hangup that waited for a descriptor until its deadline says so (TIMEOUT, not "the
/// server"), on the sync and async paths: the budget is full of another client's
/// never-answered connections.
#[test]
fn a_hangup_that_waits_for_a_descriptor_says_so() {
    let _serial = serial();
    let Ok(spec) = std::env::var(FD_CHILD) else {
        let server = TestServer::start();
        in_child_process(
            "a_hangup_that_waits_for_a_descriptor_says_so",
            server.base_url(),
        );
        return;
    };
    set_soft_limit(64);
    let a = client_for(&spec, |o| {
        o.set_timeout(Duration::from_secs(20)).unwrap();
        o.set_max_retries(0).unwrap();
    });
    let host = open_fds();
    let n = (64 - host) / 2;
    for k in 0..2 * n {
        a.hangup_async(format!("hang-w{k}"), |_, _| {}).unwrap();
    }
    // A's engine fills the budget less the two places left for another engine.
    let until = Instant::now() + HANG;
    while open_fds() - host < n - 2 && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(open_fds() - host, n - 2, "budget {n}");
    let b = client_for(&spec, |o| {
        o.set_timeout(Duration::from_millis(800)).unwrap();
    });
    let sync = b.hangup("ok-b-sync");
    let (tx, rx) = mpsc::channel();
    b.hangup_async("ok-b-async", move |_, r| {
        let _ = tx.send(r);
    })
    .unwrap();
    let asy = rx.recv_timeout(HANG).unwrap();
    for (path, r) in [("sync", &sync), ("async", &asy)] {
        let e = r.as_ref().expect_err(path);
        assert_eq!(e.status(), Status::Timeout, "{path}: {}", e.message());
        assert!(
            e.message().contains("waiting for a file descriptor"),
            "{path}: {}",
            e.message()
        );
    }
    drop(b);
    std::mem::forget(a); // its hangups wait 20 s for a server that never answers
}

/// Tried: with the budget full, a client whose async queue is long kept every place (its
/// keep-alive connections went straight to its next queued hangup; a place it freed it
/// took back in the same turn), and another client's hangup (sync or async) waited for
/// the flood to drain: TIMEOUT at its deadline, nothing sent (1 run in 8; CI hit it once,
/// B's async TIMEOUT with 1,350 of A's 2,880 done). Fixed: a waiter counts itself
/// (`fds::Waiting`); seeing another client's waiter, an engine closes a connection when its
/// exchange ends instead of reusing it, and opens none for 25 ms.
#[test]
fn a_flooding_client_does_not_starve_another_client() {
    let _serial = serial();
    let Ok(spec) = std::env::var(FD_CHILD) else {
        let server = TestServer::start();
        in_child_process(
            "a_flooding_client_does_not_starve_another_client",
            server.base_url(),
        );
        return;
    };
    set_soft_limit(100);
    let budget = budget_now(100);
    let a = client_for(&spec, |o| {
        o.set_timeout(Duration::from_secs(60)).unwrap();
    });
    // About 6 s of work for A at the budget's parallelism.
    let flood = budget * 60;
    let (tx, rx) = mpsc::channel::<Status>();
    for k in 0..flood {
        let tx = tx.clone();
        a.hangup_async(format!("slow-100-fl{k}"), move |_, r| {
            let _ = tx.send(st(&r));
        })
        .unwrap();
    }
    std::thread::sleep(Duration::from_millis(300));
    let b = Arc::new(client_for(&spec, |o| {
        o.set_timeout(Duration::from_secs(3)).unwrap();
    }));
    let b2 = Arc::clone(&b);
    let sync = std::thread::spawn(move || st(&b2.hangup("ok-b-sync")));
    let asy = async_statuses(&b, &["ok-b-async".to_owned()]).unwrap()[0];
    let sync = sync.join().unwrap();
    let a_left = rx.try_iter().count();
    assert_eq!(
        (sync, asy),
        (Status::Ok, Status::Ok),
        "budget {budget}, flood {flood} ({a_left} of A's done when B ended)"
    );
    drop(a);
}

/// Tries: the budget full of never-answered connections while 300 more hangups of two
/// clients wait for a place: the engines wait without spinning (CPU well under a tenth
/// of a core).
#[test]
fn waiting_for_a_descriptor_does_not_spin() {
    let _serial = serial();
    let Ok(spec) = std::env::var(FD_CHILD) else {
        let server = TestServer::start();
        in_child_process("waiting_for_a_descriptor_does_not_spin", server.base_url());
        return;
    };
    set_soft_limit(64);
    let clients: Vec<Client> = (0..2)
        .map(|_| {
            client_for(&spec, |o| {
                o.set_timeout(Duration::from_secs(8)).unwrap();
                o.set_max_retries(0).unwrap();
            })
        })
        .collect();
    let (tx, rx) = mpsc::channel::<Status>();
    for (i, c) in clients.iter().enumerate() {
        for k in 0..150 {
            let tx = tx.clone();
            c.hangup_async(format!("hang-c{i}-{k}"), move |_, r| {
                let _ = tx.send(st(&r));
            })
            .unwrap();
        }
    }
    std::thread::sleep(Duration::from_millis(800));
    let t0 = cpu_time();
    let w0 = Instant::now();
    std::thread::sleep(Duration::from_secs(3));
    let used = cpu_time() - t0;
    let wall = w0.elapsed();
    drop(tx);
    assert!(
        used < wall / 10,
        "{used:?} of CPU in {wall:?} while waiting for descriptors"
    );
    drop(clients);
    let _ = rx.try_iter().count();
}

/// Tries: black-holed addresses first, a low limit, three clients on every path; after
/// every client is freed, no descriptor and no library thread is left.
#[test]
fn no_descriptor_or_thread_left_after_free_with_black_holes_and_a_low_limit() {
    let _serial = serial();
    let Ok(spec) = std::env::var(FD_CHILD) else {
        let server = TestServer::start();
        let port = server.addr.port();
        let h1 = support::black_hole(std::net::SocketAddrV4::new([127, 0, 0, 7].into(), port))
            .expect("black hole");
        let h2 = support::black_hole(std::net::SocketAddrV4::new([127, 0, 0, 8].into(), port))
            .expect("black hole");
        in_child_process(
            "no_descriptor_or_thread_left_after_free_with_black_holes_and_a_low_limit",
            format!("{} {} {}", h1.addr, h2.addr, server.addr),
        );
        return;
    };
    set_soft_limit(100);
    let addrs: Vec<SocketAddr> = spec.split(' ').map(|a| a.parse().unwrap()).collect();
    let real = addrs[2];
    let before = fd_targets();
    let lookup: tryvox_core::LookupFn = Arc::new(move |_: &str| Ok(addrs.clone()));
    let clients: Vec<Arc<Client>> = (0..3)
        .map(|t| {
            let lookup = lookup.clone();
            Arc::new(client_for(
                &format!("http://api.test:{}", real.port()),
                |o| {
                    o.set_resolver(lookup);
                    o.set_tenant_id(&format!("t{t}")).unwrap();
                    o.set_timeout(Duration::from_secs(60)).unwrap();
                    o.set_connect_timeout(Duration::from_secs(10)).unwrap();
                    o.set_max_retries(10).unwrap();
                },
            ))
        })
        .collect();
    let mut hs = Vec::new();
    for (t, c) in clients.iter().enumerate() {
        let c = Arc::clone(c);
        hs.push(std::thread::spawn(move || {
            every_path(&c, &format!("ok-l{t}-"), Status::Ok)
        }));
    }
    for h in hs {
        assert_eq!(h.join().unwrap(), Ok(()));
    }
    drop(clients);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(tryvox_threads(), 0, "library threads left after free");
    assert_eq!(fd_targets(), before, "descriptors left after free");
}

/// SHOWS: the host's open() fails (EMFILE) although the library promises
/// the host half of what it leaves free: the engines' epoll and eventfd are opened
/// outside the budget (counted after the fact), so with many clients (one per tenant)
/// under a low limit the library takes more than half.
#[test]
fn many_clients_leave_the_host_its_half() {
    let _serial = serial();
    let Ok(spec) = std::env::var(FD_CHILD) else {
        let server = TestServer::start();
        in_child_process("many_clients_leave_the_host_its_half", server.base_url());
        return;
    };
    set_soft_limit(64);
    let host0 = open_fds();
    let free0 = 64 - host0;
    // One client per tenant, each used once on the async path (its engine runs).
    let clients: Vec<Client> = (0..free0 / 2)
        .map(|t| {
            client_for(&spec, |o| {
                o.set_tenant_id(&format!("t{t}")).unwrap();
                o.set_timeout(Duration::from_secs(2)).unwrap();
            })
        })
        .collect();
    let (tx, rx) = mpsc::channel::<Status>();
    let mut queued = 0;
    for (t, c) in clients.iter().enumerate() {
        let tx = tx.clone();
        if c.hangup_async(format!("slow-1500-m{t}"), move |_, r| {
            let _ = tx.send(st(&r));
        })
        .is_ok()
        {
            queued += 1;
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    let ours = open_fds() - host0;
    // The host opens files now: at least half of what was free must be its.
    let mut got = Vec::new();
    let mut failed = None;
    for _ in 0..free0 / 2 {
        match std::fs::File::open("/dev/null") {
            Ok(f) => got.push(f),
            Err(e) => {
                failed = Some(e);
                break;
            }
        }
    }
    drop(tx);
    let _ = rx.iter().take(queued).count();
    assert!(
        failed.is_none(),
        "{free0} free at the start, the library holds {ours} with {} clients; the host got \
         only {} of its half ({}): {:?}",
        clients.len(),
        got.len(),
        free0 / 2,
        failed
    );
}

#[allow(dead_code)]
fn unused(_: TcpStream) {}

/// SHOWS: a forked child that used the client on the blocking path and then frees it
/// keeps that path's keep-alive socket open (and counted in the budget) for the rest of
/// its life. Cause: the client's `Core` is shared (Arc) with the parent's runtime,
/// which is leaked in the child, so `Core` is never dropped there, and with it the
/// child's own `IdleStack` (and address book, log queue) generation value is never
/// dropped: the descriptors it holds leak.
#[test]
fn a_child_that_frees_a_client_it_used_closes_its_connections() {
    let _serial = serial();
    let server = TestServer::start();
    let c = client_for(&server.base_url(), |_| {});
    assert_eq!(st(&c.hangup("ok-pre")), Status::Ok);
    let r = in_fork(Duration::from_secs(20), || {
        let before = fd_targets();
        let s = st(&c.hangup("nf-flat-child"));
        if s != Status::NotFound {
            return Err(format!("child: {s:?}"));
        }
        drop(unsafe { std::ptr::read(&c) });
        let after = fd_targets();
        let new: Vec<&String> = after.iter().filter(|f| !before.contains(f)).collect();
        if !new.is_empty() {
            return Err(format!("left open after free in the child: {new:?}"));
        }
        Ok(())
    });
    assert_eq!(r, Ok(()));
}

/// In a forked child, the gauges count the child's own hangups and connections only:
/// the parent's in flight at the fork never end there.
#[test]
fn a_childs_gauges_count_only_its_own() {
    let _serial = serial();
    let server = TestServer::start();
    let c = client_for(&server.base_url(), |_| {});
    assert_eq!(st(&c.hangup("ok-g0")), Status::Ok);
    let (tx, rx) = mpsc::channel::<Status>();
    for k in 0..4 {
        let tx = tx.clone();
        c.hangup_async(format!("slow-1500-g{k}"), move |_, r| {
            let _ = tx.send(st(&r));
        })
        .unwrap();
    }
    let until = Instant::now() + HANG;
    while c.stats().in_flight < 4 && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(5));
    }
    let r = in_fork(Duration::from_secs(20), || {
        let s = c.stats();
        if (s.in_flight, s.connections_open) != (0, 0) {
            return Err(format!("child at start: {s:?}"));
        }
        let s = st(&c.hangup("nf-flat-g1"));
        if s != Status::NotFound {
            return Err(format!("child hangup: {s:?}"));
        }
        let s = c.stats();
        if s.in_flight != 0 || s.connections_open > 1 {
            return Err(format!("child after its hangup: {s:?}"));
        }
        Ok(())
    });
    assert_eq!(r, Ok(()));
    for _ in 0..4 {
        assert_eq!(rx.recv_timeout(HANG).unwrap(), Status::Ok);
    }
}

/// Forks once, from the first `listed` (or `settled`) call; the child goes on with the
/// sweep.
struct ForkOnce {
    in_settled: bool,
    child: Option<libc::pid_t>,
}

impl ForkOnce {
    fn fork(&mut self) {
        if self.child.is_none() {
            // SAFETY: the child goes on with test code only and leaves by _exit.
            self.child = Some(unsafe { libc::fork() });
        }
    }
}

impl tryvox_core::SweepObserver for ForkOnce {
    fn listed(&mut self, _id: &str) {
        if !self.in_settled {
            self.fork();
        }
    }
    fn settled(&mut self, _id: &str, _r: &HangupResult) {
        if self.in_settled {
            self.fork();
        }
    }
}

/// A sweep whose observer forks (a worker started when a call is listed, or when one is
/// settled), in the child: it goes on with the child's own engine and ends within its
/// deadline; the parent's sweep ends every call.
fn sweep_that_forks(in_settled: bool) {
    let _serial = serial();
    let s = tryvox_sim::spawn(tryvox_sim::Config::default()).unwrap();
    support::seed(&s, 50, "forksweep-", None, None);
    let mut o = Options::new();
    o.set_base_url(&s.base_url).unwrap();
    let c = Client::with_options(
        tryvox_sim::server::DEFAULT_ACCOUNT,
        tryvox_sim::server::DEFAULT_API_KEY,
        &o,
    )
    .unwrap();
    // The parent's engine runs before the fork.
    let _ = c.hangup_many(&["forksweep-warm"], 1);
    let mut observer = ForkOnce {
        in_settled,
        child: None,
    };
    let sweep = tryvox_core::Sweep {
        max_parallel: 4,
        timeout: Some(Duration::from_secs(6)),
        ..tryvox_core::Sweep::default()
    };
    let (_, result) = c.hangup_all_observed(&sweep, &mut observer);
    if observer.child == Some(0) {
        // SAFETY: the child leaves without the parent's exit handlers.
        unsafe { libc::_exit(if result.is_ok() { 0 } else { 3 }) };
    }
    let pid = observer
        .child
        .expect("the observer saw a live call and forked");
    assert!(pid > 0, "fork failed");
    result.expect("the parent's sweep ends every call");
    let ws = wait_child(pid, HANG).expect("the child's sweep (6 s deadline) never ended");
    assert!(
        libc::WIFEXITED(ws) && libc::WEXITSTATUS(ws) == 0,
        "the child's sweep failed (wait status {ws})"
    );
}

/// Found in review of the restructure: a sweep that kept the engine it began with
/// submitted the child's hangups to the parent's engine, whose thread does not exist in
/// the child, and never ended.
#[test]
fn a_sweep_whose_observer_forks_ends_in_the_child() {
    sweep_that_forks(false);
}

/// Found in the second review (and older than the restructure): a fork in `settled`,
/// while a batch of the sweep's hangups runs, left the child waiting for the parent's
/// engine's outcomes forever, past the sweep's deadline.
#[test]
fn a_sweep_whose_observer_forks_while_hangups_run_ends_in_the_child() {
    sweep_that_forks(true);
}
