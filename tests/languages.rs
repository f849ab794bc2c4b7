//! Every language's example, run against the simulator: C (CLI, plain cc and CMake via an
//! installed prefix and pkg-config), C++ (tryvox.hpp), Go (cgo), C# (P/Invoke, Mono) and
//! Python (ctypes); plus the module-reload test and `make install`.
//!
//! A missing toolchain prints a loud SKIPPED line; with CI=true it is a failure.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

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
    let ids = seed_calls(&s, 2);
    let run = |args: &[&str]| {
        env_cmd(&mut Command::new(&exe), &s)
            .args(args)
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
    assert_eq!(run(&[]).status.code(), Some(64), "usage");
    let out = run(&[&ids[1], "nope"]);
    assert_eq!(out.status.code(), Some(2));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("call already ended") && text.contains("call not found"),
        "{text}"
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
    check(
        "C++",
        env_cmd(&mut Command::new(&exe), &s)
            .args(&ids)
            .output()
            .unwrap(),
    );
}

#[test]
fn go_binding() {
    if !have_tool("go") {
        return;
    }
    let dir = work("go");
    let exe = dir.join("go-example");
    let out = Command::new("go")
        .current_dir(root().join("bindings/go"))
        .args(["build", "-o"])
        .arg(&exe)
        .arg("./example")
        .env("CGO_ENABLED", "1")
        .env(
            "CGO_CFLAGS",
            format!("-I{}", root().join("include").display()),
        )
        .env("CGO_LDFLAGS", format!("-L{}", c_lib_dir().display()))
        .env("GOCACHE", dir.join("cache"))
        .env("GOPATH", dir.join("gopath"))
        .env("GOFLAGS", "-mod=mod")
        .env("GOTOOLCHAIN", "local")
        .env("GOPROXY", "off")
        .output()
        .unwrap();
    check("go build", out);
    let s = spawn(Config::default()).unwrap();
    let ids = seed_calls(&s, 6);
    let text = check(
        "Go",
        env_cmd(&mut Command::new(&exe), &s)
            .args(&ids)
            .output()
            .unwrap(),
    );
    assert!(text.contains("Go example: ok"));
}

#[test]
fn csharp_binding() {
    if !have_tool("mcs") || !have_tool("mono") {
        return;
    }
    let dir = work("csharp");
    let exe = dir.join("example.exe");
    let out = Command::new("mcs")
        .arg(format!("-out:{}", exe.display()))
        .arg(root().join("bindings/csharp/Tryvox.cs"))
        .arg(root().join("bindings/csharp/Program.cs"))
        .output()
        .unwrap();
    check("mcs", out);
    let s = spawn(Config::default()).unwrap();
    let ids = seed_calls(&s, 6);
    let text = check(
        "C#",
        env_cmd(&mut Command::new("mono"), &s)
            .arg(&exe)
            .args(&ids)
            .output()
            .unwrap(),
    );
    assert!(text.contains("C# example: ok"));
}

#[test]
fn python_binding() {
    if !have_tool("python3") {
        return;
    }
    let s = spawn(Config::default()).unwrap();
    let ids = seed_calls(&s, 6);
    let text = check(
        "Python",
        env_cmd(&mut Command::new("python3"), &s)
            .arg(root().join("bindings/python/example.py"))
            .args(&ids)
            .env("PYTHONPATH", root().join("bindings/python"))
            .env("TRYVOX_LIB", c_lib_dir().join("libtryvox.so.0"))
            .output()
            .unwrap(),
    );
    assert!(text.contains("Python example: ok"));
}

/// What a real unload loses, and only that: memory a lazily initialised static of the
/// library points to (ureq's `Accept` header, built once per load) is unreachable once
/// dlclose unmaps the library's data. An initialiser runs once per load, so nothing that
/// grows with use can hide behind this; the test also bounds the total it covers.
const RELOAD_SUPPRESSIONS: &str = "{
   lazily-initialised-static-lost-when-dlclose-unmaps-the-library
   Memcheck:Leak
   match-leak-kinds: definite
   fun:malloc
   ...
   fun:*lazy_lock*LazyLock*force*
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

