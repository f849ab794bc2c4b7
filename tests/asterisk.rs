//! res_tryvox inside a real, running Asterisk 22 (built from ../shared/vendor by
//! asterisk/build-asterisk.sh, cached under target/asterisk), against the simulator:
//! every outcome is checked against the simulator's own record. Asterisk is driven the
//! way an administrator and a dialer drive it: AMI on 127.0.0.1, `asterisk -rx`, and
//! dialplan run on Local channels.
//!
//! Where the vendored tarball is missing (a user's clone), each test prints a loud
//! SKIPPED line; with CI=true it fails.

mod support;

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use support::{agent, free_port, hangup_log, scratch, seed_calls, target_dir};
use tryvox_sim::server::{spawn, Config, DEFAULT_ACCOUNT as ACCOUNT, DEFAULT_API_KEY as KEY};

const SECOND_KEY: &str = "tvx_sk_test_rotated_7Q2";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// One Asterisk at a time: each test starts its own, and two would fight for the CPUs.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// The installed Asterisk tree and the module built against it, made once per test run;
/// None (after a loud SKIPPED line) where the vendored source is missing, outside CI.
fn built() -> Option<&'static (PathBuf, PathBuf)> {
    static BUILT: OnceLock<Option<(PathBuf, PathBuf)>> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let out = Command::new(root().join("asterisk/build-asterisk.sh"))
                .stderr(Stdio::inherit())
                .output()
                .unwrap();
            if out.status.code() == Some(3) {
                assert!(
                    std::env::var("CI").is_err(),
                    "the vendored Asterisk source is required in CI (../shared/vendor)"
                );
                eprintln!(
                    "\n============ SKIPPED: res_tryvox tests: ../shared/vendor/asterisk-22.10.1.tar.xz is missing ============\n"
                );
                return None;
            }
            assert!(out.status.success(), "building Asterisk failed");
            let ast = PathBuf::from(String::from_utf8(out.stdout).unwrap().trim());
            // The module, against that tree's headers and this run's static library.
            let status = Command::new("make")
                .current_dir(root())
                .args(["--no-print-directory", "asterisk-module"])
                .arg(format!("ASTERISK_INCLUDE={}", ast.join("usr/include").display()))
                .arg(format!(
                    "TRYVOX_A={}",
                    target_dir().join("libtryvox.a").display()
                ))
                .status()
                .unwrap();
            assert!(status.success(), "building res_tryvox.so failed");
            Some((ast, root().join("target/asterisk/res_tryvox.so")))
        })
        .as_ref()
}

/// One AMI message: its header lines in order.
#[derive(Clone, Debug)]
struct Msg(Vec<(String, String)>);

impl Msg {
    fn get(&self, k: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(k))
            .map(|(_, v)| v.as_str())
    }
    fn all(&self, k: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(k))
            .map(|(_, v)| v.as_str())
            .collect()
    }
    fn text(&self) -> String {
        self.0.iter().map(|(k, v)| format!("{k}: {v}\n")).collect()
    }
}

/// An AMI session: a reader thread files every message; actions wait for theirs.
struct Ami {
    out: TcpStream,
    seen: Arc<(Mutex<Vec<Msg>>, Condvar)>,
    next: usize,
}

