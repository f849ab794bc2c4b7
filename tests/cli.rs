//! The incident CLI (examples/tryvox-hangup.c) against tryvox-sim: every exit status of
//! its --help, ids from stdin, --json parsed back, --all with filters (checked against the
//! simulator's own listing), --tenant scoping, and the progress bar, drawn only when
//! stderr is a terminal (a pseudo-terminal from openpty) and never otherwise.
//!
//! Every run is bounded in time and killed past it; everything is on 127.0.0.1.

mod support;

use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::Value;
use support::{agent, c_lib_dir, compile_c, seed, seed_calls};
use tryvox_sim::faults::GlobalFaults;
use tryvox_sim::server::{DEFAULT_ACCOUNT as ACCOUNT, DEFAULT_API_KEY as KEY};
use tryvox_sim::{spawn, Config, Running};

const LIMIT: Duration = Duration::from_secs(60);

/// The CLI, compiled once for this test binary (pedantic C99, warnings as errors).
fn cli() -> &'static Path {
    static EXE: OnceLock<PathBuf> = OnceLock::new();
    EXE.get_or_init(|| compile_c("examples/tryvox-hangup.c", "tryvox-hangup-cli"))
}

fn sim() -> Running {
    spawn(Config::default()).unwrap()
}

/// The CLI with the simulator's account, key and URL in its environment (nothing else
/// of ours: no tenant).
fn cmd(s: &Running) -> Command {
    support::cli_command(cli(), s)
}

/// Waits for `child` at most LIMIT, killing it past that.
fn wait_bounded(child: &mut Child, what: &str) -> std::process::ExitStatus {
    support::wait_bounded(child, what, LIMIT)
}

fn drain(r: Option<impl Read + Send + 'static>) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut v = Vec::new();
        if let Some(mut r) = r {
            let _ = r.read_to_end(&mut v);
        }
        v
    })
}

/// Runs `c` with `stdin` as its standard input (empty: closed at once), bounded in time.
/// Asserts the key never appears in what it printed.
fn run(c: &mut Command, stdin: &[u8]) -> Output {
    let mut child = c
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    let bytes = stdin.to_vec();
    let feeder = std::thread::spawn(move || {
        let _ = input.write_all(&bytes);
    });
    let (so, se) = (drain(child.stdout.take()), drain(child.stderr.take()));
    let status = wait_bounded(&mut child, &format!("{c:?}"));
    let _ = feeder.join();
    let out = Output {
        status,
        stdout: so.join().unwrap(),
        stderr: se.join().unwrap(),
    };
    let text = text(&out);
    assert!(!text.contains(KEY), "{c:?} printed the key");
    out
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn code(out: &Output) -> i32 {
    out.status.code().expect("the CLI died from a signal")
}

fn post(s: &Running, path: &str, body: &str) {
    let r = agent()
        .post(format!("{}{path}", s.base_url))
        .header("content-type", "application/json")
        .send(body.as_bytes())
        .unwrap();
    assert!(r.status().is_success(), "{path}: {}", r.status());
}

/// The simulator's view of one call of `tenant`: (status, end_reason), or None if it
/// has no such call.
fn call(s: &Running, tenant: Option<&str>, id: &str) -> Option<(String, Option<String>)> {
    let mut req = agent()
        .get(format!("{}/{id}", s.calls_url()))
        .header("authorization", format!("Bearer {KEY}"));
    if let Some(t) = tenant {
        req = req.header("x-tenant-id", t);
    }
    let mut r = req.call().unwrap();
    if r.status() == 404 {
        return None;
    }
    let v: Value = serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap();
    Some((
        v["status"].as_str().unwrap().to_owned(),
        v["end_reason"].as_str().map(str::to_owned),
    ))
}

/// Every call of `tenant` whose id starts with `prefix`, as the simulator lists them:
/// (live ids, ids ended by an API hangup), each sorted.
fn listing(s: &Running, tenant: Option<&str>, prefix: &str) -> (Vec<String>, Vec<String>) {
    let (mut live, mut ended) = (Vec::new(), Vec::new());
    for c in support::sim_calls(s, tenant) {
        let id = c["call_uuid"].as_str().unwrap();
        if !id.starts_with(prefix) {
            continue;
        }
        match (c["status"].as_str().unwrap(), c["end_reason"].as_str()) {
            ("ringing" | "in-progress", _) => live.push(id.to_owned()),
            (_, Some("api-hangup")) => ended.push(id.to_owned()),
            _ => {} // ended on its own
        }
    }
    live.sort();
    ended.sort();
    (live, ended)
}

fn names(prefix: &str, range: std::ops::Range<usize>) -> Vec<String> {
    let mut v: Vec<String> = range.map(|i| format!("{prefix}{i}")).collect();
    v.sort();
    v
}

/// Every line of stdout as a JSON object.
fn json_lines(out: &Output) -> Vec<Value> {
    let stdout = String::from_utf8(out.stdout.clone()).expect("--json printed non-UTF-8");
    stdout
        .lines()
        .map(|l| {
            let v: Value =
                serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l:?}"));
            assert!(v.is_object(), "not an object: {l}");
            v
        })
        .collect()
}

