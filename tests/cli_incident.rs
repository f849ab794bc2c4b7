//! The incident CLI (examples/tryvox-hangup.c) as an operator meets it at 3 a.m., against
//! tryvox-sim: its progress bar read through a pseudo-terminal by a terminal emulator
//! (Python's pyte, Debian's python3-pyte) at 80 and 200 columns; the record of every call
//! (`--all --json`) against the simulator's own; the audit log after `kill -9`; `--dry-run`;
//! the confirmation (refused, accepted, no terminal); Ctrl-C; and a 429 storm.
//!
//! Every run is bounded in time and killed past it; everything is on 127.0.0.1.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{agent, compile_c, scratch, seed};
use tryvox_sim::faults::GlobalFaults;
use tryvox_sim::server::{DEFAULT_ACCOUNT as ACCOUNT, DEFAULT_API_KEY as KEY};
use tryvox_sim::{spawn, Config, Running};

const LIMIT: Duration = Duration::from_secs(120);
/// Debian's Python, where python3-pyte is installed (.ci/run).
const PYTHON: &str = "/usr/bin/python3";

fn cli() -> &'static Path {
    static EXE: OnceLock<PathBuf> = OnceLock::new();
    EXE.get_or_init(|| compile_c("examples/tryvox-hangup.c", "tryvox-hangup-incident"))
}

fn sim_with(faults: GlobalFaults) -> Running {
    spawn(Config {
        faults,
        ..Config::default()
    })
    .unwrap()
}

fn cmd(s: &Running) -> Command {
    support::cli_command(cli(), s)
}

fn wait_bounded(child: &mut Child, what: &str) -> std::process::ExitStatus {
    support::wait_bounded(child, what, LIMIT)
}

/// Waits until `f` holds, at most LIMIT.
fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < LIMIT, "{what}: not within {LIMIT:?}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The simulator's own record of `tenant`'s calls: id -> (status, end_reason).
fn sim_record(s: &Running, tenant: Option<&str>) -> BTreeMap<String, (String, Option<String>)> {
    support::sim_calls(s, tenant)
        .iter()
        .map(|c| {
            (
                c["call_uuid"].as_str().unwrap().to_owned(),
                (
                    c["status"].as_str().unwrap().to_owned(),
                    c["end_reason"].as_str().map(str::to_owned),
                ),
            )
        })
        .collect()
}

fn ended_by_api(record: &BTreeMap<String, (String, Option<String>)>) -> BTreeSet<String> {
    record
        .iter()
        .filter(|(_, (_, reason))| reason.as_deref() == Some("api-hangup"))
        .map(|(id, _)| id.clone())
        .collect()
}

fn live(record: &BTreeMap<String, (String, Option<String>)>) -> usize {
    record
        .values()
        .filter(|(st, _)| st == "ringing" || st == "in-progress")
        .count()
}

fn health(s: &Running) -> Value {
    let mut r = agent()
        .get(format!("{}/_sim/health", s.base_url))
        .call()
        .unwrap();
    serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap()
}

fn hangup_requests(s: &Running) -> usize {
    support::hangup_log(s).len()
}

/// The CLI's stdout, parsed: (per-call objects, the summary).
fn parse_json(stdout: &str) -> (Vec<Value>, Value) {
    let mut calls = Vec::new();
    let mut summary = Value::Null;
    for line in stdout.lines() {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
        if v.get("summary").is_some() {
            assert!(summary.is_null(), "one summary");
            summary = v["summary"].clone();
        } else {
            assert!(summary.is_null(), "records come before the summary: {line}");
            calls.push(v);
        }
    }
    assert!(!summary.is_null(), "no summary in {stdout:?}");
    (calls, summary)
}

