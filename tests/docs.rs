//! The documentation test: every fenced code block in README.md and docs/*.md is run, as
//! written, the way a new user following the text would run it.
//!
//! The rules:
//!
//! 1. Each Markdown file is one session: one `bash` that runs the file's blocks in order,
//!    in a fresh empty directory, so that variables, shell functions and the current
//!    directory carry from one block to the next as in the reader's terminal. Its
//!    environment is cleared (`env_clear`) except `PATH` and `HOME`, plus the variables
//!    the test can supply and the file's prose tells the reader to set (the name must
//!    appear in the text outside code blocks):
//!    - `TRYVOX_SRC`: the libtryvox checkout (this repository);
//!    - `TRYVOX_BASE_URL`: the URL the simulator printed (see `simulator` below).
//!
//!    Everything else (account, key, `PKG_CONFIG_PATH`, ...) must be set by a block.
//! 2. The fence's info string names the language. `sh` blocks are sourced into the
//!    session with `errexit` and `pipefail`: any failing command fails the test. Every
//!    other language (`c`, `cpp`, `go`, `csharp`, `python`, and `cmake` for a whole
//!    `CMakeLists.txt`) is a complete program or project file that the text tells the
//!    reader to save under a name, given by a `save as` directive; the file
//!    (a relative path, such as `hangup-go/main.go`) is written before the session starts,
//!    and a later `sh` block builds and runs it. A
//!    fence without a language, an unknown language, or a program without `save as`
//!    fails the test: a fragment must become a full program or leave the code fence.
//! 3. Directives: an HTML comment on the line just above the fence (invisible on a
//!    rendered page), items separated by `;`:
//!    - `<!-- run: save as NAME -->`: the block is the file NAME (see 2);
//!    - `<!-- run: simulator -->`: an `sh` block that starts the simulator, which the
//!      reader runs in a second terminal. The session runs it in the background, waits
//!      for its first line (the URL) and exports `TRYVOX_BASE_URL` to it, as the prose
//!      tells the reader to. The test kills it at the end;
//!    - `<!-- run: needs TOOL... -->`: the block needs these programs. Without them it is
//!      not run and a loud SKIPPED line is printed; with `CI=true` that is a failure;
//!    - `<!-- run: vendored PATH -->`: the block needs PATH (relative to the checkout),
//!      a vendored source outside it such as `../shared/vendor/...`. Without it the
//!      block is not run and a loud SKIPPED line is printed; with `CI=true` that is a
//!      failure;
//!    - `<!-- run: when PATH has TEXT -->` (or `when PATH`): the block uses a binding
//!      that is still being written. Until the file PATH of the checkout exists (and
//!      contains TEXT), the block is not run and a PENDING line is printed, even in CI.
//! 4. Excluded by name: a line of an `sh` block whose command is exactly `make demo` or
//!    `make test` (README's two set-up commands) is not run. `make test` runs this very
//!    test (it would recurse), and `make demo` builds and runs the demo the C examples
//!    here already cover. Every other line runs.
//!
//! Every process a session starts is in the session's process group, which is killed
//! when the session ends (or after its time limit). Output is printed with the
//! simulator's key masked.

mod support;

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::have_tool;

/// A session may build the release library (a few minutes on a fresh two-core machine).
const SESSION_LIMIT: Duration = Duration::from_secs(1500);
const KEY: &str = tryvox_sim::server::DEFAULT_API_KEY;
const LANGUAGES: &[&str] = &["sh", "c", "cpp", "go", "csharp", "python", "cmake"];
const EXCLUDED: &[&str] = &["make demo", "make test"];

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

#[derive(Debug)]
struct Block {
    line: usize,
    lang: String,
    text: String,
    save_as: Option<String>,
    simulator: bool,
    needs: Vec<String>,
    when: Option<(String, Option<String>)>,
    vendored: Option<String>,
}