/// A listener nothing should connect to: the URL for TRYVOX_BASE_URL, checked at the end.
struct Trap(std::net::TcpListener);

impl Trap {
    fn new() -> Trap {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.set_nonblocking(true).unwrap();
        Trap(l)
    }
    fn url(&self) -> String {
        format!("http://{}", self.0.local_addr().unwrap())
    }
    fn untouched(&self) {
        match self.0.accept() {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            other => panic!("the CLI connected: {other:?}"),
        }
    }
}

#[test]
fn help_documents_every_exit_status() {
    let s = sim();
    let out = run(cmd(&s).arg("--help"), b"");
    assert_eq!(code(&out), 0);
    let help = String::from_utf8_lossy(&out.stdout);
    for word in [
        "Exit status",
        "  0 ",
        "  1, 2 ",
        "  3-63 ",
        "  64 ",
        "  78 ",
        "--all",
        "--parallel",
        "--tenant",
        "--json",
        "--from",
        "--to",
        "--direction",
        "--timeout-ms",
        "--dry-run",
        "--yes",
        "--max-rate",
        "--audit-log",
        "  65 ",
        "  130 ",
        "Ctrl-C",
        "TRYVOX_ACCOUNT_ID",
        "TRYVOX_API_KEY",
        "TRYVOX_BASE_URL",
        "TRYVOX_TENANT_ID",
        "no option for the API key",
        "ETA",
    ] {
        assert!(help.contains(word), "--help lacks {word:?}:\n{help}");
    }
    assert!(out.stderr.is_empty());
}

