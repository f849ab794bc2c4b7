//! Builds tests/c/harness.c with the `cc` crate's compiler against include/tryvox.h and
//! the built libtryvox.so, runs it against a real HTTP server on 127.0.0.1, and under
//! valgrind (memcheck: no invalid access, no definite leak) when valgrind is installed.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use support::TestServer;

/// target/debug (or release): where cargo put libtryvox.so for this test run.
pub fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent().unwrap().parent().unwrap().to_path_buf()
}

/// A directory holding `libtryvox.so.0` (the SONAME) pointing at the built library.
fn lib_dir(out: &Path) -> PathBuf {
    let dir = out.join("lib");
    std::fs::create_dir_all(&dir).unwrap();
    let so = target_dir().join("libtryvox.so");
    assert!(so.exists(), "{} not built", so.display());
    for name in ["libtryvox.so", "libtryvox.so.0"] {
        let link = dir.join(name);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&so, &link).unwrap();
    }
    dir
}

fn compile(src: &str, out_name: &str) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("c");
    std::fs::create_dir_all(&out).unwrap();
    let lib = lib_dir(&out);
    let compiler = cc::Build::new()
        .cargo_metadata(false)
        .target("x86_64-unknown-linux-gnu")
        .host("x86_64-unknown-linux-gnu")
        .opt_level(1)
        .get_compiler();
    let exe = out.join(out_name);
    let status = compiler
        .to_command()
        .args(["-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", "-g"])
        .arg(format!("-I{}", root.join("include").display()))
        .arg(root.join(src))
        .arg("-o")
        .arg(&exe)
        .arg(format!("-L{}", lib.display()))
        .arg(format!("-Wl,-rpath,{}", lib.display()))
        .arg("-ltryvox")
        .status()
        .unwrap();
    assert!(status.success(), "compiling {src} failed");
    exe
}

fn have(tool: &str) -> bool {
    Command::new(tool).arg("--version").output().is_ok_and(|o| o.status.success())
}

#[test]
fn c_harness_against_a_real_server() {
    let exe = compile("tests/c/harness.c", "harness");
    let server = TestServer::start();
    let out = Command::new(&exe).arg(server.base_url()).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
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
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    println!("{text}");
    assert!(out.status.success(), "valgrind reported errors (exit {:?}):\n{text}", out.status.code());
    assert!(text.contains("definitely lost: 0 bytes") || text.contains("All heap blocks were freed"), "{text}");
}
