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