#[test]
fn exit_codes() {
    let s = sim();
    let ids = seed_calls(&s, 6);
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    let go = |args: &[&str]| {
        let out = run(cmd(&s).args(args), b"");
        println!("--- {args:?} -> {:?}\n{}", out.status.code(), text(&out));
        out
    };
    // 0: every call hung up; then 2 / 1: nothing to end (the first such, in order).
    assert_eq!(code(&go(&[ids[0], ids[1]])), 0);
    let out = go(&[ids[0]]);
    assert_eq!(code(&out), 2, "already ended");
    assert!(String::from_utf8_lossy(&out.stdout).contains("call already ended"));
    assert_eq!(code(&go(&["no-such-call"])), 1, "not found");
    assert_eq!(code(&go(&[ids[0], "no-such-call"])), 2);
    assert_eq!(code(&go(&["no-such-call", ids[0]])), 1);
    // 3..63: a real failure beats "nothing to end", wherever it is; the others are sent.
    let out = go(&["no-such-call", "a/b", ids[2]]);
    assert_eq!(code(&out), 3, "invalid id");
    assert_eq!(call(&s, None, ids[2]).unwrap().0, "completed");
    assert_eq!(code(&go(&["--", "a/b"])), 3, "`--` is not an id");
    post(
        &s,
        &format!("/_sim/calls/{}/faults", ids[3]),
        r#"{"responses":[{"status":403}]}"#,
    );
    assert_eq!(code(&go(&[ids[3], ids[4]])), 5, "forbidden");
    assert_eq!(call(&s, None, ids[4]).unwrap().0, "completed");
    let out = run(
        cmd(&s)
            .env("TRYVOX_API_KEY", "tvx_sk_wrong_key")
            .arg(ids[5]),
        b"",
    );
    assert_eq!(code(&out), 4, "unauthorized: {}", text(&out));
    assert!(!text(&out).contains("tvx_sk_wrong_key"));
    assert!(call(&s, None, ids[5]).unwrap().0 != "completed");
    // 8: --all past its deadline (every answer 300 ms late, a 1 ms sweep).
    let slow = spawn(Config {
        faults: GlobalFaults {
            latency: Duration::from_millis(300),
            ..GlobalFaults::default()
        },
        ..Config::default()
    })
    .unwrap();
    seed(&slow, 3, "slow-", None, None);
    let out = run(
        cmd(&slow).args(["--all", "--yes", "--timeout-ms", "1"]),
        b"",
    );
    assert_eq!(code(&out), 8, "sweep timeout: {}", text(&out));
    assert_eq!(listing(&slow, None, "slow-").0.len(), 3);

    // 64 (usage) and 78 (could not start): nothing is sent, not even a connection.
    let trap = Trap::new();
    let usage: &[&[&str]] = &[
        &["--bogus", ids[5]],
        &[ids[5], "-x"],
        &["-", ids[5]],
        &["--all", ids[5]],
        &["--from", "+14155550100", ids[5]],
        &["--timeout-ms", "100", ids[5]],
        &["--parallel", "0", ids[5]],
        &["--parallel=1025", ids[5]],
        &["-p"],
        &["--all", "--direction", "sideways"],
        &["--all"], // no terminal and no --yes
        &["--dry-run", ids[5]],
        &["--max-rate", "0", ids[5]],
        &["--audit-log", ids[5]],
        &["--tenant", "a b", ids[5]],
        &["--api-key=tvx_sk_on_the_command_line", ids[5]],
        &["--key", "tvx_sk_on_the_command_line", ids[5]],
        &["--account", ACCOUNT, ids[5]],
        &[], // and stdin empty
    ];
    for args in usage {
        let out = run(cmd(&s).env("TRYVOX_BASE_URL", trap.url()).args(*args), b"");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(code(&out), 64, "{args:?}: {}", text(&out));
        assert!(stderr.contains("usage:"), "{args:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{args:?}: {}", text(&out));
        assert!(!stderr.contains("tvx_sk_on_the_command_line"), "{stderr}");
    }
    let start: &[(&str, Option<&str>)] = &[
        ("TRYVOX_ACCOUNT_ID", None),
        ("TRYVOX_API_KEY", None),
        ("TRYVOX_ACCOUNT_ID", Some("a/b")),
        ("TRYVOX_TENANT_ID", Some("a b")),
        ("TRYVOX_BASE_URL", Some("not a url")),
        ("TRYVOX_BASE_URL", Some("http://192.0.2.1")), // plain http off loopback
    ];
    for (var, value) in start {
        let mut c = cmd(&s);
        c.env("TRYVOX_BASE_URL", trap.url()).arg(ids[5]);
        match value {
            Some(v) => c.env(var, v),
            None => c.env_remove(var),
        };
        let out = run(&mut c, b"");
        assert_eq!(code(&out), 78, "{var}={value:?}: {}", text(&out));
        assert!(out.stdout.is_empty());
    }
    trap.untouched();
    // Still live: nothing above reached it.
    assert_eq!(code(&go(&[ids[5]])), 0);
}

