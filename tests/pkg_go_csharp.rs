//! The Go and C# bindings, built the way their READMEs tell users to, and tested against
//! the simulator:
//!
//! - Go: `#cgo pkg-config: tryvox` with the in-tree .pc file (`make go-pkgconfig`), then
//!   `go vet ./...`, `go test -race ./...` (HangupContext, HangupAsync, every option,
//!   Stats read during HangupMany) and the example; and a user's module outside the tree
//!   (`go mod edit -replace`) against a `make install-files PREFIX=...` prefix, found by
//!   pkg-config alone.
//! - C#: `make csharp` (mcs) lays out Tryvox.dll with runtimes/linux-x64/native/libtryvox.so
//!   as the NuGet package does; the test program (HangupAsync under load, cancellation,
//!   every option setter, Stats) and the example run with Mono, without LD_LIBRARY_PATH.
//!
//! A missing toolchain prints a loud SKIPPED line; with CI=true it is a failure. Every
//! command runs in its own process group, killed if it outlives its time limit.

mod support;

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::{have_tool, seed_calls, target_dir, tls_sim, tls_trust_env};
use tryvox_sim::server::{DEFAULT_ACCOUNT as ACCOUNT, DEFAULT_API_KEY as KEY};
use tryvox_sim::{spawn, Config, Running};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A fresh scratch directory for one test.
fn work(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("pkg_go_csharp")
        .join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Runs `cmd` in a process group of its own, killing the whole group after `limit`.
/// Asserts success and that the key was not printed; returns stdout and stderr.
fn run(what: &str, cmd: &mut Command, limit: Duration) -> String {
    let mut child = cmd
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{what}: cannot start: {e}"));
    let pgid = child.id() as i32;
    let mut pipes = [
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    ];
    let readers: Vec<_> = pipes
        .iter_mut()
        .map(|p| {
            let mut p = p.take().unwrap();
            std::thread::spawn(move || {
                let mut s = Vec::new();
                let _ = p.read_to_end(&mut s);
                String::from_utf8_lossy(&s).into_owned()
            })
        })
        .collect();
    let t0 = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break Some(st);
        }
        if t0.elapsed() > limit {
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    // The group goes either way: nothing a command started (a test binary, a
    // compiler) outlives it.
    // SAFETY: kill(2) on the process group this function created.
    unsafe {
        libc::kill(-pgid, libc::SIGKILL);
    }
    let status = match status {
        Some(s) => s,
        None => child.wait().unwrap(),
    };
    let text: String = readers.into_iter().map(|r| r.join().unwrap()).collect();
    assert!(!text.contains(KEY), "{what} printed the API key");
    println!("--- {what} ({} ms)\n{text}", t0.elapsed().as_millis());
    assert!(
        t0.elapsed() <= limit,
        "{what} did not finish within {limit:?}:\n{text}"
    );
    assert!(status.success(), "{what} failed ({status}):\n{text}");
    text
}

fn sim_env<'a>(cmd: &'a mut Command, s: &Running) -> &'a mut Command {
    cmd.env("TRYVOX_BASE_URL", &s.base_url)
        .env("TRYVOX_ACCOUNT_ID", ACCOUNT)
        .env("TRYVOX_API_KEY", KEY)
        .env_remove("LD_LIBRARY_PATH")
}

/// `go` with a persistent build cache (the race-instrumented standard library is built
/// once), no network, and `PKG_CONFIG_PATH` set to `pc`.
fn go(dir: &Path, pc: &Path) -> Command {
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let mut cmd = Command::new("go");
    cmd.current_dir(dir)
        .env("CGO_ENABLED", "1")
        .env("PKG_CONFIG_PATH", pc)
        .env("GOCACHE", tmp.join("go-cache"))
        .env("GOPATH", tmp.join("gopath"))
        .env("GOTOOLCHAIN", "local")
        .env("GOPROXY", "off")
        .env("GOFLAGS", "")
        .env_remove("CGO_CFLAGS")
        .env_remove("CGO_LDFLAGS");
    cmd
}

fn make(dir: &Path) -> Command {
    let mut cmd = Command::new("make");
    cmd.current_dir(dir).args(["-s", "--no-print-directory"]);
    cmd
}

#[test]
fn go_vet_race_tests_and_example_in_tree() {
    if !have_tool("go") || !have_tool("pkg-config") || !have_tool("make") {
        return;
    }
    let dir = work("go");
    let lib = target_dir();
    assert!(lib.join("libtryvox.so").exists(), "run cargo build first");
    run(
        "make go-pkgconfig",
        make(root())
            .arg("go-pkgconfig")
            .arg(format!("GO_OUT={}", dir.display()))
            .arg(format!("GO_LIBDIR={}", lib.display())),
        Duration::from_secs(30),
    );
    let pc = dir.join("pkgconfig");
    let module = root().join("bindings/go");
    let limit = Duration::from_secs(85);
    run("go vet", go(&module, &pc).args(["vet", "./..."]), limit);
    let s = spawn(Config::default()).unwrap();
    let tls = tls_sim();
    let text = run(
        "go test -race",
        tls_trust_env(sim_env(&mut go(&module, &pc), &s), &tls, "pkg_go").args([
            "test",
            "-race",
            "-count=1",
            "-timeout=60s",
            "-v",
            "./...",
        ]),
        limit,
    );
    assert!(!text.contains("SKIP"), "the Go tests must run here");
    for t in [
        "TestHangupAsyncConcurrent",
        "TestHangupContext",
        "TestEveryOption",
        "TestStats",
        "TestTrustStore",
    ] {
        assert!(text.contains(&format!("--- PASS: {t}")), "{t} did not pass");
    }
    let exe = dir.join("go-example");
    run(
        "go build example",
        go(&module, &pc)
            .args(["build", "-race", "-o"])
            .arg(&exe)
            .arg("./example"),
        limit,
    );
    let ids = seed_calls(&s, 6);
    let text = run(
        "Go example",
        sim_env(&mut Command::new(&exe), &s).args(&ids),
        Duration::from_secs(30),
    );
    assert!(text.contains("Go example: ok"));
}

