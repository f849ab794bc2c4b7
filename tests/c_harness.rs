//! Builds tests/c/harness.c with the `cc` crate's compiler against include/tryvox.h and
//! the built libtryvox.so, runs it against a real HTTP server on 127.0.0.1, and under
//! valgrind (memcheck: no invalid access, no definite leak) when valgrind is installed.

mod support;

use std::process::Command;

use support::{compile_c as compile, TestServer};

fn have(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn c_harness_against_a_real_server() {
    let exe = compile("tests/c/harness.c", "harness");
    let server = TestServer::start();
    let out = Command::new(&exe).arg(server.base_url()).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{text}");
    assert!(out.status.success(), "harness failed:\n{text}");
    assert!(!text.contains(support::API_KEY));
}

#[test]
fn c_harness_under_valgrind() {
    if !have("valgrind") {
        // CI installs valgrind and sets CI=true: there, its absence is a failure.
        assert!(std::env::var("CI").is_err(), "valgrind is required in CI");
        eprintln!("SKIPPED: valgrind is not installed");
        return;
    }
    let exe = compile("tests/c/harness.c", "harness-vg");
    let server = TestServer::start();
    let out = Command::new("valgrind")
        .args([
            "--error-exitcode=99",
            "--leak-check=full",
            "--errors-for-leak-kinds=definite",
            "--show-leak-kinds=definite",
            "--track-origins=no",
        ])
        .arg(&exe)
        .arg(server.base_url())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{text}");
    assert!(
        out.status.success(),
        "valgrind reported errors (exit {:?}):\n{text}",
        out.status.code()
    );
    assert!(
        text.contains("definitely lost: 0 bytes") || text.contains("All heap blocks were freed"),
        "{text}"
    );
}

#[test]
fn c_harness_under_address_and_leak_sanitizer() {
    if !have("clang") {
        assert!(std::env::var("CI").is_err(), "clang is required in CI");
        eprintln!("SKIPPED: clang is not installed");
        return;
    }
    // Build the normal way first: compile_c links the library directory in place.
    compile("tests/c/harness.c", "harness-libdir");
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("c");
    let exe = out.join("harness-asan");
    let status = Command::new("clang")
        .args(["-std=c99", "-Wall", "-Wextra", "-Werror", "-g", "-O1"])
        .args([
            "-fsanitize=address,undefined",
            "-fno-omit-frame-pointer",
            "-fno-sanitize-recover=all",
        ])
        .arg(format!("-I{}", root.join("include").display()))
        .arg(root.join("tests/c/harness.c"))
        .arg("-o")
        .arg(&exe)
        .arg(format!("-L{}", out.join("lib").display()))
        .arg(format!("-Wl,-rpath,{}", out.join("lib").display()))
        .arg("-ltryvox")
        .status()
        .unwrap();
    assert!(status.success(), "clang build failed");
    let server = TestServer::start();
    let run = Command::new(&exe)
        .arg(server.base_url())
        .env(
            "ASAN_OPTIONS",
            "detect_leaks=1:abort_on_error=0:exitcode=97",
        )
        .env("UBSAN_OPTIONS", "print_stacktrace=1:halt_on_error=1")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    println!("{text}");
    assert!(
        run.status.success(),
        "sanitizers reported a problem (exit {:?}):\n{text}",
        run.status.code()
    );
    assert!(
        !text.contains("ERROR: AddressSanitizer") && !text.contains("ERROR: LeakSanitizer"),
        "{text}"
    );
}

/// Threads sharing one client under memcheck (invalid access, leaks) and AddressSanitizer.
/// Not helgrind: it models only pthread primitives, so Rust std's futex-based Mutex and
/// LazyLock show up as false "possible data races"; ThreadSanitizer would need an
/// instrumented std (nightly -Zbuild-std), which this toolchain does not have.
#[test]
fn threads_sharing_a_client_under_memcheck_and_asan() {
    let exe = compile("tests/c/threads.c", "threads");
    let server = TestServer::start();
    let plain = Command::new(&exe).arg(server.base_url()).output().unwrap();
    assert!(
        plain.status.success(),
        "{}",
        String::from_utf8_lossy(&plain.stderr)
    );
    if have("valgrind") {
        let out = Command::new("valgrind")
            .args([
                "--error-exitcode=98",
                "--leak-check=full",
                "--errors-for-leak-kinds=definite",
            ])
            .arg(&exe)
            .arg(server.base_url())
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success(),
            "memcheck (exit {:?}):\n{text}",
            out.status.code()
        );
    } else {
        assert!(std::env::var("CI").is_err(), "valgrind is required in CI");
    }
    if have("clang") {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let lib = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("c/lib");
        let asan = exe.with_file_name("threads-asan");
        let ok = Command::new("clang")
            .args([
                "-std=c99",
                "-g",
                "-O1",
                "-fsanitize=address,undefined",
                "-fno-omit-frame-pointer",
            ])
            .arg(format!("-I{}", root.join("include").display()))
            .arg(root.join("tests/c/threads.c"))
            .arg("-o")
            .arg(&asan)
            .arg(format!("-L{}", lib.display()))
            .arg(format!("-Wl,-rpath,{}", lib.display()))
            .args(["-ltryvox", "-lpthread"])
            .status()
            .unwrap();
        assert!(ok.success());
        let out = Command::new(&asan)
            .arg(server.base_url())
            .env("ASAN_OPTIONS", "detect_leaks=1")
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success(),
            "ASan (exit {:?}):\n{text}",
            out.status.code()
        );
    } else {
        assert!(std::env::var("CI").is_err(), "clang is required in CI");
    }
}

/// No copy of the key survives `tryvox_client_free` in the process's writable memory.
#[test]
fn no_copy_of_the_key_survives_client_free() {
    let exe = compile("tests/c/wipe.c", "wipe");
    let server = TestServer::start();
    let out = Command::new(&exe).arg(server.base_url()).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{text}");
    assert!(out.status.success(), "{text}");
}