#[test]
fn ids_from_stdin() {
    let s = sim();
    seed(&s, 40, "in-", None, None);
    let mut input = String::from("\n  \n");
    for i in 0..20 {
        // Blank lines, spaces, tabs and CRLF around the ids are ignored.
        input.push_str(&format!("  in-{i}\t\r\n\n"));
    }
    let out = run(&mut cmd(&s), input.as_bytes());
    assert_eq!(code(&out), 0, "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 20, "{stdout}");
    for (i, l) in lines.iter().enumerate() {
        assert_eq!(*l, format!("in-{i}: hung up"));
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("summary: 20 call(s)"), "{stderr}");
    assert!(
        stderr.contains("TRYVOX_OK") && stderr.contains("p99"),
        "{stderr}"
    );
    assert!(
        !stderr.contains('\r') && !stderr.contains("ETA"),
        "{stderr}"
    );

    // `-` reads stdin too; the ids without a trailing newline.
    let input: Vec<String> = (20..40).map(|i| format!("in-{i}")).collect();
    let out = run(cmd(&s).args(["-p", "4", "-"]), input.join("\n").as_bytes());
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 20);
    let (live, ended) = listing(&s, None, "in-");
    assert!(live.is_empty(), "{live:?}");
    assert_eq!(ended, names("in-", 0..40));

    // Again: every one already ended (2); arguments win over stdin (not read).
    let out = run(&mut cmd(&s), b"in-0\nin-1\n");
    assert_eq!(code(&out), 2);
    let out = run(cmd(&s).arg("no-such-call"), b"in-0\n");
    assert_eq!(code(&out), 1, "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 1);
    // Only blank lines: no id, a usage error.
    let out = run(&mut cmd(&s), b"\n \n\t\n");
    assert_eq!(code(&out), 64, "{}", text(&out));
}

#[test]
fn json_output() {
    let s = sim();
    seed(&s, 4, "j-", None, None);
    post(&s, "/_sim/calls/j-1/caller-hangup", "");
    // Ids that need escaping: a quote, a backslash, a control character, a byte that is
    // not UTF-8. They are invalid ids: reported, not sent.
    let mut input = b"j-0\nj-1\nno-such-call\nbad\"q\\uote\x01\n".to_vec();
    input.extend_from_slice(b"bad-\xff\nj-2\n");
    let out = run(cmd(&s).args(["--json", "--parallel", "2"]), &input);
    println!("{}", text(&out));
    assert_eq!(code(&out), 3, "{}", text(&out));
    let lines = json_lines(&out);
    assert_eq!(lines.len(), 7, "six calls and the summary");
    // "http": the HTTP status the library saw, null for an id never sent.
    let want = [
        ("j-0", "TRYVOX_OK", 0, Some(204)),
        ("j-1", "TRYVOX_ALREADY_ENDED", 2, Some(404)),
        ("no-such-call", "TRYVOX_NOT_FOUND", 1, Some(404)),
        ("bad\"q\\uote\u{1}", "TRYVOX_INVALID_ARGUMENT", 3, None),
        ("bad-\u{fffd}", "TRYVOX_INVALID_ARGUMENT", 3, None),
        ("j-2", "TRYVOX_OK", 0, Some(204)),
    ];
    for (v, (id, status, code, http)) in lines.iter().zip(want) {
        assert_eq!(v["id"], id, "{v}");
        assert_eq!(v["status"], status, "{v}");
        assert_eq!(v["code"], code, "{v}");
        assert_eq!(v["http"].as_u64(), http, "{v}");
        assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
    }
    assert_eq!(lines[2]["message"], "call not found");
    // What the simulator did matches.
    assert_eq!(
        call(&s, None, "j-0").unwrap(),
        ("completed".into(), Some("api-hangup".into()))
    );
    assert_eq!(
        call(&s, None, "j-2").unwrap().1.as_deref(),
        Some("api-hangup")
    );
    assert_ne!(
        call(&s, None, "j-1").unwrap().1.as_deref(),
        Some("api-hangup")
    );
    let (live, _) = listing(&s, None, "j-");
    assert_eq!(live, ["j-3"]);
    // The summary: the counts by status, the exit status, the client's statistics.
    let sum = &lines[6]["summary"];
    assert_eq!(sum["mode"], "ids");
    assert_eq!(sum["calls"], 6);
    assert_eq!(sum["exit"], 3);
    assert_eq!(
        sum["by_status"],
        serde_json::json!({"TRYVOX_OK": 2, "TRYVOX_NOT_FOUND": 1,
            "TRYVOX_ALREADY_ENDED": 1, "TRYVOX_INVALID_ARGUMENT": 2})
    );
    assert_eq!(sum["stats"]["attempts"], 4, "{sum}");
    assert!(sum["stats"]["latency_p50_us"].as_u64().unwrap() > 0);
    assert!(sum["stats"]["latency_p99_us"].as_u64().is_some());
    assert_eq!(sum["stats"]["retries"], 0);
    // Nothing on stderr (stderr is not a terminal: no bar; the summary is on stdout).
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn all_ends_exactly_what_the_filters_select() {
    let s = sim();
    seed(&s, 150, "f-", None, Some("+15550001111"));
    seed(&s, 5, "g-", None, None);
    let out = run(
        cmd(&s).args([
            "--all",
            "--yes",
            "--from",
            "+15550001111",
            "--json",
            "-p",
            "8",
        ]),
        b"",
    );
    assert_eq!(code(&out), 0, "{}", text(&out));
    let lines = json_lines(&out);
    // One record per call ended, then the summary.
    assert_eq!(lines.len(), 151);
    assert!(lines[..150]
        .iter()
        .all(|l| l["status"] == "TRYVOX_OK" && l["http"] == 204));
    let sum = &lines[150]["summary"];
    assert_eq!(sum["mode"], "all");
    assert_eq!(sum["status"], "TRYVOX_OK");
    assert_eq!(sum["ended"], 150, "{sum}");
    assert_eq!(sum["failed"], 0);
    assert_eq!(sum["still_live"], 0);
    assert!(sum["listings"].as_u64().unwrap() >= 2);
    assert!(sum["stats"]["attempts"].as_u64().unwrap() >= 150, "{sum}");
    let (live, ended) = listing(&s, None, "f-");
    assert!(live.is_empty());
    assert_eq!(ended.len(), 150);
    let (live, ended) = listing(&s, None, "g-");
    assert_eq!(live, names("g-", 0..5));
    assert!(ended.is_empty());

    // Seeded calls go to +1415 and seven digits of their index: --to picks g-3 alone
    // (f-3 has the same number, but is gone already).
    let out = run(cmd(&s).args(["--all", "-y", "--to", "+14150000003"]), b"");
    assert_eq!(code(&out), 0, "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.starts_with("g-3: hung up\nended 1, already gone 0, failed 0, still live 0"),
        "{stdout}"
    );
    assert_eq!(listing(&s, None, "g-").1, ["g-3"]);
    // The simulator's calls are all outbound: --direction inbound selects none.
    let out = run(
        cmd(&s).args(["--all", "--yes", "--direction=inbound", "--json"]),
        b"",
    );
    assert_eq!(code(&out), 0);
    assert_eq!(json_lines(&out)[0]["summary"]["ended"], 0);
    assert_eq!(listing(&s, None, "g-").0.len(), 4);
    // No filter: the rest.
    let out = run(
        cmd(&s).args(["--all", "--yes", "--direction", "outbound"]),
        b"",
    );
    assert_eq!(code(&out), 0);
    assert!(listing(&s, None, "g-").0.is_empty());
}

#[test]
fn tenant_scoping() {
    let s = sim();
    seed(&s, 3, "t1-", Some("t1"), None);
    seed(&s, 3, "t2-", Some("t2"), None);
    seed(&s, 3, "t0-", None, None);
    // --all --tenant t1 ends t1's calls and nobody else's.
    let out = run(
        cmd(&s).args(["--all", "--yes", "--tenant", "t1", "--json"]),
        b"",
    );
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert_eq!(json_lines(&out)[3]["summary"]["ended"], 3);
    assert_eq!(listing(&s, Some("t1"), "t1-").1, names("t1-", 0..3));
    assert_eq!(listing(&s, Some("t2"), "t2-").0, names("t2-", 0..3));
    assert_eq!(listing(&s, None, "t0-").0, names("t0-", 0..3));
    // --tenant overrides TRYVOX_TENANT_ID: t2's call is not found from t1.
    let out = run(
        cmd(&s)
            .env("TRYVOX_TENANT_ID", "t2")
            .args(["--tenant=t1", "t2-0"]),
        b"",
    );
    assert_eq!(code(&out), 1, "{}", text(&out));
    assert_eq!(call(&s, Some("t2"), "t2-0").unwrap().1, None);
    // TRYVOX_TENANT_ID alone scopes the ids; without a tenant, t2's calls are not seen.
    let out = run(cmd(&s).args(["t2-0"]), b"");
    assert_eq!(code(&out), 1);
    let out = run(
        cmd(&s)
            .env("TRYVOX_TENANT_ID", "t2")
            .args(["-t", "t2", "t2-0"]),
        b"",
    );
    assert_eq!(code(&out), 0, "{}", text(&out));
    let out = run(cmd(&s).env("TRYVOX_TENANT_ID", "t2").arg("t2-1"), b"");
    assert_eq!(code(&out), 0, "{}", text(&out));
    let out = run(cmd(&s).arg("t0-0"), b"");
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert_eq!(listing(&s, Some("t2"), "t2-").0, ["t2-2"]);
    assert_eq!(listing(&s, None, "t0-").0, ["t0-1", "t0-2"]);
}

/// A pseudo-terminal: (master, slave).
fn openpty() -> (OwnedFd, OwnedFd) {
    let (mut m, mut s) = (-1, -1);
    let rc = unsafe {
        libc::openpty(
            &mut m,
            &mut s,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
    // Close-on-exec, so that CLIs other tests start meanwhile do not keep the slave open.
    for fd in [m, s] {
        assert_eq!(
            unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) },
            0
        );
    }
    unsafe { (OwnedFd::from_raw_fd(m), OwnedFd::from_raw_fd(s)) }
}

/// Runs the CLI with `args`, stderr on a pseudo-terminal and stdin `input`; returns (exit status,
/// stdout, what the terminal showed).
fn run_on_pty(s: &Running, args: &[&str], input: &[u8]) -> (i32, String, String) {
    let mut c = cmd(s);
    c.args(args);
    let (master, slave) = openpty();
    let mut child = c
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(slave))
        .spawn()
        .unwrap();
    let what = format!("{c:?}");
    drop(c); // it holds our copy of the slave: the reader sees EIO only once it is closed
    let mut stdin = child.stdin.take().unwrap();
    let bytes = input.to_vec();
    let feeder = std::thread::spawn(move || {
        let _ = stdin.write_all(&bytes);
    });
    let so = drain(child.stdout.take());
    // Reads until the last slave descriptor closes (EIO) when the child exits.
    let (tx, term) = std::sync::mpsc::channel();
    let mut master = std::fs::File::from(master);
    std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = master.read_to_end(&mut v);
        let _ = tx.send(v);
    });
    let status = wait_bounded(&mut child, &what);
    let _ = feeder.join();
    let stdout = String::from_utf8_lossy(&so.join().unwrap()).into_owned();
    let shown = term
        .recv_timeout(Duration::from_secs(10))
        .expect("the terminal stayed open after the CLI exited");
    let shown = String::from_utf8_lossy(&shown).into_owned();
    assert!(!shown.contains(KEY) && !stdout.contains(KEY));
    (status.code().unwrap(), stdout, shown)
}