/// bindings/go/README.md, "outside this repository": make install, then a module of the
/// user's own that requires the binding through a replace directive; pkg-config alone
/// finds the header and the library.
#[test]
fn go_user_module_against_make_install() {
    if !have_tool("go") || !have_tool("pkg-config") || !have_tool("make") {
        return;
    }
    let dir = work("go-user");
    let prefix = dir.join("prefix");
    run(
        "make install-files",
        make(root())
            .arg("install-files")
            .arg(format!("PREFIX={}", prefix.display()))
            .arg(format!("BUILD={}", target_dir().display())),
        Duration::from_secs(60),
    );
    let pc = prefix.join("lib/pkgconfig");
    assert!(pc.join("tryvox.pc").is_file());
    let app = dir.join("app");
    std::fs::create_dir_all(&app).unwrap();
    std::fs::write(
        app.join("main.go"),
        r#"package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/tryvox/libtryvox/bindings/go/tryvox"
)

func main() {
	c, err := tryvox.NewClient(os.Getenv("TRYVOX_ACCOUNT_ID"), os.Getenv("TRYVOX_API_KEY"),
		&tryvox.Options{BaseURL: os.Getenv("TRYVOX_BASE_URL")})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.HangupContext(ctx, os.Args[1]); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Println("user module: ok, libtryvox", tryvox.Version())
}
"#,
    )
    .unwrap();
    let binding = root().join("bindings/go");
    let limit = Duration::from_secs(60);
    run(
        "go mod init",
        go(&app, &pc).args(["mod", "init", "example.com/hangup"]),
        limit,
    );
    run(
        "go mod edit",
        go(&app, &pc)
            .args([
                "mod",
                "edit",
                "-require=github.com/tryvox/libtryvox/bindings/go@v0.0.0",
            ])
            .arg(format!(
                "-replace=github.com/tryvox/libtryvox/bindings/go={}",
                binding.display()
            )),
        limit,
    );
    run(
        "go build (user module)",
        go(&app, &pc).args(["build", "-o", "hangup", "."]),
        limit,
    );
    let s = spawn(Config::default()).unwrap();
    let ids = seed_calls(&s, 1);
    let text = run(
        "user module",
        sim_env(&mut Command::new(app.join("hangup")), &s)
            .arg(&ids[0])
            .env("LD_LIBRARY_PATH", prefix.join("lib")),
        Duration::from_secs(30),
    );
    assert!(text.contains("user module: ok"));
}

#[test]
fn csharp_mono_package_layout_async_and_options() {
    if !have_tool("mcs") || !have_tool("mono") || !have_tool("make") {
        return;
    }
    let dir = work("csharp");
    let out = dir.join("out");
    run(
        "make csharp",
        make(root())
            .arg("csharp")
            .arg(format!("CS_OUT={}", out.display()))
            .arg(format!("CS_LIBDIR={}", target_dir().display())),
        Duration::from_secs(60),
    );
    // The NuGet layout, next to the assembly, found through Tryvox.dll.config.
    assert!(out.join("runtimes/linux-x64/native/libtryvox.so").is_file());
    assert!(out.join("Tryvox.dll.config").is_file());
    let csproj = std::fs::read_to_string(root().join("bindings/csharp/Tryvox.csproj")).unwrap();
    assert!(
        csproj.contains(r#"Include="runtimes/linux-x64/native/libtryvox.so""#)
            && csproj.contains(r#"PackagePath="runtimes/linux-x64/native/""#),
        "Tryvox.csproj must pack the native library under runtimes/linux-x64/native/"
    );

    let s = spawn(Config::default()).unwrap();
    let tls = tls_sim();
    let text = run(
        "C# tests",
        tls_trust_env(sim_env(&mut Command::new("mono"), &s), &tls, "pkg_csharp")
            .arg("--debug")
            .arg(out.join("Tryvox.Tests.exe")),
        Duration::from_secs(60),
    );
    assert!(text.contains("C# tests: ok"));
    assert!(
        !text.contains("trust store: SKIPPED"),
        "the trust-store test must run whole here"
    );
    for t in [
        "HangupAsync, many at once",
        "HangupAsync cancellation",
        "every option",
        "stats",
        "trust store",
    ] {
        assert!(text.contains(&format!("ok   {t}")), "{t} did not pass");
    }
    let ids = seed_calls(&s, 6);
    let text = run(
        "C# example",
        sim_env(&mut Command::new("mono"), &s)
            .arg(out.join("Tryvox.Example.exe"))
            .args(&ids),
        Duration::from_secs(30),
    );
    assert!(text.contains("C# example: ok"));
}