/// A CLI on a pseudo-terminal of `cols` columns: stderr always, stdin and stdout when
/// asked (else pipes). What the terminal receives is collected as it comes.
struct OnPty {
    child: Child,
    shown: Arc<Mutex<Vec<u8>>>,
    master: std::fs::File,
    reader: Option<std::thread::JoinHandle<()>>,
    stdout: Option<std::thread::JoinHandle<Vec<u8>>>,
    what: String,
}

impl OnPty {
    fn spawn(mut c: Command, cols: u16, stdin_tty: bool, stdout_tty: bool) -> OnPty {
        let (mut m, mut sl) = (-1, -1);
        let ws = libc::winsize {
            ws_row: 40,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        let rc =
            unsafe { libc::openpty(&mut m, &mut sl, std::ptr::null_mut(), std::ptr::null(), &ws) };
        assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
        for fd in [m, sl] {
            assert_eq!(
                unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) },
                0
            );
        }
        let (master, slave) = unsafe { (OwnedFd::from_raw_fd(m), OwnedFd::from_raw_fd(sl)) };
        // The emulator sees what a terminal shows: no newline translation to care about.
        let mut t: libc::termios = unsafe { std::mem::zeroed() };
        unsafe {
            libc::tcgetattr(slave.as_raw_fd(), &mut t);
            t.c_lflag &= !libc::ECHO;
            libc::tcsetattr(slave.as_raw_fd(), libc::TCSANOW, &t);
        }
        let dup = |fd: &OwnedFd| Stdio::from(fd.try_clone().unwrap());
        c.stderr(dup(&slave));
        c.stdin(if stdin_tty {
            dup(&slave)
        } else {
            Stdio::null()
        });
        c.stdout(if stdout_tty {
            dup(&slave)
        } else {
            Stdio::piped()
        });
        // Ctrl-C's default action, whatever this test process inherited (a shell's
        // background job ignores SIGINT, and so would the CLI).
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut c, || {
                libc::signal(libc::SIGINT, libc::SIG_DFL);
                Ok(())
            });
        }
        let what = format!("{c:?}");
        let mut child = c.spawn().unwrap();
        drop(c);
        drop(slave);
        let stdout = child.stdout.take().map(|mut o| {
            std::thread::spawn(move || {
                let mut v = Vec::new();
                let _ = o.read_to_end(&mut v);
                v
            })
        });
        let shown = Arc::new(Mutex::new(Vec::new()));
        let master = std::fs::File::from(master);
        let mut rd = master.try_clone().unwrap();
        let sink = Arc::clone(&shown);
        let reader = std::thread::spawn(move || {
            let mut buf = [0u8; 65536];
            while let Ok(n) = rd.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        OnPty {
            child,
            shown,
            master,
            reader: Some(reader),
            stdout,
            what,
        }
    }

    fn shown(&self) -> String {
        String::from_utf8_lossy(&self.shown.lock().unwrap()).into_owned()
    }

    fn wait_for(&self, text: &str) {
        eventually(&format!("{text:?} on the terminal"), || {
            self.shown().contains(text)
        });
    }

    fn type_line(&mut self, line: &str) {
        self.master.write_all(line.as_bytes()).unwrap();
        self.master.write_all(b"\n").unwrap();
    }

    /// Waits for the exit: (status, stdout when piped, what the terminal showed).
    fn finish(mut self) -> (i32, String, Vec<u8>) {
        let st = wait_bounded(&mut self.child, &self.what);
        let out = self
            .stdout
            .take()
            .map(|h| String::from_utf8_lossy(&h.join().unwrap()).into_owned())
            .unwrap_or_default();
        // The slave's last copy closed with the child: the reader ends on EIO.
        eventually("the terminal to close", || {
            self.reader.as_ref().is_some_and(|r| r.is_finished())
        });
        let shown = self.shown.lock().unwrap().clone();
        assert!(!String::from_utf8_lossy(&shown).contains(KEY));
        assert!(!out.contains(KEY));
        (st.code().unwrap_or(-1), out, shown)
    }
}