#[test]
fn progress_bar_only_on_a_terminal() {
    let s = sim();
    seed(&s, 2500, "pb-", None, None);
    let ids: Vec<String> = (0..2500).map(|i| format!("pb-{i}")).collect();
    let input = ids[..1200].join("\n");
    let (rc, stdout, shown) = run_on_pty(&s, &["-p", "16"], input.as_bytes());
    println!("--- terminal:\n{shown:?}");
    assert_eq!(rc, 0, "{shown}");
    assert_eq!(stdout.lines().count(), 1200);
    // The bar: redrawn in place, with the count, a percentage, a rate and an ETA; it
    // reaches 100% and the summary follows it.
    for want in [
        "\r[",
        "0/1200",
        "1200/1200",
        "100%",
        "/s",
        "ETA ",
        "summary:",
    ] {
        assert!(
            shown.contains(want),
            "no {want:?} on the terminal: {shown:?}"
        );
    }
    assert!(shown.find("1200/1200").unwrap() < shown.find("summary:").unwrap());

    // --json: the bar still goes to the terminal, stdout stays pure JSON lines.
    let input = ids[1200..1300].join("\n");
    let (rc, stdout, shown) = run_on_pty(&s, &["--json"], input.as_bytes());
    assert_eq!(rc, 0);
    assert!(
        shown.contains("100/100") && shown.contains("ETA"),
        "{shown:?}"
    );
    assert!(stdout
        .lines()
        .all(|l| serde_json::from_str::<Value>(l).is_ok()));
    assert!(!stdout.contains('\r'));

    // --all draws its bar from the sweep's progress callback.
    let (rc, stdout, shown) = run_on_pty(&s, &["--all", "--yes", "-p", "64"], b"");
    assert_eq!(rc, 0, "{stdout}{shown}");
    assert!(
        stdout.lines().last().unwrap().starts_with("ended 1200,"),
        "{stdout}"
    );
    assert_eq!(
        stdout.lines().count(),
        1201,
        "a record per call, then the counts"
    );
    for want in ["\r[", "100%", "/s", "ETA", "listing"] {
        assert!(
            shown.contains(want),
            "no {want:?} on the terminal: {shown:?}"
        );
    }

    // --no-progress: the summary alone on the terminal.
    seed(&s, 5, "np-", None, None);
    let (rc, _, shown) = run_on_pty(&s, &["--no-progress", "np-0"], b"");
    assert_eq!(rc, 0);
    assert!(
        shown.contains("summary:") && !shown.contains("ETA"),
        "{shown:?}"
    );

    // Stderr not a terminal: no bar at all, only the summary.
    let out = run(cmd(&s).args(["np-1", "np-2"]), b"");
    assert_eq!(code(&out), 0);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.starts_with("summary: 2 call(s)"), "{stderr:?}");
    assert!(
        !stderr.contains('\r') && !stderr.contains("ETA") && !stderr.contains('['),
        "{stderr:?}"
    );
    let out = run(cmd(&s).args(["--all", "--yes"]), b"");
    assert_eq!(code(&out), 0);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.starts_with("summary: --all"), "{stderr:?}");
    assert!(
        !stderr.contains('\r') && !stderr.contains("ETA"),
        "{stderr:?}"
    );
}

