//! C and C++ against the simulator: the CLI, plain cc, the C++ wrapper (tryvox.hpp), and the
//! module-reload test. Elsewhere: `make install`, pkg-config, CMake and the Debian packages
//! in tests/pkg_native.rs; Go and C# in tests/pkg_go_csharp.rs; the Python package in
//! tests/pkg_python.rs; every code block of the docs in tests/docs.rs.
//!
//! A missing toolchain prints a loud SKIPPED line; with CI=true it is a failure.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use support::{c_lib_dir, compile_c, have_tool, seed_calls, target_dir};
use tryvox_sim::server::{DEFAULT_ACCOUNT as ACCOUNT, DEFAULT_API_KEY as KEY};
use tryvox_sim::{spawn, Config, Running};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn work(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("languages")
        .join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn env_cmd<'a>(cmd: &'a mut Command, s: &Running) -> &'a mut Command {
    cmd.env("TRYVOX_BASE_URL", &s.base_url)
        .env("TRYVOX_ACCOUNT_ID", ACCOUNT)
        .env("TRYVOX_API_KEY", KEY)
        .env("LD_LIBRARY_PATH", c_lib_dir())
}

fn check(what: &str, out: Output) -> String {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("--- {what}\n{text}");
    assert!(
        out.status.success(),
        "{what} failed ({:?}):\n{text}",
        out.status.code()
    );
    assert!(!text.contains(KEY), "{what} printed the key");
    text
}

#[test]
fn c_cli_tool() {
    let exe = compile_c("examples/tryvox-hangup.c", "tryvox-hangup");
    let s = spawn(Config::default()).unwrap();
    let ids = seed_calls(&s, 3);
    let run = |args: &[&str]| {
        env_cmd(&mut Command::new(&exe), &s)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let out = run(&[&ids[0], &ids[1]]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(run(&[&ids[0]]).status.code(), Some(2), "already ended");
    assert_eq!(run(&["no-such-call"]).status.code(), Some(1), "not found");
    assert_eq!(run(&["a/b"]).status.code(), Some(3), "invalid id");
    // No id as an argument and none on stdin (empty): a usage error.
    assert_eq!(run(&[]).status.code(), Some(64), "usage");
    // `--` ends the options and is not an id itself (sent, it would be "not found": 1).
    assert_eq!(run(&["--", "a/b"]).status.code(), Some(3), "--");
    cli_options_send_nothing(&exe, &s, &ids[2]);
    // Nothing to end for either: the first such status (2), one line per call.
    let out = run(&[&ids[1], "nope"]);
    assert_eq!(out.status.code(), Some(2));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("call already ended") && text.contains("call not found"),
        "{text}"
    );
}

/// `--help`/`-h` print the usage on stdout and exit 0; an unknown option is a usage error
/// (64, the CLI's usage status: 2 would read as "already ended"). Neither sends anything:
/// with TRYVOX_BASE_URL at a listener of this test, nothing connects to it, and against the
/// simulator the live call `live` stays live.
fn cli_options_send_nothing(exe: &Path, s: &Running, live: &str) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let trap = format!("http://{}", listener.local_addr().unwrap());
    // (arguments, exit status, what stderr says for a usage error)
    let cases: &[(&[&str], i32, &str)] = &[
        (&["--help"], 0, ""),
        (&["-h", live], 0, ""),
        (&[live, "--help"], 0, ""),
        (&["--bogus", live], 64, "unknown option"),
        (&[live, "-x"], 64, "unknown option"),
        // `-` (read the ids from stdin) must be the only id.
        (&["-", live], 64, "must be the only id"),
    ];
    for (base, what) in [(trap.as_str(), "trap"), (s.base_url.as_str(), "simulator")] {
        for (args, want, says) in cases {
            let out = env_cmd(&mut Command::new(exe), s)
                .env("TRYVOX_BASE_URL", base)
                .args(*args)
                .output()
                .unwrap();
            let (stdout, stderr) = (
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
            );
            assert_eq!(
                out.status.code(),
                Some(*want),
                "{args:?} ({what}): {stdout}{stderr}"
            );
            if *want == 0 {
                for word in ["TRYVOX_ACCOUNT_ID", "TRYVOX_BASE_URL", "Exit status", "64"] {
                    assert!(stdout.contains(word), "--help lacks {word:?}: {stdout}");
                }
            } else {
                assert!(
                    stderr.contains(says) && stderr.contains("usage:"),
                    "{args:?}: {stderr}"
                );
                assert!(stdout.is_empty(), "{args:?} printed {stdout}");
            }
        }
    }
    match listener.accept() {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("an option made the CLI connect: {other:?}"),
    }
    // Still live: this hangup is the first one it gets.
    let out = env_cmd(&mut Command::new(exe), s)
        .arg(live)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn cpp_wrapper() {
    if !have_tool("c++") {
        return;
    }
    let dir = work("cpp");
    let exe = dir.join("hangup-cpp");
    let status = Command::new("c++")
        .args([
            "-std=c++11",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-pedantic",
            "-pthread",
        ])
        .arg(format!("-I{}", root().join("include").display()))
        .arg(root().join("examples/cpp/hangup.cpp"))
        .arg("-o")
        .arg(&exe)
        .arg(format!("-L{}", c_lib_dir().display()))
        .arg("-ltryvox")
        .status()
        .unwrap();
    assert!(status.success());
    let s = spawn(Config::default()).unwrap();
    let ids = seed_calls(&s, 5);
    let text = check(
        "C++",
        env_cmd(&mut Command::new(&exe), &s)
            .args(&ids)
            .output()
            .unwrap(),
    );
    // The example checks client::stats() against the outcomes it saw, and prints it.
    assert!(
        text.contains("C++ example: ok") && text.contains("stats: 8 hangups ("),
        "{text}"
    );
}

/// What a real unload loses, and only that: memory a lazily initialised static of the
/// library points to (ureq's `Accept` header, built once per load; the registries of
/// idle connections the descriptor budget sheds, made once per load and holding only
/// weak references) is unreachable once dlclose unmaps the library's data. An
/// initialiser runs once per load, so nothing that grows with use can hide behind this;
/// the test also bounds the total it covers.
const RELOAD_SUPPRESSIONS: &str = "{
   lazily-initialised-static-lost-when-dlclose-unmaps-the-library
   Memcheck:Leak
   match-leak-kinds: definite
   fun:malloc
   ...
   fun:*lazy_lock*LazyLock*force*
}
{
   idle-connection-registries-lost-when-dlclose-unmaps-the-library
   Memcheck:Leak
   match-leak-kinds: definite
   fun:malloc
   ...
   fun:*tryvox_core*fds*holders*
}
{
   idle-connection-registries-lost-when-dlclose-unmaps-the-library
   Memcheck:Leak
   match-leak-kinds: definite
   fun:malloc
   ...
   fun:*tryvox_core*fds*stacks*
}
";