/// Plays `shown` through pyte on a `cols`-column screen, one frame per carriage return
/// (each redraw of the bar starts with one), and reports every frame's bar lines and
/// the final screen. Bar lines are those showing `NN% DONE/TOTAL`.
fn emulate(shown: &[u8], cols: u16) -> (Vec<Vec<(u64, u64)>>, Vec<String>) {
    const SCRIPT: &str = r#"
import json, re, sys
import pyte
cols = int(sys.argv[1])
data = open(sys.argv[2], 'rb').read().decode('utf-8', 'replace')
screen = pyte.Screen(cols, 40)
stream = pyte.Stream(screen)
bar = re.compile(r'(\d+)% (\d+)/(\d+)')
frames = []
for part in re.split(r'(?=\r)', data):
    stream.feed(part)
    lines = [l for l in screen.display if bar.search(l)]
    frames.append([[int(m.group(2)), int(m.group(3))] for m in (bar.search(l) for l in lines)])
print(json.dumps({"frames": frames, "screen": [l.rstrip() for l in screen.display]}))
"#;
    let dir = scratch("cli_incident", &format!("emulate-{cols}"));
    let file = dir.join(format!("shown-{}.bin", std::process::id()));
    std::fs::write(&file, shown).unwrap();
    let out = Command::new(PYTHON)
        .args(["-c", SCRIPT, &cols.to_string()])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "pyte: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let frames = v["frames"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            f.as_array()
                .unwrap()
                .iter()
                .map(|p| (p[0].as_u64().unwrap(), p[1].as_u64().unwrap()))
                .collect()
        })
        .collect();
    let screen = v["screen"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap().to_owned())
        .collect();
    (frames, screen)
}

fn have_pyte() -> bool {
    let ok = Command::new(PYTHON)
        .args(["-c", "import pyte"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            std::env::var("CI").is_err(),
            "python3-pyte is required in CI (.ci/run installs it)"
        );
        eprintln!("\n========== SKIPPED: {PYTHON} cannot import pyte (apt-get install python3-pyte) ==========\n");
    }
    ok
}

/// Checks a sweep's frames: at most one bar line on screen at any time, its done count
/// and total never decreasing, many frames while hangups complete (not one per batch),
/// and a final screen with the summary and no bar.
fn check_frames(frames: &[Vec<(u64, u64)>], screen: &[String], total_at_least: u64) {
    let mut last = (0, 0);
    let mut distinct = BTreeSet::new();
    for (i, f) in frames.iter().enumerate() {
        assert!(f.len() <= 1, "frame {i}: {} bar lines: {f:?}", f.len());
        if let Some(&(done, total)) = f.first() {
            assert!(
                done >= last.0 && total >= last.1,
                "frame {i}: {done}/{total} after {}/{}",
                last.0,
                last.1
            );
            assert!(done <= total, "frame {i}: {done}/{total}");
            last = (done, total);
            if done > 0 && done < total {
                distinct.insert(done);
            }
        }
    }
    assert!(
        last.1 >= total_at_least,
        "the bar's total reached {} (want {total_at_least})",
        last.1
    );
    assert!(
        distinct.len() >= 20,
        "the bar moved through only {} counts: {distinct:?}",
        distinct.len()
    );
    let text = screen.join("\n");
    assert!(
        frames.last().is_some_and(|f| f.is_empty()),
        "a stale bar: {text}"
    );
    assert!(text.contains("summary: --all"), "{text}");
}