#[test]
fn a_reader_that_goes_away_or_a_closed_stdout_stops_no_hangup() {
    // `tryvox-hangup < ids | head -2`: the reader leaves after two lines. Every call must
    // still be ended (no SIGPIPE half way), and the exit status says the output failed.
    let s = sim();
    seed(&s, 3000, "pipe-", None, None);
    let ids = names("pipe-", 0..3000).join("\n");
    let mut child = cmd(&s)
        .arg("--no-progress")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let feeder = std::thread::spawn(move || {
        let _ = stdin.write_all(ids.as_bytes());
    });
    {
        let mut out = child.stdout.take().unwrap();
        let mut first = [0u8; 64];
        let _ = out.read(&mut first); // the first lines, then the reader goes away
    }
    let status = wait_bounded(&mut child, "the CLI with its reader gone");
    feeder.join().unwrap();
    assert_eq!(status.code(), Some(74), "{status:?}");
    let (live, ended) = listing(&s, None, "pipe-");
    assert!(live.is_empty(), "{} calls left live", live.len());
    assert_eq!(ended.len(), 3000);

    // stdout closed (`>&-`): the output must not land in the library's connection.
    seed(&s, 500, "closed-", None, None);
    let list = names("closed-", 0..500).join(" ");
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!("exec \"$CLI\" --no-progress {list} >&-"))
        .env("CLI", cli())
        .env("TRYVOX_BASE_URL", &s.base_url)
        .env("TRYVOX_ACCOUNT_ID", ACCOUNT)
        .env("TRYVOX_API_KEY", KEY)
        .env("LD_LIBRARY_PATH", c_lib_dir())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(0), "{status:?}");
    let (live, ended) = listing(&s, None, "closed-");
    assert!(live.is_empty(), "{} calls left live", live.len());
    assert_eq!(ended.len(), 500);
}