#[test]
fn make_install_then_pkg_config_and_cmake() {
    if !have_tool("make") || !have_tool("pkg-config") {
        return;
    }
    let dir = work("install");
    let prefix = dir.join("prefix");
    let out = Command::new("make")
        .current_dir(root())
        .arg("install-files")
        .arg(format!("PREFIX={}", prefix.display()))
        .arg(format!("BUILD={}", target_dir().display()))
        .output()
        .unwrap();
    check("make install-files", out);
    let version = env!("CARGO_PKG_VERSION");
    let lib = prefix.join("lib");
    for f in [
        format!("libtryvox.so.{version}"),
        "libtryvox.a".into(),
        "pkgconfig/tryvox.pc".into(),
    ] {
        assert!(lib.join(&f).is_file(), "{f}");
    }
    assert_eq!(
        std::fs::read_link(lib.join("libtryvox.so.0")).unwrap(),
        PathBuf::from(format!("libtryvox.so.{version}"))
    );
    assert_eq!(
        std::fs::read_link(lib.join("libtryvox.so")).unwrap(),
        PathBuf::from("libtryvox.so.0")
    );
    assert!(
        prefix.join("include/tryvox.h").is_file() && prefix.join("include/tryvox.hpp").is_file()
    );

    // A C program built with pkg-config only.
    let pc = Command::new("pkg-config")
        .args(["--cflags", "--libs", "tryvox"])
        .env("PKG_CONFIG_PATH", lib.join("pkgconfig"))
        .output()
        .unwrap();
    let flags = check("pkg-config", pc);
    let exe = dir.join("tryvox-hangup");
    let mut cc = Command::new("cc");
    cc.args(["-std=c99", "-Wall", "-Wextra", "-Werror"])
        .arg(root().join("examples/tryvox-hangup.c"))
        .arg("-o")
        .arg(&exe);
    cc.args(flags.split_whitespace());
    check("cc with pkg-config flags", cc.output().unwrap());
    let s = spawn(Config::default()).unwrap();
    let ids = seed_calls(&s, 2);
    let out = Command::new(&exe)
        .arg(&ids[0])
        .env("TRYVOX_BASE_URL", &s.base_url)
        .env("TRYVOX_ACCOUNT_ID", ACCOUNT)
        .env("TRYVOX_API_KEY", KEY)
        .env("LD_LIBRARY_PATH", &lib)
        .output()
        .unwrap();
    check("installed tryvox-hangup", out);

    // The same examples with CMake, finding the installed library through pkg-config.
    if !have_tool("cmake") {
        return;
    }
    let build = dir.join("cmake-build");
    let out = Command::new("cmake")
        .arg("-S")
        .arg(root().join("examples"))
        .arg("-B")
        .arg(&build)
        .env("PKG_CONFIG_PATH", lib.join("pkgconfig"))
        .output()
        .unwrap();
    check("cmake configure", out);
    check(
        "cmake build",
        Command::new("cmake")
            .arg("--build")
            .arg(&build)
            .output()
            .unwrap(),
    );
    let out = Command::new(build.join("hangup-cpp"))
        .args(seed_calls(&s, 5))
        .env("TRYVOX_BASE_URL", &s.base_url)
        .env("TRYVOX_ACCOUNT_ID", ACCOUNT)
        .env("TRYVOX_API_KEY", KEY)
        .env("LD_LIBRARY_PATH", &lib)
        .output()
        .unwrap();
    check("CMake-built C++ example", out);
    let out = Command::new(build.join("tryvox-hangup"))
        .arg(&ids[1])
        .env("TRYVOX_BASE_URL", &s.base_url)
        .env("TRYVOX_ACCOUNT_ID", ACCOUNT)
        .env("TRYVOX_API_KEY", KEY)
        .env("LD_LIBRARY_PATH", &lib)
        .output()
        .unwrap();
    check("CMake-built tryvox-hangup", out);
}