#[test]
fn the_bar_tells_the_truth_at_80_and_200_columns() {
    if !have_pyte() {
        return;
    }
    for cols in [80u16, 200] {
        // 10,000 calls; 700 more start while the first listing runs.
        let s = sim_with(GlobalFaults {
            grow_on_list: 700,
            latency: Duration::from_millis(2),
            ..GlobalFaults::default()
        });
        seed(&s, 10_000, "bar-", None, None);
        let mut c = cmd(&s);
        c.args(["--all", "--yes", "-p", "16"]);
        let run = OnPty::spawn(c, cols, false, false);
        let (rc, stdout, shown) = run.finish();
        let text = String::from_utf8_lossy(&shown);
        assert_eq!(rc, 0, "{stdout}\n{text}");
        assert_eq!(
            stdout.lines().filter(|l| l.ends_with(": hung up")).count(),
            10_700,
            "one record line per call"
        );
        let (frames, screen) = emulate(&shown, cols);
        println!(
            "{cols} columns: {} frames; final screen:\n{}",
            frames.len(),
            screen.join("\n").trim_end()
        );
        check_frames(&frames, &screen, 10_700);
        // Never wider than the terminal: every bar frame fits on its line.
        for line in text.split('\r') {
            let frame = line.split("\x1b[K").next().unwrap_or("");
            if frame.contains('%') && frame.contains('/') {
                assert!(
                    frame.chars().count() < cols as usize,
                    "{} chars at {cols} columns: {frame:?}",
                    frame.chars().count()
                );
            }
        }
        assert_eq!(live(&sim_record(&s, None)), 0);
    }
}

#[test]
fn records_and_bar_share_one_terminal() {
    if !have_pyte() {
        return;
    }
    let s = sim_with(GlobalFaults {
        latency: Duration::from_millis(2),
        ..GlobalFaults::default()
    });
    seed(&s, 600, "mix-", None, None);
    let mut c = cmd(&s);
    c.args(["--all", "--yes", "-p", "4"]);
    let run = OnPty::spawn(c, 80, false, true);
    let (rc, _, shown) = run.finish();
    assert_eq!(rc, 0, "{}", String::from_utf8_lossy(&shown));
    let (frames, screen) = emulate(&shown, 80);
    // Records scroll past; the bar is never left behind among them.
    for (i, f) in frames.iter().enumerate() {
        assert!(f.len() <= 1, "frame {i}: {f:?}");
    }
    let text = screen.join("\n");
    assert!(frames.last().is_some_and(|f| f.is_empty()), "{text}");
    assert!(
        text.contains("ended 600, already gone 0, failed 0"),
        "{text}"
    );
    let shown = String::from_utf8_lossy(&shown);
    assert_eq!(shown.matches(": hung up").count(), 600);
}