impl Ami {
    fn connect(port: u16) -> Ami {
        let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let seen: Arc<(Mutex<Vec<Msg>>, Condvar)> = Arc::default();
        let (r, seen2) = (s.try_clone().unwrap(), Arc::clone(&seen));
        std::thread::spawn(move || {
            let mut r = BufReader::new(r);
            let mut line = String::new();
            let _ = r.read_line(&mut line); // the banner
            let mut cur = Vec::new();
            loop {
                line.clear();
                match r.read_line(&mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
                let l = line.trim_end_matches(['\r', '\n']);
                if l.is_empty() {
                    if !cur.is_empty() {
                        let (m, cv) = &*seen2;
                        m.lock().unwrap().push(Msg(std::mem::take(&mut cur)));
                        cv.notify_all();
                    }
                } else if let Some((k, v)) = l.split_once(": ") {
                    cur.push((k.to_owned(), v.to_owned()));
                } else if let Some(k) = l.strip_suffix(':') {
                    cur.push((k.to_owned(), String::new()));
                }
            }
        });
        let mut a = Ami {
            out: s,
            seen,
            next: 0,
        };
        let r = a.action(&[
            ("Action", "Login"),
            ("Username", "tv"),
            ("Secret", "tvsecret"),
        ]);
        assert_eq!(r.get("Response"), Some("Success"), "{}", r.text());
        a
    }

    /// Sends an action without waiting; returns its ActionID.
    fn send(&mut self, kv: &[(&str, &str)]) -> String {
        self.next += 1;
        let id = format!("t{}", self.next);
        let mut s = String::new();
        for (k, v) in kv {
            s += &format!("{k}: {v}\r\n");
        }
        s += &format!("ActionID: {id}\r\n\r\n");
        self.out.write_all(s.as_bytes()).unwrap();
        id
    }

    /// How many messages have arrived so far (for `wait_from`).
    fn mark(&self) -> usize {
        self.seen.0.lock().unwrap().len()
    }

    /// The first message matching `f` (searching everything received so far, then
    /// waiting up to `limit`).
    fn wait(&self, limit: Duration, f: impl Fn(&Msg) -> bool) -> Msg {
        self.wait_from(0, limit, f)
    }

    /// As `wait`, among the messages that arrived after `mark`.
    fn wait_from(&self, mark: usize, limit: Duration, f: impl Fn(&Msg) -> bool) -> Msg {
        let deadline = Instant::now() + limit;
        let (m, cv) = &*self.seen;
        let mut g = m.lock().unwrap();
        loop {
            if let Some(x) = g[mark.min(g.len())..].iter().find(|x| f(x)) {
                return x.clone();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "no such AMI message within {limit:?}");
            g = cv.wait_timeout(g, left).unwrap().0;
        }
    }

    fn events(&self, name: &str) -> Vec<Msg> {
        self.seen
            .0
            .lock()
            .unwrap()
            .iter()
            .filter(|m| m.get("Event") == Some(name))
            .cloned()
            .collect()
    }

    fn action(&mut self, kv: &[(&str, &str)]) -> Msg {
        let id = self.send(kv);
        self.wait(Duration::from_secs(60), |m| {
            m.get("ActionID") == Some(id.as_str()) && m.get("Response").is_some()
        })
    }

    /// A CLI command through AMI's Command action: its output lines.
    fn command(&mut self, cmd: &str) -> Vec<String> {
        let r = self.action(&[("Action", "Command"), ("Command", cmd)]);
        assert_eq!(r.get("Response"), Some("Success"), "{cmd}: {}", r.text());
        r.all("Output").into_iter().map(str::to_owned).collect()
    }

    /// Runs dialplan `exten@tv` on a Local channel with these variables.
    fn originate(&mut self, exten: &str, vars: &[(&str, &str)]) {
        let chan = format!("Local/{exten}@tv");
        let vars: Vec<String> = vars.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let mut kv = vec![
            ("Action", "Originate"),
            ("Channel", chan.as_str()),
            ("Application", "Wait"),
            ("Data", "120"),
            ("Async", "true"),
        ];
        for v in &vars {
            kv.push(("Variable", v.as_str()));
        }
        let r = self.action(&kv);
        assert_eq!(r.get("Response"), Some("Success"), "{}", r.text());
    }
}

impl Drop for Ami {
    fn drop(&mut self) {
        // The reader thread holds a clone: shut the socket so the session ends.
        let _ = self.out.shutdown(std::net::Shutdown::Both);
    }
}

/// How to run `asterisk -rx` against one test's Asterisk (cloned into threads).
#[derive(Clone)]
struct Console {
    bin: PathBuf,
    conf: PathBuf,
    lib: PathBuf,
}

impl Console {
    /// `asterisk -C CONF -rx CMD`.
    fn run(&self, cmd: &str) -> std::process::Output {
        Command::new(&self.bin)
            .arg("-C")
            .arg(&self.conf)
            .arg("-rx")
            .arg(cmd)
            .env("LD_LIBRARY_PATH", &self.lib)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }
}

/// A running Asterisk of one test, with its own directories, config and AMI port;
/// stopped by its PID when dropped.
struct Asterisk {
    dir: PathBuf,
    child: Child,
    console: Console,
    ami_port: u16,
    /// Everything the CLI printed to the test, searched for the key at the end.
    outputs: Vec<String>,
}

const DIALPLAN: &str = r#"[tv]
; TRYVOX_HANGUP on call ${ID}: the outcome as a UserEvent.
exten => hangup,1,Set(R=${TRYVOX_HANGUP(${ID})})
 same => n,UserEvent(TryvoxTest,ID: ${ID},R: ${R},E: ${TRYVOX_ERROR},H: ${TRYVOX_HTTP_STATUS})
 same => n,Hangup()
; TRYVOX_LIMIT(${ID}) = ${SECS}, then = ${SECS2} if set; the channel stays up ${HOLD} s.
; T is the time (ms since the epoch) just before each write.
exten => limit,1,Answer()
 same => n,Set(T=${STRFTIME(,,%s%3q)})
 same => n,Set(TRYVOX_LIMIT(${ID})=${SECS})
 same => n,UserEvent(TryvoxLimitSet,ID: ${ID},T: ${T},LEFT: ${TRYVOX_LIMIT(${ID})},E: ${TRYVOX_ERROR})
 same => n,GotoIf($["${SECS2}" = ""]?hold)
 same => n,Set(T=${STRFTIME(,,%s%3q)})
 same => n,Set(TRYVOX_LIMIT(${ID})=${SECS2})
 same => n,UserEvent(TryvoxLimitSet2,ID: ${ID},T: ${T},LEFT: ${TRYVOX_LIMIT(${ID})})
 same => n(hold),Wait(${HOLD})
 same => n,Hangup()
"#;

impl Asterisk {
    /// Starts Asterisk with res_tryvox configured by `tryvox_conf` (loaded at start
    /// unless `load` is false).
    fn start(name: &str, tryvox_conf: &str, load: bool) -> Option<Asterisk> {
        let (ast, module) = built()?;
        let dir = scratch("asterisk", name);
        let ami_port = free_port();
        for d in ["etc", "modules", "lib", "spool", "run", "log"] {
            std::fs::create_dir_all(dir.join(d)).unwrap();
        }
        let mods = ast.join("usr/lib/asterisk/modules");
        for m in std::fs::read_dir(&mods).unwrap() {
            let m = m.unwrap().path();
            std::os::unix::fs::symlink(&m, dir.join("modules").join(m.file_name().unwrap()))
                .unwrap();
        }
        std::os::unix::fs::symlink(module, dir.join("modules/res_tryvox.so")).unwrap();
        // Its documentation, where `make install-asterisk-module` puts it.
        let docs = ast.join("var/lib/asterisk/documentation/thirdparty");
        std::fs::create_dir_all(&docs).unwrap();
        std::fs::copy(
            root().join("asterisk/res_tryvox-en_US.xml"),
            docs.join("res_tryvox-en_US.xml"),
        )
        .unwrap();
        let d = dir.display();
        let conf = |f: &str, text: String| std::fs::write(dir.join("etc").join(f), text).unwrap();
        conf(
            "asterisk.conf",
            format!(
                "[directories]\nastetcdir => {d}/etc\nastmoddir => {d}/modules\n\
                 astvarlibdir => {d}/lib\nastdbdir => {d}/lib\nastkeydir => {d}/lib\n\
                 astdatadir => {}\nastagidir => {d}/lib\nastspooldir => {d}/spool\n\
                 astrundir => {d}/run\nastlogdir => {d}/log\nastsbindir => {}\n\
                 [options]\nverbose = 5\ndebug = 5\n",
                ast.join("var/lib/asterisk").display(),
                ast.join("usr/sbin").display()
            ),
        );
        let mut modules = String::from("[modules]\nautoload = no\n");
        for m in [
            "pbx_config",
            "app_userevent",
            "res_clioriginate",
            "func_strings",
            "func_logic",
        ] {
            modules += &format!("load => {m}.so\n");
        }
        if load {
            modules += "load => res_tryvox.so\n";
        }
        conf("modules.conf", modules);
        conf(
            "manager.conf",
            format!(
                "[general]\nenabled = yes\nport = {ami_port}\nbindaddr = 127.0.0.1\n\n\
                 [tv]\nsecret = tvsecret\ndeny = 0.0.0.0/0.0.0.0\npermit = 127.0.0.1/255.255.255.255\n\
                 read = all\nwrite = all\n"
            ),
        );
        // The full log at debug level: the key must never appear in it.
        conf(
            "logger.conf",
            "[logfiles]\nfull => notice,warning,error,debug,verbose\n".into(),
        );
        conf("extensions.conf", DIALPLAN.into());
        conf("tryvox.conf", tryvox_conf.into());
        let console = Console {
            bin: ast.join("usr/sbin/asterisk"),
            conf: dir.join("etc/asterisk.conf"),
            lib: ast.join("usr/lib"),
        };
        // The kernel kills Asterisk if this test's thread dies first (a CI timeout
        // leaves none behind).
        let mut cmd = Command::new(&console.bin);
        support::die_with_parent(&mut cmd)
            .arg("-C")
            .arg(&console.conf)
            .arg("-f")
            .env("LD_LIBRARY_PATH", &console.lib)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = cmd.spawn().unwrap();
        let mut a = Asterisk {
            dir,
            child,
            console,
            ami_port,
            outputs: Vec::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            assert!(
                a.child.try_wait().unwrap().is_none(),
                "Asterisk exited at start; see {}",
                a.dir.join("log/full").display()
            );
            if a.try_rx("core waitfullybooted").is_some() {
                break;
            }
            assert!(Instant::now() < deadline, "Asterisk did not boot");
            std::thread::sleep(Duration::from_millis(100));
        }
        Some(a)
    }