/// tests/c/reload.c checks what docs/embedding.md says about unloading: a thread that
/// called in and has exited does not keep the library mapped; a live one does until it
/// exits; the main thread keeps it for good and each dlopen reuses the one mapping.
#[test]
fn module_reload_five_times() {
    let exe = compile_c("tests/c/reload.c", "reload");
    let s = spawn(Config::default()).unwrap();
    let ids = seed_calls(&s, 5);
    let so = target_dir().join("libtryvox.so");
    let run = |cmd: &mut Command| {
        cmd.env("TRYVOX_API_KEY", KEY)
            .arg(&so)
            .arg(&s.base_url)
            .arg(ACCOUNT)
            .args(&ids[..])
            .output()
            .unwrap()
    };
    let text = check("reload", run(&mut Command::new(&exe)));
    assert!(text.contains("reload: ok"));
    if Command::new("valgrind").arg("--version").output().is_ok() {
        let ids2 = seed_calls(&s, 5);
        let supp = work("reload").join("reload.supp");
        std::fs::write(&supp, RELOAD_SUPPRESSIONS).unwrap();
        let out = Command::new("valgrind")
            .args([
                "--error-exitcode=99",
                "--leak-check=full",
                "--errors-for-leak-kinds=definite",
                "--num-callers=50",
            ])
            .arg(format!("--suppressions={}", supp.display()))
            .arg(&exe)
            .arg(&so)
            .arg(&s.base_url)
            .arg(ACCOUNT)
            .args(&ids2)
            .env("TRYVOX_API_KEY", KEY)
            .output()
            .unwrap();
        let text = check("reload under valgrind", out);
        assert!(
            text.contains("definitely lost: 0 bytes")
                || text.contains("All heap blocks were freed")
        );
        // Two real unloads (steps 1 and 2) lose a few bytes of statics each: bounded.
        let suppressed: u64 = text
            .lines()
            .filter(|l| l.contains("bytes in"))
            .find_map(|l| {
                l.split_once("suppressed: ")?
                    .1
                    .split(' ')
                    .next()?
                    .replace(',', "")
                    .parse()
                    .ok()
            })
            .unwrap_or(0);
        assert!(
            suppressed <= 4096,
            "statics lost per unload: {suppressed} bytes"
        );
    } else {
        have_tool("valgrind");
    }
}
