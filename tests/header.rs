//! The committed header is what cbindgen generates from the sources, it compiles cleanly
//! as C99 and C++11, and the shared library exports only `tryvox_*` symbols.

use std::path::Path;
use std::process::Command;

#[test]
fn committed_header_matches_generated() {
    let generated = std::fs::read_to_string(env!("TRYVOX_GENERATED_HEADER")).unwrap();
    let committed =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("include/tryvox.h"))
            .unwrap();
    assert!(
        generated == committed,
        "include/tryvox.h is stale: run `make header` and commit it"
    );
}

fn compiles(compiler: &str, std: &str, ext: &str) {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("header");
    std::fs::create_dir_all(&dir).unwrap();
    let src = dir.join(format!("use_header.{ext}"));
    std::fs::write(
        &src,
        "#include \"tryvox.h\"\n#include \"tryvox.h\"\n\
         int check(tryvox_client *c) { tryvox_status s = TRYVOX_OK; return tryvox_hangup(c, \"x\") == (int)s; }\n",
    )
    .unwrap();
    let out = Command::new(compiler)
        .args([
            std,
            "-Wall",
            "-Wextra",
            "-Werror",
            "-pedantic",
            "-fsyntax-only",
        ])
        .arg(format!("-I{}/include", env!("CARGO_MANIFEST_DIR")))
        .arg(&src)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{compiler} {std}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn header_is_clean_c99() {
    compiles("cc", "-std=c99", "c");
}

#[test]
fn header_is_clean_cxx11() {
    compiles("c++", "-std=c++11", "cpp");
}

#[test]
fn only_tryvox_symbols_are_exported() {
    let exe = std::env::current_exe().unwrap();
    let so = exe.parent().unwrap().parent().unwrap().join("libtryvox.so");
    let out = Command::new("nm")
        .args(["-D", "--defined-only"])
        .arg(&so)
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let names: Vec<&str> = text
        .lines()
        .filter_map(|l| l.split_whitespace().nth(2))
        .collect();
    assert!(names.contains(&"tryvox_hangup"));
    let foreign: Vec<&&str> = names.iter().filter(|n| !n.starts_with("tryvox_")).collect();
    assert!(foreign.is_empty(), "unexpected exports: {foreign:?}");
    let soname = Command::new("readelf")
        .args(["-d"])
        .arg(&so)
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&soname.stdout).contains("[libtryvox.so.0]"),
        "SONAME"
    );
}

/// What the library takes from the process: only versioned symbols of the system's
/// libraries, and the weak hooks of the C runtime's start files. An unversioned import
/// is a hook a host could define by accident: aws-lc's allocator hooks were (now defined
/// inside, src/aws_lc_mem.c); its `sdallocx` stays weak and is called only when no
/// allocator hook is defined, which never happens now.
#[test]
fn imports_only_system_library_symbols() {
    let exe = std::env::current_exe().unwrap();
    let so = exe.parent().unwrap().parent().unwrap().join("libtryvox.so");
    let out = Command::new("nm")
        .args(["-D", "--undefined-only"])
        .arg(&so)
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let allowed = [
        "_ITM_deregisterTMCloneTable",
        "_ITM_registerTMCloneTable",
        "__gmon_start__",
        "sdallocx",
    ];
    let unversioned: Vec<&str> = text
        .lines()
        .filter_map(|l| l.split_whitespace().last())
        .filter(|n| !n.contains('@') && !allowed.contains(n))
        .collect();
    assert!(
        unversioned.is_empty(),
        "unversioned imports: {unversioned:?}"
    );
}