/// The fenced blocks of a Markdown text, and its prose (the text outside the fences).
fn parse(md: &str, file: &str) -> (Vec<Block>, String) {
    let lines: Vec<&str> = md.lines().collect();
    let (mut blocks, mut prose) = (Vec::new(), String::new());
    let mut i = 0;
    while i < lines.len() {
        let l = lines[i];
        let t = l.trim_start();
        if !t.starts_with("```") {
            prose.push_str(l);
            prose.push('\n');
            i += 1;
            continue;
        }
        let indent = l.len() - t.len();
        let lang = t.trim_start_matches('`').trim().to_owned();
        let start = i + 1;
        let mut text = String::new();
        i += 1;
        while i < lines.len() && lines[i].trim_start() != "```" {
            let body = lines[i];
            let cut = body.len() - body.trim_start().len();
            text.push_str(&body[cut.min(indent)..]);
            text.push('\n');
            i += 1;
        }
        assert!(i < lines.len(), "{file}:{start}: unclosed code fence");
        i += 1;
        let mut b = Block {
            line: start,
            lang,
            text,
            save_as: None,
            simulator: false,
            needs: Vec::new(),
            when: None,
            vendored: None,
        };
        // The directive: the closest non-blank line above the fence.
        let above = lines[..start - 1]
            .iter()
            .rev()
            .map(|l| l.trim())
            .find(|l| !l.is_empty())
            .unwrap_or("");
        if let Some(d) = above
            .strip_prefix("<!-- run:")
            .and_then(|d| d.strip_suffix("-->"))
        {
            for item in d.split(';').map(str::trim).filter(|x| !x.is_empty()) {
                if let Some(name) = item.strip_prefix("save as ") {
                    b.save_as = Some(name.trim().to_owned());
                } else if item == "simulator" {
                    b.simulator = true;
                } else if let Some(tools) = item.strip_prefix("needs ") {
                    b.needs = tools.split_whitespace().map(str::to_owned).collect();
                } else if let Some(p) = item.strip_prefix("vendored ") {
                    b.vendored = Some(p.trim().to_owned());
                } else if let Some(w) = item.strip_prefix("when ") {
                    b.when = Some(match w.split_once(" has ") {
                        Some((p, t)) => (p.trim().to_owned(), Some(t.trim().to_owned())),
                        None => (w.trim().to_owned(), None),
                    });
                } else {
                    panic!("{file}:{start}: unknown directive item `{item}`");
                }
            }
        }
        blocks.push(b);
    }
    (blocks, prose)
}

fn mask(s: &str) -> String {
    s.replace(KEY, "[simulator key]")
}

/// Whether a block may run now: its tools exist (a missing one fails under CI, inside
/// have_tool) and the binding it depends on has landed.
fn runnable(file: &str, b: &Block) -> Result<(), String> {
    if let Some((path, text)) = &b.when {
        let have = std::fs::read_to_string(root().join(path))
            .is_ok_and(|c| text.as_ref().is_none_or(|t| c.contains(t.as_str())));
        if !have {
            let what = match text {
                Some(t) => format!("{path} with `{t}`"),
                None => path.clone(),
            };
            return Err(format!(
                "PENDING: {file}:{} waits for {what}: not run",
                b.line
            ));
        }
    }
    if let Some(path) = &b.vendored {
        if !root().join(path).exists() {
            assert!(
                std::env::var("CI").is_err(),
                "{file}:{}: {path} is required in CI",
                b.line
            );
            return Err(format!("SKIPPED: {file}:{} needs {path}: not run", b.line));
        }
    }
    for t in &b.needs {
        if !have_tool(t) {
            return Err(format!("SKIPPED: {file}:{} needs {t}: not run", b.line));
        }
    }
    Ok(())
}

/// What a session left for the checks after it: the simulator's output.
struct Session {
    sim_output: String,
}