    fn try_rx(&self, cmd: &str) -> Option<String> {
        let out = self.console.run(cmd);
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `asterisk -rx CMD`: its output (a failed command's too).
    fn rx(&mut self, cmd: &str) -> String {
        let out = self.console.run(cmd);
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        self.outputs.push(text.clone());
        text
    }

    fn ami(&self) -> Ami {
        Ami::connect(self.ami_port)
    }

    fn set_conf(&self, text: &str) {
        std::fs::write(self.dir.join("etc/tryvox.conf"), text).unwrap();
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("log/full")).unwrap_or_default()
    }

    /// Waits (10 s at most) for `text` in the log: Asterisk's logger thread writes the
    /// file after the command that logged has returned.
    fn log_shows(&self, text: &str) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if self.log().contains(text) {
                return true;
            }
            if Instant::now() >= deadline {
                eprintln!("the log lacks {text:?}:\n{}", self.log());
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The log once its writer has caught up (its size unchanged for 300 ms).
    fn settled_log(&self) -> String {
        let mut last = self.log();
        loop {
            std::thread::sleep(Duration::from_millis(300));
            let now = self.log();
            if now.len() == last.len() {
                return now;
            }
            last = now;
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Names of the process's threads that are the library's (`tryvox-*`).
    fn library_threads(&self) -> Vec<String> {
        let mut v = Vec::new();
        for t in std::fs::read_dir(format!("/proc/{}/task", self.pid())).unwrap() {
            let comm = std::fs::read_to_string(t.unwrap().path().join("comm")).unwrap_or_default();
            if comm.starts_with("tryvox") {
                v.push(comm.trim().to_owned());
            }
        }
        v
    }

    /// Asterisk's own `core show threads`: one line per thread.
    fn core_threads(&mut self) -> Vec<String> {
        let out = self.rx("core show threads");
        assert!(out.contains(" threads listed."), "core show threads: {out}");
        out.lines()
            .filter(|l| l.contains(" started at "))
            .map(str::to_owned)
            .collect()
    }

    /// The key never appears in the log or in anything the CLI printed.
    fn assert_key_absent(&self, keys: &[&str]) {
        let log = self.settled_log();
        assert!(log.contains("DEBUG["), "the log is not at debug level");
        for k in keys {
            assert!(!log.contains(k), "the API key is in Asterisk's log");
            for o in &self.outputs {
                assert!(!o.contains(k), "the API key is in CLI output: {o}");
            }
        }
    }
}

impl Drop for Asterisk {
    fn drop(&mut self) {
        // Stopped by its PID: SIGTERM, then SIGKILL if it lingers.
        // SAFETY: kill on our own child's PID, which we have not reaped yet.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn conf(base_url: &str, key: &str, extra: &str) -> String {
    format!(
        "[general]\naccount_id = {ACCOUNT}\napi_key = {key}\nbase_url = {base_url}\n\
         timeout_ms = 5000\n{extra}"
    )
}

/// The simulator's record of one call: (status, end_reason, end time in ms).
fn call_record(s: &tryvox_sim::Running, id: &str) -> (String, String, Option<u64>) {
    let mut r = agent()
        .get(format!(
            "{}/v1/voice/accounts/{ACCOUNT}/calls/{id}",
            s.base_url
        ))
        .header("authorization", &format!("Bearer {KEY}"))
        .call()
        .unwrap();
    let v: serde_json::Value =
        serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap();
    let end = v["end_time"].as_str().map(|t| {
        humantime::parse_rfc3339(t)
            .unwrap()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64
    });
    (
        v["status"].as_str().unwrap().to_owned(),
        v["end_reason"].as_str().unwrap_or("").to_owned(),
        end,
    )
}

fn ended_by_api(s: &tryvox_sim::Running, id: &str) -> bool {
    let (status, reason, _) = call_record(s, id);
    status == "completed" && reason == "api-hangup"
}

fn live(s: &tryvox_sim::Running, id: &str) -> bool {
    let (status, _, _) = call_record(s, id);
    status == "ringing" || status == "in-progress"
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Runs TRYVOX_HANGUP(id) in the dialplan: (R, TRYVOX_ERROR, TRYVOX_HTTP_STATUS).
fn dialplan_hangup(ami: &mut Ami, id: &str) -> (String, String, String) {
    let mark = ami.mark();
    ami.originate("hangup", &[("ID", id)]);
    let e = ami.wait_from(mark, Duration::from_secs(30), |m| {
        m.get("UserEvent") == Some("TryvoxTest") && m.get("ID") == Some(id)
    });
    (
        e.get("R").unwrap_or("").to_owned(),
        e.get("E").unwrap_or("").to_owned(),
        e.get("H").unwrap_or("").to_owned(),
    )
}

#[test]
fn dialplan_cli_and_ami_against_the_simulator() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let s = spawn(Config::default()).unwrap();
    let Some(mut a) = Asterisk::start("basics", &conf(&s.base_url, KEY, ""), true) else {
        return;
    };
    let mut ami = a.ami();

    // TRYVOX_HANGUP on a live call, the same call again, an unknown call, a bad id.
    let id = seed_calls(&s, 1).remove(0);
    let (r, e, h) = dialplan_hangup(&mut ami, &id);
    assert_eq!((r.as_str(), e.as_str(), h.as_str()), ("OK", "", "204"));
    assert!(ended_by_api(&s, &id));
    let (r, e, h) = dialplan_hangup(&mut ami, &id);
    assert_eq!((r.as_str(), h.as_str()), ("ALREADY_ENDED", "404"));
    assert!(e.contains("already ended"), "{e}");
    let unknown = "6f1c2a9e-0000-4000-8000-000000000001";
    let (r, e, _) = dialplan_hangup(&mut ami, unknown);
    assert_eq!(r, "NOT_FOUND");
    assert!(e.contains("not found"), "{e}");
    let before = hangup_log(&s).len();
    let (r, e, h) = dialplan_hangup(&mut ami, "not~a~call..but~valid~chars%");
    assert_eq!((r.as_str(), h.as_str()), ("INVALID_ARGUMENT", "0"));
    assert!(e.contains("not allowed"), "{e}");
    assert_eq!(hangup_log(&s).len(), before, "an invalid id sent a request");

    // 1,000 hangups through the CLI: 900 by AMI's Command action (25 ids a command: an
    // AMI line is at most 1,024 bytes) and 100 by `asterisk -rx` (12 a command: a
    // remote console's command is at most 511 bytes).
    let ids = seed_calls(&s, 1000);
    for chunk in ids[..900].chunks(25) {
        let out = ami.command(&format!("tryvox hangup {}", chunk.join(" ")));
        for (line, id) in out.iter().zip(chunk) {
            assert_eq!(line, &format!("{id} OK"));
        }
        assert_eq!(
            out.last().unwrap(),
            &format!("{} calls: {} OK", chunk.len(), chunk.len())
        );
    }
    for chunk in ids[900..].chunks(12) {
        let out = a.rx(&format!("tryvox hangup {}", chunk.join(" ")));
        for id in chunk {
            assert!(out.contains(&format!("{id} OK\n")), "{out}");
        }
    }
    // An invalid id in a CLI list: nothing is sent for any of them.
    let more = seed_calls(&s, 2);
    let before = hangup_log(&s).len();
    let out = a.rx(&format!("tryvox hangup {} bad/id {}", more[0], more[1]));
    assert!(out.contains("INVALID_ARGUMENT: call_uuids[1]"), "{out}");
    assert_eq!(hangup_log(&s).len(), before);
    assert!(live(&s, &more[0]) && live(&s, &more[1]));

    // 1,000 through AMI, and the simulator's record: each ended once, by the API.
    let ami_ids = seed_calls(&s, 1000);
    for id in &ami_ids {
        let r = ami.action(&[("Action", "TryvoxHangup"), ("CallUUID", id)]);
        assert_eq!(
            (
                r.get("Response"),
                r.get("TryvoxStatus"),
                r.get("HTTPStatus")
            ),
            (Some("Success"), Some("OK"), Some("204")),
            "{}",
            r.text()
        );
    }
    let log = hangup_log(&s);
    let mut count: HashMap<&str, usize> = HashMap::new();
    for (_, id, _) in &log {
        *count.entry(id.as_str()).or_default() += 1;
    }
    for id in ids.iter().chain(&ami_ids) {
        assert_eq!(
            count.get(id.as_str()),
            Some(&1),
            "{id} sent {:?} times",
            count.get(id.as_str())
        );
        assert!(ended_by_api(&s, id), "{id} not ended");
    }
    // AMI's other answers: already ended, unknown, invalid (nothing sent), missing id.
    let r = ami.action(&[("Action", "TryvoxHangup"), ("CallUUID", &ami_ids[0])]);
    assert_eq!(r.get("TryvoxStatus"), Some("ALREADY_ENDED"));
    let r = ami.action(&[("Action", "TryvoxHangup"), ("CallUUID", unknown)]);
    assert_eq!(
        (r.get("Response"), r.get("TryvoxStatus")),
        (Some("Success"), Some("NOT_FOUND"))
    );
    let before = hangup_log(&s).len();
    let r = ami.action(&[("Action", "TryvoxHangup"), ("CallUUID", "a b")]);
    assert_eq!(
        (r.get("Response"), r.get("TryvoxStatus")),
        (Some("Error"), Some("INVALID_ARGUMENT"))
    );
    assert!(r.get("Message").unwrap().contains("not allowed"));
    let r = ami.action(&[("Action", "TryvoxHangup")]);
    assert_eq!(r.get("Response"), Some("Error"));
    assert_eq!(hangup_log(&s).len(), before);
    // Async: answered at once, the outcome as an event with the ActionID.
    let id = seed_calls(&s, 1).remove(0);
    let aid = ami.send(&[
        ("Action", "TryvoxHangup"),
        ("CallUUID", &id),
        ("Async", "true"),
    ]);
    let ev = ami.wait(Duration::from_secs(30), |m| {
        m.get("Event") == Some("TryvoxHangupResponse") && m.get("ActionID") == Some(aid.as_str())
    });
    assert_eq!(
        (ev.get("CallUUID"), ev.get("TryvoxStatus")),
        (Some(id.as_str()), Some("OK"))
    );
    assert!(ended_by_api(&s, &id));

    // The sweep ends every live call (the two left above and 50 more).
    let rest = seed_calls(&s, 50);
    let out = a.rx("tryvox hangup all");
    assert!(out.contains("listing 1:"), "{out}");
    assert!(
        out.contains("OK: 52 ended, 0 already gone, 0 failed, 0 still live"),
        "{out}"
    );
    for id in rest.iter().chain(&more) {
        assert!(ended_by_api(&s, id));
    }
    assert!(a.rx("tryvox hangup all from +1415").contains("OK: 0 ended"));
    assert!(a
        .rx("tryvox hangup all sideways +1")
        .contains("Usage: tryvox hangup"));

    // The documentation is found.
    let doc = a.rx("core show function TRYVOX_HANGUP");
    assert!(doc.contains("Hang up a TryVox call."), "{doc}");
    assert!(a
        .rx("manager show command TryvoxHangup")
        .contains("CallUUID"));
    assert!(!a.log().contains("Couldn't find function TRYVOX_HANGUP"));

    // Status: settings without the key, statistics.
    let st = a.rx("tryvox show status");
    assert!(
        st.contains("API key:             (set, never shown)"),
        "{st}"
    );
    assert!(
        st.contains(&format!("Account:             {ACCOUNT}")),
        "{st}"
    );
    assert!(st.contains("Scheduled hangups pending: 0"), "{st}");
    assert!(st.contains("CA file:             (none)\n"), "{st}");
    assert!(
        st.contains(
            "Trust store:         system (the system's trust store, else the bundled roots)\n"
        ),
        "{st}"
    );
    let ok: u64 = st
        .lines()
        .find_map(|l| l.trim().strip_prefix("OK "))
        .map(|n| n.trim().parse().unwrap())
        .unwrap_or_else(|| panic!("{st}"));
    assert!(ok >= 2053, "{st}");

    // A bad tryvox.conf at reload keeps the running client; the log says why.
    a.set_conf(&conf(&s.base_url, KEY, "max_retries = lots\n"));
    let out = a.rx("module reload res_tryvox.so");
    assert!(!out.contains("reloaded successfully"), "{out}");
    assert!(a.log_shows("max_retries = 'lots' is not a whole number"));
    a.set_conf(&conf(&s.base_url, KEY, "trust_store = everywhere\n"));
    let out = a.rx("module reload res_tryvox.so");
    assert!(!out.contains("reloaded successfully"), "{out}");
    assert!(a.log_shows("trust_store = 'everywhere' is not system, system-only or bundled"));
    let id = seed_calls(&s, 1).remove(0);
    assert_eq!(dialplan_hangup(&mut ami, &id).0, "OK");
    // A valid trust_store is kept and shown; a CA file replaces it (and says so).
    a.set_conf(&conf(&s.base_url, KEY, "trust_store = bundled\n"));
    a.rx("module reload res_tryvox.so");
    let st = a.rx("tryvox show status");
    assert!(
        st.contains("Trust store:         bundled (the roots built into libtryvox)\n"),
        "{st}"
    );
    let ca = root().join("tests/fixtures/tls/ca.pem");
    a.set_conf(&conf(
        &s.base_url,
        KEY,
        &format!("trust_store = system-only\nca_file = {}\n", ca.display()),
    ));
    a.rx("module reload res_tryvox.so");
    let st = a.rx("tryvox show status");
    assert!(
        st.contains(&format!("CA file:             {}\n", ca.display()))
            && st.contains("Trust store:         (not used: the CA file replaces it)\n"),
        "{st}"
    );
    let id = seed_calls(&s, 1).remove(0);
    assert_eq!(dialplan_hangup(&mut ami, &id).0, "OK");

    // Unload, then load with settings missing or wrong: declined, with a clear line;
    // then fixed: loads and works.
    assert!(a
        .rx("module unload res_tryvox.so")
        .contains("Unloaded res_tryvox.so"));
    a.set_conf(&format!("[general]\naccount_id = {ACCOUNT}\n"));
    a.rx("module load res_tryvox.so");
    assert!(a.log_shows("tryvox.conf: api_key is missing from [general]"));
    a.set_conf(&conf("http://example.com", KEY, ""));
    a.rx("module load res_tryvox.so");
    assert!(a.log_shows("the TryVox client could not be created"));
    a.set_conf(&conf(&s.base_url, KEY, "colour = blue\n"));
    a.rx("module load res_tryvox.so");
    assert!(a.log_shows("unknown setting 'colour'"));
    a.set_conf(&conf(&s.base_url, KEY, ""));
    assert!(a
        .rx("module load res_tryvox.so")
        .contains("Loaded res_tryvox.so"));
    let mut ami = a.ami();
    let id = seed_calls(&s, 1).remove(0);
    assert_eq!(dialplan_hangup(&mut ami, &id).0, "OK");

    a.assert_key_absent(&[KEY]);
}

#[test]
fn limits_fire_at_their_time_and_are_replaced_cancelled_and_dropped_with_their_channel() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let s = spawn(Config::default()).unwrap();
    let Some(mut a) = Asterisk::start("limits", &conf(&s.base_url, KEY, ""), true) else {
        return;
    };
    let mut ami = a.ami();
    let ids = seed_calls(&s, 5);
    let set = |ami: &Ami, id: &str, which: &str| -> Msg {
        ami.wait(Duration::from_secs(30), |m| {
            m.get("UserEvent") == Some(which) && m.get("ID") == Some(id)
        })
    };
    // [0] fires at 2 s; [1] is set to 30 then replaced by 2; [2] set to 1 then
    // cancelled by 0; [3] set to 2 by a channel that ends after 1 s; [4] set to 1 then
    // replaced by 4.
    ami.originate("limit", &[("ID", &ids[0]), ("SECS", "2"), ("HOLD", "60")]);
    ami.originate(
        "limit",
        &[
            ("ID", &ids[1]),
            ("SECS", "30"),
            ("SECS2", "2"),
            ("HOLD", "60"),
        ],
    );
    ami.originate(
        "limit",
        &[
            ("ID", &ids[2]),
            ("SECS", "1"),
            ("SECS2", "0"),
            ("HOLD", "60"),
        ],
    );
    ami.originate("limit", &[("ID", &ids[3]), ("SECS", "2"), ("HOLD", "1")]);
    ami.originate(
        "limit",
        &[
            ("ID", &ids[4]),
            ("SECS", "1"),
            ("SECS2", "4"),
            ("HOLD", "60"),
        ],
    );
    let e0 = set(&ami, &ids[0], "TryvoxLimitSet");
    assert_eq!(
        (e0.get("LEFT"), e0.get("E")),
        (Some("2"), Some("")),
        "{}",
        e0.text()
    );
    let e1 = set(&ami, &ids[1], "TryvoxLimitSet2");
    assert_eq!(e1.get("LEFT"), Some("2"));
    let e2 = set(&ami, &ids[2], "TryvoxLimitSet2");
    assert_eq!(e2.get("LEFT"), Some(""), "cancelled: nothing left to read");
    set(&ami, &ids[3], "TryvoxLimitSet");
    let e4 = set(&ami, &ids[4], "TryvoxLimitSet2");
    assert_eq!(e4.get("LEFT"), Some("4"));

    // The two 2 s limits fire, not early (the simulator's end time against the time
    // read in the dialplan just before the write).
    for (id, e) in [(&ids[0], &e0), (&ids[1], &e1)] {
        let ev = ami.wait(Duration::from_secs(30), |m| {
            m.get("Event") == Some("TryvoxLimit") && m.get("CallUUID") == Some(id.as_str())
        });
        assert_eq!(ev.get("TryvoxStatus"), Some("OK"), "{}", ev.text());
        let t: u64 = e.get("T").unwrap().parse().unwrap();
        let (status, reason, end) = call_record(&s, id);
        assert_eq!(
            (status.as_str(), reason.as_str()),
            ("completed", "api-hangup")
        );
        assert!(
            end.unwrap() + 1 >= t + 2000,
            "fired early: {} ms after the write",
            end.unwrap() as i64 - t as i64
        );
    }
    // [4]'s 4 s limit: not yet at 2 s after its replacement began (the 1 s one is gone),
    // then fired by 4 s.
    let t4: u64 = e4.get("T").unwrap().parse().unwrap();
    let ev = ami.wait(Duration::from_secs(30), |m| {
        m.get("Event") == Some("TryvoxLimit") && m.get("CallUUID") == Some(ids[4].as_str())
    });
    assert_eq!(ev.get("TryvoxStatus"), Some("OK"));
    let end4 = call_record(&s, &ids[4]).2.unwrap();
    assert!(end4 + 1 >= t4 + 4000, "the replaced 1 s limit fired");
    // By now (past 4 s) the cancelled one and the one whose channel ended would have
    // fired: they did not, and nothing was sent for them.
    let sent: HashSet<String> = hangup_log(&s).into_iter().map(|x| x.1).collect();
    assert!(!sent.contains(&ids[2]) && !sent.contains(&ids[3]));
    assert!(live(&s, &ids[2]) && live(&s, &ids[3]));
    assert_eq!(ami.events("TryvoxLimit").len(), 3);
    let st = a.rx("tryvox show status");
    assert!(st.contains("Scheduled hangups pending: 0"), "{st}");
    a.assert_key_absent(&[KEY]);
}

#[test]
fn reload_with_a_new_key_while_200_hangups_are_in_flight_loses_none() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut cfg = Config {
        second_api_key: Some(SECOND_KEY.into()),
        ..Config::default()
    };
    // Each answer takes 200 ms: the hangups are still in flight when the reload starts.
    cfg.faults.latency = Duration::from_millis(200);
    let s = spawn(cfg).unwrap();
    let Some(mut a) = Asterisk::start("reload", &conf(&s.base_url, KEY, ""), true) else {
        return;
    };
    let mut ami = a.ami();
    // Ten limits pending across the reload (8 s: the reload comes within about one):
    // they move to the new client.
    let limited = seed_calls(&s, 10);
    for id in &limited {
        ami.originate("limit", &[("ID", id), ("SECS", "8"), ("HOLD", "60")]);
    }
    let mut set_at = HashMap::new();
    for id in &limited {
        let e = limit_set(&ami, id);
        set_at.insert(id.clone(), e.get("T").unwrap().parse::<u64>().unwrap());
    }
    let ids = seed_calls(&s, 200);
    let mut aids = HashMap::new();
    for id in &ids {
        let aid = ami.send(&[
            ("Action", "TryvoxHangup"),
            ("CallUUID", id),
            ("Async", "true"),
        ]);
        aids.insert(aid, id.clone());
    }
    // Wait until the first few have reached the server, then reload with the new key.
    let deadline = Instant::now() + Duration::from_secs(10);
    while hangup_log(&s).iter().filter(|x| ids.contains(&x.1)).count() < 10 {
        assert!(Instant::now() < deadline, "the async hangups did not start");
        std::thread::sleep(Duration::from_millis(5));
    }
    a.set_conf(&conf(&s.base_url, SECOND_KEY, ""));
    let out = a.rx("module reload res_tryvox.so");
    let returned = now_ms();
    assert!(out.contains("reloaded successfully"), "{out}");
    // None lost: every one answered OK, and each call ended, once.
    for (aid, id) in &aids {
        let ev = ami.wait(Duration::from_secs(60), |m| {
            m.get("Event") == Some("TryvoxHangupResponse")
                && m.get("ActionID") == Some(aid.as_str())
        });
        assert_eq!(
            (ev.get("CallUUID"), ev.get("TryvoxStatus")),
            (Some(id.as_str()), Some("OK")),
            "{}",
            ev.text()
        );
        assert!(ended_by_api(&s, id));
    }
    // The limits fire at their time, on the new client.
    for id in &limited {
        let ev = ami.wait(Duration::from_secs(30), |m| {
            m.get("Event") == Some("TryvoxLimit") && m.get("CallUUID") == Some(id.as_str())
        });
        assert_eq!(ev.get("TryvoxStatus"), Some("OK"));
        let end = call_record(&s, id).2.unwrap();
        assert!(end + 1 >= set_at[id] + 8000, "a moved limit fired early");
    }
    // Nothing was sent with the old key after the reload returned; after it, the new key.
    let after = seed_calls(&s, 20);
    let out = ami.command(&format!("tryvox hangup {}", after.join(" ")));
    assert_eq!(out.last().unwrap(), "20 calls: 20 OK");
    let log = hangup_log(&s);
    let old_key_late: Vec<_> = log.iter().filter(|x| x.2 == 1 && x.0 > returned).collect();
    assert!(
        old_key_late.is_empty(),
        "sent with the old key after the reload: {old_key_late:?}"
    );
    for id in limited.iter().chain(&after) {
        assert!(
            log.iter().any(|x| &x.1 == id && x.2 == 2),
            "{id} not sent with the new key"
        );
    }
    let per_id = |id: &str| log.iter().filter(|x| x.1 == id).count();
    assert!(
        ids.iter().all(|id| per_id(id) == 1),
        "a hangup was sent twice"
    );
    a.assert_key_absent(&[KEY, SECOND_KEY]);
}

#[test]
fn unload_with_100_limits_pending_fires_none_and_leaves_no_thread() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let s = spawn(Config::default()).unwrap();
    let Some(mut a) = Asterisk::start("unload", &conf(&s.base_url, KEY, ""), false) else {
        return;
    };
    let threads_before = a.core_threads();
    assert!(a
        .rx("module load res_tryvox.so")
        .contains("Loaded res_tryvox.so"));
    let mut ami = a.ami();
    let ids = seed_calls(&s, 100);
    for id in &ids {
        ami.originate("limit", &[("ID", id), ("SECS", "6"), ("HOLD", "60")]);
    }
    for id in &ids {
        limit_set(&ami, id);
    }
    // Some async work too, so the engine's threads exist.
    let busy = seed_calls(&s, 20);
    let out = ami.command(&format!("tryvox hangup {}", busy.join(" ")));
    assert_eq!(out.last().unwrap(), "20 calls: 20 OK");
    assert!(!a.library_threads().is_empty());
    let st = a.rx("tryvox show status");
    assert!(a
        .rx("module unload res_tryvox.so")
        .contains("Unloaded res_tryvox.so"));
    let unloaded_at = Instant::now();
    assert!(
        a.library_threads().is_empty(),
        "left: {:?}",
        a.library_threads()
    );
    // Whatever fired before the unload (none, unless this machine stalled for 6 s) was
    // pending no more when the status was read; the rest were cancelled.
    let fired_before: HashSet<String> = ami
        .events("TryvoxLimit")
        .iter()
        .map(|m| m.get("CallUUID").unwrap().to_owned())
        .collect();
    assert!(
        st.contains(&format!(
            "Scheduled hangups pending: {}",
            100 - fired_before.len()
        )) || !fired_before.is_empty(),
        "{st}"
    );
    // Past the limits' time: none fired, nothing was sent, the channels live on.
    std::thread::sleep(Duration::from_millis(6500).saturating_sub(unloaded_at.elapsed()));
    let sent: HashSet<String> = hangup_log(&s).into_iter().map(|x| x.1).collect();
    for id in &ids {
        if !fired_before.contains(id) {
            assert!(
                !sent.contains(id) && live(&s, id),
                "{id}: a limit fired after unload"
            );
        }
    }
    assert_eq!(ami.events("TryvoxLimit").len(), fired_before.len());
    let chans = a.rx("core show channels count");
    assert!(chans.contains("200 active channels"), "{chans}");
    // Asterisk keeps running, with its own threads as before.
    a.rx("channel request hangup all");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !a
        .rx("core show channels count")
        .contains("0 active channels")
    {
        assert!(Instant::now() < deadline, "channels did not end");
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(ami);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        // Every Asterisk thread now existed before the module was loaded (the remote
        // console's own thread, new per command, aside).
        let n = a.core_threads();
        if n.iter()
            .filter(|l| !l.contains(" netconsole "))
            .all(|l| threads_before.contains(l))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "Asterisk threads now:\n{}\nbefore:\n{}",
            n.join("\n"),
            threads_before.join("\n")
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(a.rx("core show uptime").contains("System uptime"));
    assert!(a.library_threads().is_empty());
    a.assert_key_absent(&[KEY]);
}

/// The `TryvoxLimitSet` event of the dialplan's `limit` extension for call `id` (ids are
/// unique per test: any earlier message may be it).
fn limit_set(ami: &Ami, id: &str) -> Msg {
    ami.wait(Duration::from_secs(30), |m| {
        m.get("UserEvent") == Some("TryvoxLimitSet") && m.get("ID") == Some(id)
    })
}

/// The channel a dialplan UserEvent came from.
fn channel_of(m: &Msg) -> String {
    m.get("Channel").unwrap().to_owned()
}

#[test]
fn hostile_inputs_are_refused_and_concurrent_writers_keep_one_limit() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut cfg = Config::default();
    cfg.faults.latency = Duration::from_millis(1500);
    let s = spawn(cfg).unwrap();
    let Some(mut a) = Asterisk::start("hostile", &conf(&s.base_url, KEY, ""), true) else {
        return;
    };
    let mut ami = a.ami();

    // An ActionID of 600 characters comes back whole, on a well-formed response.
    let long: String = "A".repeat(600);
    let id = seed_calls(&s, 1).remove(0);
    ami.out
        .write_all(
            format!("Action: TryvoxHangup\r\nCallUUID: {id}\r\nActionID: {long}\r\n\r\n")
                .as_bytes(),
        )
        .unwrap();
    let r = ami.wait(Duration::from_secs(30), |m| {
        m.get("ActionID") == Some(long.as_str())
    });
    assert_eq!(r.get("TryvoxStatus"), Some("OK"), "{}", r.text());
    let aid = ami.send(&[
        ("Action", "TryvoxHangup"),
        ("CallUUID", "b0b0b0b0-0000-4000-8000-000000000000"),
        ("Async", "yes"),
    ]);
    let ev = ami.wait(Duration::from_secs(30), |m| {
        m.get("Event") == Some("TryvoxHangupResponse") && m.get("ActionID") == Some(aid.as_str())
    });
    assert_eq!(ev.get("TryvoxStatus"), Some("NOT_FOUND"));

    // More ids than Asterisk's CLI keeps (it drops the words past 63): refused whole,
    // nothing sent. Sixty are taken.
    let ids: Vec<String> = (1..=61).map(|i| format!("x{i:02}")).collect();
    let before = hangup_log(&s).len();
    let out = a.rx(&format!("tryvox hangup {}", ids.join(" ")));
    assert!(out.contains("At most 60 call ids per command"), "{out}");
    assert_eq!(hangup_log(&s).len(), before);
    let out = a.rx(&format!("tryvox hangup {}", ids[..60].join(" ")));
    assert!(out.contains("60 calls: 60 NOT_FOUND"), "{out}");
    assert_eq!(hangup_log(&s).len(), before + 60);
    let before = hangup_log(&s).len();
    assert_eq!(hangup_log(&s).len(), before);

    // A channel holding a 100 s limit; its limit is rewritten from 8 threads at once
    // (`dialplan set chanvar`, beside the channel's own dialplan), then set to 0: exactly
    // one limit was ever pending, and after the 0 none is.
    let held = seed_calls(&s, 1).remove(0);
    ami.originate("limit", &[("ID", &held), ("SECS", "100"), ("HOLD", "120")]);
    let e = limit_set(&ami, &held);
    let chan = channel_of(&e);
    let writers: Vec<_> = (0..8)
        .map(|_| {
            let (console, chan, held) = (a.console.clone(), chan.clone(), held.clone());
            std::thread::spawn(move || {
                for _ in 0..8 {
                    console.run(&format!(
                        "dialplan set chanvar {chan} TRYVOX_LIMIT({held}) 100"
                    ));
                }
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    assert!(a
        .rx("tryvox show status")
        .contains("Scheduled hangups pending: 1"));
    let getvar = |ami: &mut Ami, var: &str| -> String {
        let r = ami.action(&[("Action", "Getvar"), ("Channel", &chan), ("Variable", var)]);
        r.get("Value").unwrap_or("").to_owned()
    };
    // Values that are not plain decimal seconds are refused, the limit kept (a CLI word
    // cannot hold the spaces around a number the dialplan could: those are refused too).
    for bad in ["0x10", "+5", "1e3", "0.0001", "-1", "4294968", ".5", "5."] {
        a.rx(&format!(
            "dialplan set chanvar {chan} TRYVOX_LIMIT({held}) {bad}"
        ));
        assert!(
            getvar(&mut ami, "TRYVOX_ERROR").contains("not a number of seconds"),
            "{bad:?} accepted"
        );
    }
    assert!(a
        .rx("tryvox show status")
        .contains("Scheduled hangups pending: 1"));
    a.rx(&format!(
        "dialplan set chanvar {chan} TRYVOX_LIMIT({held}) 0"
    ));
    assert_eq!(getvar(&mut ami, "TRYVOX_ERROR"), "");
    assert!(a
        .rx("tryvox show status")
        .contains("Scheduled hangups pending: 0"));
    assert!(!hangup_log(&s).iter().any(|x| x.1 == held));

    // One sweep at a time: a second, while the first waits on the slow server, is
    // refused with nothing sent.
    seed_calls(&s, 3);
    let first = {
        let console = a.console.clone();
        std::thread::spawn(move || {
            String::from_utf8_lossy(&console.run("tryvox hangup all").stdout).into_owned()
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    let second = a.rx("tryvox hangup all");
    let first = first.join().unwrap();
    assert!(first.contains("OK: "), "{first}");
    assert!(
        second.contains("already running: nothing sent"),
        "{second}\n---\n{first}"
    );
    a.assert_key_absent(&[KEY]);
}

#[test]
fn shutdown_lets_hangups_in_flight_finish_and_sends_no_limit() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut cfg = Config::default();
    cfg.faults.latency = Duration::from_millis(1000);
    let s = spawn(cfg).unwrap();
    let Some(mut a) = Asterisk::start("shutdown", &conf(&s.base_url, KEY, ""), true) else {
        return;
    };
    let mut ami = a.ami();
    let limited = seed_calls(&s, 3);
    for id in &limited {
        ami.originate("limit", &[("ID", id), ("SECS", "100"), ("HOLD", "120")]);
        limit_set(&ami, id);
    }
    let ids = seed_calls(&s, 100);
    for id in &ids {
        let r = ami.action(&[
            ("Action", "TryvoxHangup"),
            ("CallUUID", id),
            ("Async", "true"),
        ]);
        assert_eq!(r.get("Response"), Some("Success"));
    }
    // `core stop now`: Asterisk does not unload modules; the module's exit handler waits
    // for what was accepted (each within its 5 s timeout).
    a.rx("core stop now");
    let deadline = Instant::now() + Duration::from_secs(30);
    while a.child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "Asterisk did not stop");
        std::thread::sleep(Duration::from_millis(50));
    }
    for id in &ids {
        assert!(
            ended_by_api(&s, id),
            "{id}: accepted, then lost at shutdown"
        );
    }
    // The limits' channels were hung up by the shutdown, which cancelled the limits:
    // nothing was sent for them.
    let sent: HashSet<String> = hangup_log(&s).into_iter().map(|x| x.1).collect();
    for id in &limited {
        assert!(live(&s, id) && !sent.contains(id));
    }
}