#[test]
fn all_json_records_every_call_as_the_simulator_does() {
    // Calls end on their own as the sweep runs (1% of requests end one): some hangups
    // find their call gone.
    let s = sim_with(GlobalFaults {
        self_end_rate: 0.02,
        ..GlobalFaults::default()
    });
    seed(&s, 2000, "rec-", Some("t-rec"), None);
    seed(&s, 300, "other-", Some("t-other"), None);
    let out = cmd(&s)
        .args(["--all", "--yes", "--json", "-t", "t-rec", "-p", "32"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (calls, summary) = parse_json(&stdout);
    let record = sim_record(&s, Some("t-rec"));
    assert_eq!(live(&record), 0);
    let mut ended = BTreeSet::new();
    let mut gone = BTreeSet::new();
    for c in &calls {
        let id = c["id"].as_str().unwrap().to_owned();
        match c["status"].as_str().unwrap() {
            "TRYVOX_OK" => {
                assert_eq!(c["http"], 204, "{c}");
                assert_eq!(c["code"], 0);
                assert!(ended.insert(id), "{c}: twice");
            }
            "TRYVOX_NOT_FOUND" | "TRYVOX_ALREADY_ENDED" => {
                assert_eq!(c["http"], 404, "{c}");
                assert!(gone.insert(id), "{c}: twice");
            }
            other => panic!("unexpected {other}: {c}"),
        }
    }
    // Exactly the calls the simulator says an API hangup ended; the gone ones ended on
    // their own by its record.
    assert_eq!(ended, ended_by_api(&record));
    for id in &gone {
        assert_ne!(record[id].1.as_deref(), Some("api-hangup"), "{id}");
    }
    assert_eq!(summary["ended"], ended.len());
    assert_eq!(summary["already_gone"], gone.len());
    assert_eq!(summary["failed"], 0);
    assert_eq!(summary["mode"], "all");
    // The other tenant: untouched.
    assert!(ended_by_api(&sim_record(&s, Some("t-other"))).is_empty());
}

#[test]
fn the_audit_log_survives_kill_9_with_every_line_true() {
    let s = sim_with(GlobalFaults {
        latency: Duration::from_millis(2),
        ..GlobalFaults::default()
    });
    seed(&s, 3000, "aud-", Some("t-aud"), None);
    let dir = scratch("cli_incident", "audit");
    let log = dir.join("audit.jsonl");
    let _ = std::fs::remove_file(&log);
    let mut child = cmd(&s)
        .args([
            "--all",
            "--yes",
            "-t",
            "t-aud",
            "--max-rate",
            "400",
            "--audit-log",
        ])
        .arg(&log)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let lines = |log: &Path| -> usize {
        std::fs::read(log).map_or(0, |b| b.iter().filter(|&&c| c == b'\n').count())
    };
    eventually("200 audit lines", || lines(&log) >= 200);
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    let _ = child.wait();
    let bytes = std::fs::read(&log).unwrap();
    assert!(bytes.ends_with(b"\n"), "no half line at the end");
    let record = sim_record(&s, Some("t-aud"));
    let text = String::from_utf8(bytes).unwrap();
    let mut ids = BTreeSet::new();
    for line in text.lines() {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        let id = v["id"].as_str().unwrap().to_owned();
        assert!(ids.insert(id.clone()), "{id} twice");
        assert_eq!(v["account"], ACCOUNT);
        assert_eq!(v["tenant"], "t-aud");
        assert_eq!(v["mode"], "all");
        let ts = v["ts"].as_str().unwrap();
        assert!(
            ts.len() == 24 && ts.ends_with('Z') && ts.as_bytes()[10] == b'T',
            "{ts}"
        );
        // True: a call it says ended was ended by an API hangup.
        assert_eq!(v["outcome"], "ended", "{line}");
        assert_eq!(v["http"], 204);
        assert_eq!(record[&id].1.as_deref(), Some("api-hangup"), "{line}");
    }
    assert!((200..3000).contains(&ids.len()), "{}", ids.len());
    // The key is never in it.
    assert!(!text.contains(KEY));
}

#[test]
fn dry_run_lists_and_ends_nothing() {
    let s = sim_with(GlobalFaults::default());
    seed(&s, 250, "dry-", None, None);
    // No terminal and no --yes: a dry run needs neither.
    let out = cmd(&s)
        .args(["--all", "--dry-run", "--json"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let (calls, summary) = parse_json(&String::from_utf8_lossy(&out.stdout));
    let listed: BTreeSet<&str> = calls.iter().map(|c| c["id"].as_str().unwrap()).collect();
    assert_eq!(listed.len(), 250);
    assert!(calls.iter().all(|c| c["live"] == true));
    assert_eq!(summary["mode"], "dry-run");
    assert_eq!(summary["found"], 250);
    assert_eq!(summary["ended"], 0);
    let out = cmd(&s)
        .args(["--all", "--dry-run"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.matches(": live\n").count(), 250);
    assert!(text.contains("dry run: 250 live call(s) found, none ended"));
    assert_eq!(hangup_requests(&s), 0, "no DELETE was sent");
    assert_eq!(live(&sim_record(&s, None)), 250);
    // --dry-run goes with --all only.
    let out = cmd(&s).args(["--dry-run", "dry-1"]).output().unwrap();
    assert_eq!(out.status.code(), Some(64));
}

#[test]
fn all_asks_on_a_terminal_and_needs_yes_without_one() {
    let s = sim_with(GlobalFaults::default());
    seed(&s, 40, "ask-", Some("t-ask"), Some("+15550001111"));
    seed(&s, 5, "keep-", Some("t-ask"), Some("+15550002222"));
    // No terminal, no --yes: refused before anything is sent.
    let out = cmd(&s)
        .args(["--all", "-t", "t-ask"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--yes") && err.contains("Nothing was sent"),
        "{err}"
    );
    assert_eq!(hangup_requests(&s), 0);

    // On a terminal, refused: it listed, showed what it found, and sent no hangup.
    for answer in ["n", "", "no", "maybe"] {
        let mut c = cmd(&s);
        c.args(["--all", "-t", "t-ask", "--from", "+15550001111"]);
        let mut run = OnPty::spawn(c, 100, true, false);
        run.wait_for("[y/N] ");
        let prompt = run.shown();
        for want in [
            "About to end 40 live call(s)",
            &format!("account: {ACCOUNT}"),
            "tenant:  t-ask",
            "filters: from=+15550001111",
        ] {
            assert!(prompt.contains(want), "no {want:?} in {prompt:?}");
        }
        run.type_line(answer);
        let (rc, _, shown) = run.finish();
        assert_eq!(rc, 65, "{}", String::from_utf8_lossy(&shown));
        assert!(String::from_utf8_lossy(&shown).contains("nothing was sent"));
        assert_eq!(hangup_requests(&s), 0, "answer {answer:?}");
    }

    // Ctrl-C at the question: the program ends there, nothing sent.
    let mut c = cmd(&s);
    c.args(["--all", "-t", "t-ask"]);
    let run = OnPty::spawn(c, 100, true, false);
    run.wait_for("[y/N] ");
    unsafe { libc::kill(run.child.id() as i32, libc::SIGINT) };
    let (rc, _, _) = run.finish();
    assert_eq!(rc, -1, "killed by SIGINT");
    assert_eq!(hangup_requests(&s), 0);

    // Typed while the calls are being listed: answers nothing. (Listing pages take
    // 1.5 s here, and at least four are asked in turn before the question.)
    let slow = sim_with(GlobalFaults {
        latency: Duration::from_millis(1500),
        ..GlobalFaults::default()
    });
    seed(&slow, 30, "ahead-", None, None);
    let mut c = cmd(&slow);
    c.arg("--all");
    let mut run = OnPty::spawn(c, 100, true, false);
    run.type_line("y");
    run.wait_for("[y/N] ");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        hangup_requests(&slow),
        0,
        "the typed-ahead y answered the question"
    );
    run.type_line("n");
    let (rc, _, shown) = run.finish();
    assert_eq!(rc, 65, "{}", String::from_utf8_lossy(&shown));
    assert_eq!(hangup_requests(&slow), 0);

    // Accepted: ends the 40, not the others.
    let mut c = cmd(&s);
    c.args(["--all", "-t", "t-ask", "--from", "+15550001111"]);
    let mut run = OnPty::spawn(c, 100, true, false);
    run.wait_for("[y/N] ");
    run.type_line("y");
    let (rc, stdout, shown) = run.finish();
    assert_eq!(rc, 0, "{stdout}{}", String::from_utf8_lossy(&shown));
    assert_eq!(stdout.matches(": hung up\n").count(), 40);
    let record = sim_record(&s, Some("t-ask"));
    assert_eq!(ended_by_api(&record).len(), 40);
    assert_eq!(live(&record), 5);
}

#[test]
fn ctrl_c_stops_starting_and_loses_nothing_in_flight() {
    let s = sim_with(GlobalFaults {
        latency: Duration::from_millis(20),
        ..GlobalFaults::default()
    });
    seed(&s, 3000, "int-", None, None);
    let dir = scratch("cli_incident", "ctrl-c");
    let log = dir.join("audit.jsonl");
    let _ = std::fs::remove_file(&log);
    let mut child = cmd(&s)
        .args(["--all", "--yes", "--json", "-p", "32", "--max-rate", "300"])
        .arg("--audit-log")
        .arg(&log)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut v = String::new();
        let mut out = out;
        let _ = out.read_to_string(&mut v);
        v
    });
    eventually("100 hangups", || hangup_requests(&s) >= 100);
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let st = wait_bounded(&mut child, "tryvox-hangup after Ctrl-C");
    let stdout = reader.join().unwrap();
    assert_eq!(st.code(), Some(130), "{stdout}");
    let (calls, summary) = parse_json(&stdout);
    assert_eq!(summary["interrupted"], true);
    assert_eq!(summary["exit"], 130);
    // Nothing in flight lost: every hangup the simulator received is in the record, and
    // every call it ended is recorded as ended, in stdout and in the audit log alike.
    let record = sim_record(&s, None);
    let ended: BTreeSet<String> = calls
        .iter()
        .filter(|c| c["status"] == "TRYVOX_OK")
        .map(|c| c["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ended, ended_by_api(&record));
    assert_eq!(
        calls.len(),
        hangup_requests(&s),
        "one record per hangup sent"
    );
    assert!(live(&record) > 0, "it stopped before the end");
    let audit: BTreeSet<String> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            v["id"].as_str().unwrap().to_owned()
        })
        .collect();
    let printed: BTreeSet<String> = calls
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(audit, printed);
    // Nothing more arrives after the exit.
    let sent = hangup_requests(&s);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(hangup_requests(&s), sent);

    // A second Ctrl-C exits at once, with 130. The first is sent once hangups run, the
    // second right after; the exit comes well before the 3,000 could be done (at 20 a
    // second, 150 s).
    seed(&s, 3000, "int2-", None, None);
    let before = hangup_requests(&s);
    let mut child = cmd(&s)
        .args(["--all", "--yes", "-p", "4", "--max-rate", "20"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    eventually("hangups", || hangup_requests(&s) > before);
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let st = wait_bounded(&mut child, "tryvox-hangup after two Ctrl-C");
    assert_eq!(st.code(), Some(130));
}

#[test]
fn a_429_storm_backs_off_and_says_so() {
    // A server allowing 100 requests a second, answering each in 20 ms: 64 in flight
    // ask for 3,200 a second.
    let faults = GlobalFaults {
        rate_limit: 100,
        retry_after_secs: 1,
        latency: Duration::from_millis(20),
        ..GlobalFaults::default()
    };
    // Fixed parallelism: tryvox_hangup_many keeps 64 in flight whatever the answers.
    let fixed = sim_with(faults.clone());
    seed(&fixed, 500, "st-", None, None);
    let ids: Vec<String> = (0..500).map(|i| format!("st-{i}")).collect();
    let mut o = tryvox_core::Options::new();
    o.set_base_url(&fixed.base_url).unwrap();
    o.set_timeout(Duration::from_secs(30)).unwrap();
    o.set_max_retries(10).unwrap();
    let c = tryvox_core::Client::with_options(ACCOUNT, KEY, &o).unwrap();
    let _ = c.hangup_many(&ids, 64).unwrap();
    let fixed_429 = health(&fixed)["rate_limited"].as_u64().unwrap();

    // The CLI's sweep, 64 at most: halves on 429, climbs back as answers succeed.
    let s = sim_with(faults);
    seed(&s, 500, "st-", None, None);
    let out = cmd(&s)
        .args([
            "--all",
            "--yes",
            "--json",
            "-p",
            "64",
            "--timeout-ms",
            "60000",
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    let (calls, summary) = parse_json(&stdout);
    assert_eq!(calls.len(), 500);
    assert_eq!(live(&sim_record(&s, None)), 0);
    let adaptive_429 = health(&s)["rate_limited"].as_u64().unwrap();
    println!(
        "429s: fixed parallelism 64: {fixed_429}; the sweep's AIMD: {adaptive_429} \
         (summary: {} answers 429, {} back-offs)",
        summary["rate_limited"], summary["backoffs"]
    );
    assert!(
        adaptive_429 < fixed_429,
        "{adaptive_429} 429s, fixed parallelism got {fixed_429}"
    );
    let counted = summary["rate_limited"].as_u64().unwrap();
    assert!(counted > 0 && counted <= adaptive_429, "{summary}");
    assert!(summary["backoffs"].as_u64().unwrap() >= 1, "{summary}");
    // The text summary says it too.
    seed(&s, 300, "st2-", None, None);
    let out = cmd(&s)
        .args(["--all", "--yes", "-p", "64"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("rate limits: ") && err.contains("parallelism halved"),
        "{err}"
    );
}

#[test]
fn ids_mode_reports_http_statuses_and_paces() {
    let s = sim_with(GlobalFaults::default());
    seed(&s, 30, "ids-", None, None);
    let input: String =
        (0..30).map(|i| format!("ids-{i}\n")).collect::<String>() + "nope-1\nbad id!\n";
    let dir = scratch("cli_incident", "ids");
    let log = dir.join("audit.jsonl");
    let _ = std::fs::remove_file(&log);
    let t0 = Instant::now();
    let mut child = cmd(&s)
        .args(["--json", "--max-rate", "50", "--audit-log"])
        .arg(&log)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let took = t0.elapsed();
    assert_eq!(
        out.status.code(),
        Some(3),
        "an invalid id: the first failure"
    );
    let (calls, summary) = parse_json(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(calls.len(), 32);
    for (i, c) in calls.iter().take(30).enumerate() {
        assert_eq!(c["id"], format!("ids-{i}"), "input order");
        assert_eq!(c["http"], 204);
    }
    assert_eq!(calls[30]["http"], 404);
    assert_eq!(calls[31]["status"], "TRYVOX_INVALID_ARGUMENT");
    assert!(calls[31]["http"].is_null());
    assert_eq!(summary["mode"], "ids");
    // 31 starts at 50 a second: the last starts 600 ms after the first at the earliest.
    assert!(took >= Duration::from_millis(600), "{took:?}");
    // One line per id, the invalid one too (not sent).
    let audit = std::fs::read_to_string(&log).unwrap();
    assert_eq!(audit.lines().count(), 32);
    assert!(audit.contains(r#""outcome":"already_gone""#));
    assert_eq!(audit.matches(r#""outcome":"not_sent""#).count(), 1);
    assert_eq!(audit.matches(r#""outcome":"ended""#).count(), 30);
    // A dry run sends nothing to record: --audit-log with it is refused.
    let out = cmd(&s)
        .args(["--all", "--dry-run", "--audit-log"])
        .arg(&log)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
}

#[test]
fn ids_mode_ctrl_c_with_a_repeated_id_records_each_line_truly() {
    // One at a time, each answer 3 s late: Ctrl-C while the first A is in flight. The
    // first A was sent and ended; B and the second A were never sent.
    let s = sim_with(GlobalFaults {
        latency: Duration::from_millis(3000),
        ..GlobalFaults::default()
    });
    seed(&s, 2, "dup-", None, None);
    let child = cmd(&s)
        .args(["--json", "-p", "1", "dup-0", "dup-1", "dup-0"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    eventually("the first hangup", || hangup_requests(&s) >= 1);
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130));
    let (calls, summary) = parse_json(&String::from_utf8_lossy(&out.stdout));
    let lines: Vec<(&str, &str, Option<u64>)> = calls
        .iter()
        .map(|c| {
            (
                c["id"].as_str().unwrap(),
                c["status"].as_str().unwrap(),
                c["http"].as_u64(),
            )
        })
        .collect();
    assert_eq!(
        lines,
        [
            ("dup-0", "TRYVOX_OK", Some(204)),
            ("dup-1", "TRYVOX_BUSY", None),
            ("dup-0", "TRYVOX_BUSY", None),
        ]
    );
    assert_eq!(summary["interrupted"], true);
    assert_eq!(hangup_requests(&s), 1);
}