/// Runs one Markdown file as described at the top of this file.
fn run_doc(file: &str) -> Session {
    let md = std::fs::read_to_string(root().join(file)).unwrap();
    let (blocks, prose) = parse(&md, file);
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("docs")
        .join(file.replace('/', "_"));
    let _ = std::fs::remove_dir_all(&dir);
    let meta = dir.join(".docs-test");
    std::fs::create_dir_all(&meta).unwrap();

    let mut script = String::from("set -eo pipefail\n");
    let mut sim_started = false;
    for (n, b) in blocks.iter().enumerate() {
        let at = format!("{file}:{}", b.line);
        assert!(
            LANGUAGES.contains(&b.lang.as_str()),
            "{at}: fence language `{}` is not one of {LANGUAGES:?}",
            b.lang
        );
        if let Err(why) = runnable(file, b) {
            eprintln!("\n==================== {why} ====================\n");
            script.push_str(&format!("echo '### {why}'\n"));
            continue;
        }
        if b.lang != "sh" {
            let name = b.save_as.as_ref().unwrap_or_else(|| {
                panic!("{at}: a {} block must be a whole program saved by name (`<!-- run: save as NAME -->`)", b.lang)
            });
            assert!(
                !name.starts_with('/')
                    && !name.split('/').any(|c| c.is_empty() || c.starts_with('.')),
                "{at}: save as a relative path without `.` or `..`"
            );
            let path = dir.join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, &b.text).unwrap();
            continue;
        }
        assert!(b.save_as.is_none(), "{at}: an sh block is run, not saved");
        let text: String = b
            .text
            .lines()
            .map(|l| {
                let cmd = l.split('#').next().unwrap_or("").trim();
                if EXCLUDED.contains(&cmd) {
                    format!(": not run by tests/docs.rs \\(rule 4\\): {cmd}\n")
                } else {
                    format!("{l}\n")
                }
            })
            .collect();
        let path = meta.join(format!("block{n}.sh"));
        std::fs::write(&path, text).unwrap();
        script.push_str(&format!("echo '### {at}'\n"));
        if b.simulator {
            assert!(
                prose.contains("TRYVOX_BASE_URL"),
                "{file}: the prose must tell the reader to set TRYVOX_BASE_URL"
            );
            assert!(!sim_started, "{at}: one simulator per file");
            sim_started = true;
            // The reader's second terminal: the block in the background; the reader
            // copies the first line it prints into TRYVOX_BASE_URL.
            script.push_str(&format!(
                "( source {p} ) >.docs-test/sim.out 2>&1 </dev/null &\n\
                 for _ in $(seq 600); do grep -q '^http' .docs-test/sim.out 2>/dev/null && break; sleep 0.05; done\n\
                 export TRYVOX_BASE_URL=$(head -1 .docs-test/sim.out)\n\
                 case \"$TRYVOX_BASE_URL\" in http*) ;; *) echo 'the simulator did not start'; cat .docs-test/sim.out; exit 1;; esac\n",
                p = path.display()
            ));
        } else {
            script.push_str(&format!("source {}\n", path.display()));
        }
    }
    script.push_str("echo '### all blocks ran'\n");
    std::fs::write(meta.join("session.sh"), &script).unwrap();

    let mut cmd = Command::new("bash");
    cmd.arg(meta.join("session.sh"))
        .current_dir(&dir)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env(
            "HOME",
            std::env::var_os("HOME").unwrap_or_else(|| "/".into()),
        )
        .stdin(Stdio::null())
        .process_group(0);
    if prose.contains("TRYVOX_SRC") {
        cmd.env("TRYVOX_SRC", root());
    }
    // One file, opened once for both streams, keeps their order.
    let out = std::fs::File::create(meta.join("output")).unwrap();
    cmd.stdout(Stdio::from(out.try_clone().unwrap()))
        .stderr(Stdio::from(out));
    let mut child = cmd.spawn().unwrap();
    let pgid = child.id() as i32;
    let t0 = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if t0.elapsed() > SESSION_LIMIT {
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    // The session's simulator and anything else it left running.
    unsafe {
        libc::kill(-pgid, libc::SIGKILL);
    }
    let _ = child.wait();
    let mut output = String::new();
    let _ =
        std::fs::File::open(meta.join("output")).and_then(|mut f| f.read_to_string(&mut output));
    let mut sim_output = String::new();
    let _ = std::fs::File::open(meta.join("sim.out"))
        .and_then(|mut f| f.read_to_string(&mut sim_output));
    println!(
        "--- {file} session ({:.0?}):\n{}",
        t0.elapsed(),
        mask(&output)
    );
    if !sim_output.is_empty() {
        println!("--- {file}: the simulator's output:\n{}", mask(&sim_output));
    }
    let last = output
        .lines()
        .rev()
        .find(|l| l.starts_with("### "))
        .unwrap_or("(none)");
    match status {
        None => {
            panic!("{file}: the session ran past {SESSION_LIMIT:?}; the last block started: {last}")
        }
        Some(s) => assert!(
            s.success(),
            "{file}: a block failed ({s}); the failing block is the last one started: {last}\n{}",
            mask(&output)
        ),
    }
    Session { sim_output }
}

