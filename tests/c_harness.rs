//! C programs written only from include/tryvox.h, built with the `cc` crate's compiler
//! against the built libtryvox.so and run against a real HTTP server on 127.0.0.1:
//! plainly, under valgrind memcheck (no invalid access, no definite leak) and under
//! clang's AddressSanitizer, UBSan and LeakSanitizer.

mod support;

use std::path::Path;
use std::process::{Command, Output};

use support::{compile_c, compile_c_asan, have_tool, TestServer};

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs `exe BASE_URL`, plainly or under a tool, and requires success.
fn run_ok(what: &str, tool: &[&str], exe: &Path, server: &TestServer) -> String {
    let mut cmd = match tool.split_first() {
        Some((first, rest)) => {
            let mut c = Command::new(first);
            c.args(rest).arg(exe);
            c
        }
        None => Command::new(exe),
    };
    let out = cmd
        .arg(server.base_url())
        .env("ASAN_OPTIONS", "detect_leaks=1:exitcode=97")
        .env("UBSAN_OPTIONS", "print_stacktrace=1:halt_on_error=1")
        .output()
        .unwrap();
    let t = text(&out);
    println!("--- {what}\n{t}");
    assert!(
        out.status.success(),
        "{what} failed (exit {:?}):\n{t}",
        out.status.code()
    );
    assert!(!t.contains(support::API_KEY), "{what} printed the key");
    t
}

const MEMCHECK: &[&str] = &[
    "valgrind",
    "--error-exitcode=99",
    "--leak-check=full",
    "--errors-for-leak-kinds=definite",
    "--show-leak-kinds=definite",
];

#[test]
fn c_harness_against_a_real_server() {
    let exe = compile_c("tests/c/harness.c", "harness");
    let t = run_ok("harness", &[], &exe, &TestServer::start());
    assert!(t.contains("0 failures"), "{t}");
}

#[test]
fn c_harness_under_valgrind() {
    if !have_tool("valgrind") {
        return;
    }
    let exe = compile_c("tests/c/harness.c", "harness-vg");
    let t = run_ok(
        "harness under memcheck",
        MEMCHECK,
        &exe,
        &TestServer::start(),
    );
    assert!(
        t.contains("definitely lost: 0 bytes") || t.contains("All heap blocks were freed"),
        "{t}"
    );
}

#[test]
fn c_harness_under_address_and_leak_sanitizer() {
    if !have_tool("clang") {
        return;
    }
    let exe = compile_c_asan("tests/c/harness.c", "harness-asan");
    let t = run_ok(
        "harness under ASan/UBSan/LSan",
        &[],
        &exe,
        &TestServer::start(),
    );
    assert!(
        !t.contains("ERROR: AddressSanitizer") && !t.contains("ERROR: LeakSanitizer"),
        "{t}"
    );
}

/// Threads sharing one client under memcheck (invalid access, leaks) and AddressSanitizer.
/// Not helgrind: it models only pthread primitives, so Rust std's futex-based Mutex and
/// LazyLock show up as false "possible data races"; ThreadSanitizer would need an
/// instrumented std (nightly -Zbuild-std), which this toolchain does not have.
#[test]
fn threads_sharing_a_client_under_memcheck_and_asan() {
    let exe = compile_c("tests/c/threads.c", "threads");
    let server = TestServer::start();
    run_ok("threads", &[], &exe, &server);
    if have_tool("valgrind") {
        run_ok("threads under memcheck", MEMCHECK, &exe, &server);
    }
    if have_tool("clang") {
        let asan = compile_c_asan("tests/c/threads.c", "threads-asan");
        run_ok("threads under ASan", &[], &asan, &server);
    }
}

/// No copy of the key survives `tryvox_client_free` in the process's writable memory.
#[test]
fn no_copy_of_the_key_survives_client_free() {
    let exe = compile_c("tests/c/wipe.c", "wipe");
    let t = run_ok("wipe", &[], &exe, &TestServer::start());
    assert!(t.contains("after tryvox_client_free: 0"), "{t}");
}