#[test]
fn every_doc_file_is_tested() {
    let mut found: Vec<String> = std::fs::read_dir(root().join("docs"))
        .unwrap()
        .map(|e| format!("docs/{}", e.unwrap().file_name().to_string_lossy()))
        .filter(|n| n.ends_with(".md"))
        .collect();
    found.sort();
    assert_eq!(
        found,
        ["docs/embedding.md", "docs/languages.md"],
        "a new file in docs/ needs its test in tests/docs.rs"
    );
}

#[test]
fn readme() {
    let s = run_doc("README.md");
    // The walkthrough's hangup reached the simulator, and its log shows it.
    assert!(
        s.sim_output.lines().any(
            |l| l.contains(" DELETE /v1/voice/accounts/AC123456/calls/") && l.contains(" 204 ")
        ),
        "the simulator's log shows no hangup"
    );
}

#[test]
fn docs_languages() {
    run_doc("docs/languages.md");
}

#[test]
fn docs_embedding() {
    run_doc("docs/embedding.md");
}

fn sim_binary() -> PathBuf {
    let exe = support::target_dir().join("tryvox-sim");
    assert!(
        exe.exists(),
        "{} is not built: run `cargo build --workspace` first (`make test` does)",
        exe.display()
    );
    exe
}

/// `tryvox-sim --help` lists every route of sim/src/app.rs and the request-log flags.
#[test]
fn simulator_help_lists_every_endpoint() {
    let out = Command::new(sim_binary()).arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    let app = std::fs::read_to_string(root().join("sim/src/app.rs")).unwrap();
    let mut routes = 0;
    // `.route(` then the path, the first string literal after it (rustfmt may break the line).
    for chunk in app.split(".route(").skip(1) {
        let path = chunk.split('"').nth(1).unwrap();
        routes += 1;
        if let Some(prefix) = path.strip_suffix("{action}") {
            // One route for the control actions: each `"name" => Control::` arm.
            let actions: Vec<&str> = app
                .lines()
                .filter(|l| l.contains("=> Control::"))
                .filter_map(|l| l.split('"').nth(1))
                .collect();
            assert!(actions.len() >= 4, "control actions: {actions:?}");
            for a in actions {
                let p = format!("{prefix}{a}");
                assert!(help.contains(&p), "--help does not list {p}");
            }
            continue;
        }
        assert!(help.contains(path), "--help does not list {path}");
    }
    assert!(routes >= 8, "found only {routes} routes in sim/src/app.rs");
    for flag in ["--log", "--quiet"] {
        assert!(help.contains(flag), "--help does not list {flag}");
    }
}

/// `--log` writes one line per request (method, path, status, latency) and never the
/// Authorization header; `--quiet` writes none.
#[test]
fn simulator_request_log() {
    for (flag, want_lines) in [("--log", true), ("--quiet", false)] {
        let mut child = Command::new(sim_binary())
            .arg(flag)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdout = child.stdout.take().unwrap();
        let mut first = Vec::new();
        let mut byte = [0u8];
        while stdout.read(&mut byte).unwrap_or(0) == 1 && byte[0] != b'\n' {
            first.push(byte[0]);
        }
        let base = String::from_utf8(first).unwrap();
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let r = agent
            .delete(format!(
                "{base}/v1/voice/accounts/AC123456/calls/no-such-call"
            ))
            .header("Authorization", format!("Bearer {KEY}"))
            .call()
            .unwrap();
        assert_eq!(r.status(), 404);
        unsafe {
            libc::kill(child.id() as i32, libc::SIGTERM);
        }
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains(KEY), "the log shows the key");
        let line = err
            .lines()
            .find(|l| l.contains("DELETE /v1/voice/accounts/AC123456/calls/no-such-call"));
        if want_lines {
            let line = line.unwrap_or_else(|| panic!("no log line in {err:?}"));
            assert!(
                line.contains(" 404 ") && line.ends_with(" ms"),
                "log line {line:?}"
            );
        } else {
            assert!(line.is_none(), "--quiet logged {err:?}");
        }
    }
}
