//! Native packaging, tested the way users consume it:
//! - `make install-files` into a prefix: the stripped library with its debug info apart,
//!   the CLI, a C program built with pkg-config only;
//! - the installed CMake package (find_package(tryvox CONFIG), tryvox::tryvox) building
//!   the examples, shared and static, with CMake alone;
//! - `make deb-files`: the Debian packages installed with dpkg -i on this machine (root
//!   only), a C program built with pkg-config only and run against the packaged
//!   simulator, then removed (also when the test fails).
//!
//! A missing toolchain (or not being root, for dpkg) prints a loud SKIPPED line; with
//! CI=true it is a failure.

mod support;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use support::{have_tool, seed_calls, target_dir};
use tryvox_sim::server::{DEFAULT_ACCOUNT as ACCOUNT, DEFAULT_API_KEY as KEY};
use tryvox_sim::{spawn, Config};

const VERSION: &str = env!("CARGO_PKG_VERSION");

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn work(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("pkg_native")
        .join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Runs `cmd` with a deadline (killing it past that) and returns its output.
fn run(cmd: &mut Command, limit: Duration) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    // Drain the pipes on threads so a chatty child never blocks on a full pipe.
    let mut so = child.stdout.take().unwrap();
    let mut se = child.stderr.take().unwrap();
    let t1 = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = std::io::Read::read_to_end(&mut so, &mut v);
        v
    });
    let t2 = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = std::io::Read::read_to_end(&mut se, &mut v);
        v
    });
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} took more than {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: t1.join().unwrap(),
        stderr: t2.join().unwrap(),
    }
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

fn with_api<'a>(cmd: &'a mut Command, base_url: &str) -> &'a mut Command {
    cmd.env("TRYVOX_BASE_URL", base_url)
        .env("TRYVOX_ACCOUNT_ID", ACCOUNT)
        .env("TRYVOX_API_KEY", KEY)
        .env_remove("LD_LIBRARY_PATH")
}

/// Section names of an ELF file (readelf, from binutils).
fn sections(file: &Path) -> String {
    check(
        "readelf -S",
        run(
            Command::new("readelf").arg("-S").arg("-W").arg(file),
            Duration::from_secs(30),
        ),
    )
}

fn needed(file: &Path) -> String {
    check(
        "readelf -d",
        run(
            Command::new("readelf").arg("-d").arg(file),
            Duration::from_secs(30),
        ),
    )
}

/// The stripped library has no debug sections and names its debug file, which has them
/// and which the debuglink's CRC matches (readelf finds it next to a copy of the library).
fn assert_split_debug(lib: &Path, debug: &Path, scratch: &Path) {
    let s = sections(lib);
    assert!(!s.contains(".debug_"), "{} is not stripped", lib.display());
    assert!(!s.contains(".symtab"), "{} keeps .symtab", lib.display());
    assert!(
        s.contains(".gnu_debuglink"),
        "{} has no debuglink",
        lib.display()
    );
    assert!(
        sections(debug).contains(".debug_line"),
        "{} has no debug info",
        debug.display()
    );
    std::fs::create_dir_all(scratch).unwrap();
    let name = lib.file_name().unwrap();
    std::fs::copy(lib, scratch.join(name)).unwrap();
    std::fs::copy(debug, scratch.join(debug.file_name().unwrap())).unwrap();
    let out = run(
        Command::new("readelf")
            .arg("--debug-dump=links")
            .arg(scratch.join(name)),
        Duration::from_secs(30),
    );
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        text.contains("Found separate debug info file"),
        "the debuglink does not match {}:\n{text}",
        debug.display()
    );
    let size = |p: &Path| std::fs::metadata(p).unwrap().len();
    println!(
        "installed library {} bytes (stripped), debug file {} bytes",
        size(lib),
        size(debug)
    );
}

fn make_install(prefix: &Path) {
    let out = run(
        Command::new("make")
            .current_dir(root())
            .arg("--no-print-directory")
            .arg("install-files")
            .arg(format!("PREFIX={}", prefix.display()))
            .arg(format!("BUILD={}", target_dir().display())),
        Duration::from_secs(120),
    );
    check("make install-files", out);
}

#[test]
fn make_install_then_pkg_config_and_cmake() {
    if !have_tool("make") || !have_tool("pkg-config") || !have_tool("readelf") {
        return;
    }
    let dir = work("install");
    let prefix = dir.join("prefix");
    make_install(&prefix);
    let lib = prefix.join("lib");
    for f in [
        format!("libtryvox.so.{VERSION}"),
        "libtryvox.a".into(),
        "pkgconfig/tryvox.pc".into(),
        "cmake/tryvox/tryvox-config.cmake".into(),
        "cmake/tryvox/tryvox-config-version.cmake".into(),
    ] {
        assert!(lib.join(&f).is_file(), "{f}");
    }
    assert_eq!(
        std::fs::read_link(lib.join("libtryvox.so.0")).unwrap(),
        PathBuf::from(format!("libtryvox.so.{VERSION}"))
    );
    assert_eq!(
        std::fs::read_link(lib.join("libtryvox.so")).unwrap(),
        PathBuf::from("libtryvox.so.0")
    );
    assert!(
        prefix.join("include/tryvox.h").is_file() && prefix.join("include/tryvox.hpp").is_file()
    );
    // Stripped, with the debug info under lib/debug/<libdir>/ named by the debuglink.
    let so = lib.join(format!("libtryvox.so.{VERSION}"));
    let debug = prefix.join(format!(
        "lib/debug/{}/libtryvox.so.{VERSION}.debug",
        lib.display().to_string().trim_start_matches('/')
    ));
    assert_split_debug(&so, &debug, &dir.join("debuglink"));
    assert!(
        !sections(&lib.join("libtryvox.a")).contains(".debug_info"),
        "libtryvox.a keeps its debug info"
    );

    let s = spawn(Config::default()).unwrap();
    let ids = seed_calls(&s, 4);

    // The CLI the Makefile built in the build directory runs in place: its RUNPATH ends
    // with $ORIGIN and the SONAME link libtryvox.so.0 is beside it.
    let built_cli = target_dir().join("tryvox-hangup");
    assert_eq!(
        std::fs::read_link(target_dir().join("libtryvox.so.0")).unwrap(),
        PathBuf::from("libtryvox.so")
    );
    let out = run(
        with_api(&mut Command::new(&built_cli), &s.base_url).arg(&ids[3]),
        Duration::from_secs(30),
    );
    check("tryvox-hangup in the build directory", out);

    // The CLI `make install` puts in bin/ finds lib/ by itself (RUNPATH $ORIGIN/../lib).
    let cli = prefix.join("bin/tryvox-hangup");
    let out = run(
        with_api(&mut Command::new(&cli), &s.base_url).arg(&ids[0]),
        Duration::from_secs(30),
    );
    check("installed bin/tryvox-hangup", out);
    let out = run(
        with_api(&mut Command::new(&cli), &s.base_url).arg(&ids[0]),
        Duration::from_secs(30),
    );
    assert_eq!(out.status.code(), Some(2), "already ended");

    // A C program built with pkg-config only.
    let pc = Command::new("pkg-config")
        .args(["--cflags", "--libs", "tryvox"])
        .env("PKG_CONFIG_PATH", lib.join("pkgconfig"))
        .output()
        .unwrap();
    let flags = check("pkg-config", pc);
    assert!(flags.contains(&format!("-L{}", lib.display())), "{flags}");
    let exe = dir.join("tryvox-hangup");
    let mut cc = Command::new("cc");
    cc.args(["-std=c99", "-Wall", "-Wextra", "-Werror"])
        .arg(root().join("examples/tryvox-hangup.c"))
        .arg("-o")
        .arg(&exe)
        .args(flags.split_whitespace());
    check(
        "cc with pkg-config flags",
        run(&mut cc, Duration::from_secs(60)),
    );
    let out = run(
        with_api(&mut Command::new(&exe), &s.base_url)
            .arg(&ids[1])
            .env("LD_LIBRARY_PATH", &lib),
        Duration::from_secs(30),
    );
    check("tryvox-hangup built with pkg-config", out);
}

/// Configures and builds examples/ with CMake alone against `prefix_path` (None: the
/// system's prefixes) and returns the build directory.
fn cmake_examples(dir: &Path, name: &str, prefix_path: Option<&Path>, static_: bool) -> PathBuf {
    let build = dir.join(name);
    let mut cfg = Command::new("cmake");
    cfg.arg("-S")
        .arg(root().join("examples"))
        .arg("-B")
        .arg(&build)
        .arg(format!(
            "-DTRYVOX_USE_STATIC_LIBS={}",
            if static_ { "ON" } else { "OFF" }
        ))
        .env_remove("PKG_CONFIG_PATH");
    if let Some(p) = prefix_path {
        cfg.arg(format!("-DCMAKE_PREFIX_PATH={}", p.display()));
    }
    let text = check("cmake configure", run(&mut cfg, Duration::from_secs(60)));
    let kind = if static_ { "(STATIC)" } else { "(SHARED)" };
    assert!(text.contains(kind), "{text}");
    let out = run(
        Command::new("cmake").arg("--build").arg(&build),
        Duration::from_secs(120),
    );
    check("cmake build", out);
    build
}

/// Runs the CMake-built tryvox-hangup and hangup-cpp against a fresh simulator.
fn run_examples(build: &Path, static_: bool) {
    let s = spawn(Config::default()).unwrap();
    let ids = seed_calls(&s, 6);
    for exe in ["tryvox-hangup", "hangup-cpp"] {
        let dynamic = needed(&build.join(exe)).contains("libtryvox.so.0");
        assert_eq!(dynamic, !static_, "{exe}: linked the wrong libtryvox");
    }
    let out = run(
        with_api(&mut Command::new(build.join("tryvox-hangup")), &s.base_url).arg(&ids[0]),
        Duration::from_secs(30),
    );
    check("CMake-built tryvox-hangup", out);
    let out = run(
        with_api(&mut Command::new(build.join("hangup-cpp")), &s.base_url).args(&ids[1..]),
        Duration::from_secs(60),
    );
    check("CMake-built hangup-cpp", out);
}

#[test]
fn cmake_package_shared_and_static() {
    if !have_tool("make") || !have_tool("cmake") || !have_tool("c++") || !have_tool("readelf") {
        return;
    }
    let dir = work("cmake");
    let prefix = dir.join("prefix");
    make_install(&prefix);
    // The package is relocatable: move the whole prefix and find it there.
    let moved = dir.join("moved");
    std::fs::rename(&prefix, &moved).unwrap();
    let build = cmake_examples(&dir, "shared", Some(&moved), false);
    run_examples(&build, false);
    let build = cmake_examples(&dir, "static", Some(&moved), true);
    run_examples(&build, true);

    // A version that is not installed, and a missing component, are refused.
    let probe = dir.join("probe");
    std::fs::create_dir_all(&probe).unwrap();
    std::fs::write(
        probe.join("CMakeLists.txt"),
        "cmake_minimum_required(VERSION 3.13)\nproject(probe C)\n\
         find_package(tryvox ${WANT} CONFIG REQUIRED COMPONENTS ${COMPONENTS})\n",
    )
    .unwrap();
    let try_find = |want: &str, components: &str| {
        let _ = std::fs::remove_dir_all(probe.join("b"));
        run(
            Command::new("cmake")
                .arg("-S")
                .arg(&probe)
                .arg("-B")
                .arg(probe.join("b"))
                .arg(format!("-DCMAKE_PREFIX_PATH={}", moved.display()))
                .arg(format!("-DWANT={want}"))
                .arg(format!("-DCOMPONENTS={components}")),
            Duration::from_secs(60),
        )
        .status
        .success()
    };
    assert!(
        try_find(VERSION, "shared;static"),
        "{VERSION} shared;static"
    );
    assert!(!try_find("99.0", "shared"), "version 99.0 was accepted");
    assert!(
        !try_find(VERSION, "python"),
        "an unknown component was accepted"
    );
}

// ---------------------------------------------------------------------------------------
// Debian packages

const PACKAGES: [&str; 6] = [
    "libtryvox0",
    "libtryvox-dev",
    "libtryvox0-dbgsym",
    "tryvox-hangup",
    "tryvox-sim",
    "tryvox-sim-dbgsym",
];

/// The dpkg status of a package, None when dpkg does not know it.
fn dpkg_status(pkg: &str) -> Option<String> {
    let out = Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", pkg])
        .stderr(Stdio::null())
        .output()
        .unwrap();
    let s = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    (out.status.success() && !s.is_empty() && !s.ends_with("not-installed")).then_some(s)
}

/// Removes the packages this test installed, whatever happened in between.
struct Installed {
    armed: bool,
}

impl Drop for Installed {
    fn drop(&mut self) {
        if self.armed {
            let out = Command::new("dpkg").arg("--purge").args(PACKAGES).output();
            eprintln!("cleanup: dpkg --purge {PACKAGES:?}: {out:?}");
        }
    }
}

/// A process killed and reaped when dropped.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the packaged simulator; returns it and its base URL (its first line).
fn start_sim(exe: &Path) -> (Reaped, String) {
    let mut child = Reaped(
        Command::new(exe)
            .arg("--quiet")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let stdout = child.0.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("the packaged tryvox-sim printed no base URL");
    let url = line.trim().to_owned();
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    (child, url)
}

fn seed(base_url: &str, n: usize) -> Vec<String> {
    let a: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into();
    let mut r = a
        .post(format!("{base_url}/_sim/seed"))
        .header("content-type", "application/json")
        .send(format!(r#"{{"count":{n}}}"#).as_bytes())
        .unwrap();
    let v: serde_json::Value =
        serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap();
    v["call_uuids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap().to_owned())
        .collect()
}

fn deb_field(deb: &Path, field: &str) -> String {
    let out = Command::new("dpkg-deb")
        .arg("-f")
        .arg(deb)
        .arg(field)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[test]
fn deb_packages_install_build_run_remove() {
    // SAFETY: geteuid has no preconditions.
    let is_root = unsafe { libc::geteuid() } == 0;
    if !is_root {
        assert!(
            std::env::var("CI").is_err(),
            "the deb test runs dpkg -i: CI runs as root"
        );
        eprintln!("\n==================== SKIPPED: dpkg -i needs root ====================\n");
        return;
    }
    for t in [
        "dpkg-deb",
        "dpkg-shlibdeps",
        "make",
        "cc",
        "pkg-config",
        "readelf",
    ] {
        if !have_tool(t) {
            return;
        }
    }
    let ma = check(
        "multiarch",
        Command::new("cc").arg("-print-multiarch").output().unwrap(),
    )
    .trim()
    .to_owned();
    let libdir = PathBuf::from(format!("/usr/lib/{ma}"));
    // Someone else's install (or files dpkg would silently take over): leave them alone.
    let theirs: Vec<String> = PACKAGES
        .iter()
        .filter_map(|p| dpkg_status(p).map(|s| format!("{p}: {s}")))
        .chain(
            [
                libdir.join("libtryvox.so.0"),
                libdir.join("libtryvox.so"),
                libdir.join("pkgconfig/tryvox.pc"),
                "/usr/include/tryvox.h".into(),
                "/usr/bin/tryvox-sim".into(),
                "/usr/bin/tryvox-hangup".into(),
            ]
            .into_iter()
            .filter(|f| f.symlink_metadata().is_ok())
            .map(|f| format!("{} exists", f.display())),
        )
        .collect();
    if !theirs.is_empty() {
        eprintln!(
            "\n==================== SKIPPED: libtryvox is already installed here \
             ({theirs:?}); not touching it ====================\n"
        );
        return;
    }
    let sim = target_dir().join("tryvox-sim");
    assert!(
        sim.is_file(),
        "{} is not built: run `cargo build --workspace` first (`make test` does)",
        sim.display()
    );

    // Build the packages from this run's build (gzip -1: the compression is not under test).
    let dir = work("deb");
    let debdir = dir.join("debs");
    let out = run(
        Command::new("make")
            .current_dir(root())
            .arg("--no-print-directory")
            .arg("deb-files")
            .arg(format!("BUILD={}", target_dir().display()))
            .arg(format!("DEBDIR={}", debdir.display()))
            .env("DEB_COMPRESS", "-Zgzip -z1"),
        Duration::from_secs(150),
    );
    check("make deb-files", out);
    let debver = format!("{VERSION}-1");
    let arch = check(
        "dpkg --print-architecture",
        Command::new("dpkg")
            .arg("--print-architecture")
            .output()
            .unwrap(),
    )
    .trim()
    .to_owned();
    let debs: Vec<PathBuf> = PACKAGES
        .iter()
        .map(|p| debdir.join(format!("{p}_{debver}_{arch}.deb")))
        .collect();
    for d in &debs {
        assert!(d.is_file(), "{} was not built", d.display());
        assert_eq!(deb_field(d, "Version"), debver);
    }
    // The SONAME is in the library package's name, its dependencies come from
    // dpkg-shlibdeps, and it has a symbols file; the CLI depends on it through it.
    let lib_deps = deb_field(&debs[0], "Depends");
    assert!(
        lib_deps.contains("libc6 (>= "),
        "libtryvox0 Depends: {lib_deps}"
    );
    assert_eq!(
        deb_field(&debs[1], "Depends"),
        format!("libtryvox0 (= {debver})")
    );
    let cli_deps = deb_field(&debs[3], "Depends");
    assert!(
        cli_deps.contains(&format!("libtryvox0 (>= {VERSION})")),
        "tryvox-hangup Depends: {cli_deps}"
    );
    assert!(deb_field(&debs[4], "Depends").contains("libc6"));
    let symbols = check(
        "dpkg-deb --info symbols",
        Command::new("dpkg-deb")
            .arg("--info")
            .arg(&debs[0])
            .arg("symbols")
            .output()
            .unwrap(),
    );
    assert!(
        symbols.starts_with("libtryvox.so.0 libtryvox0 #MINVER#")
            && symbols.contains(" tryvox_hangup@Base "),
        "{symbols}"
    );

    // Install them all; from here on the guard removes them whatever happens.
    let mut guard = Installed { armed: true };
    let out = run(
        Command::new("dpkg").arg("-i").args(&debs),
        Duration::from_secs(120),
    );
    check("dpkg -i", out);
    for p in PACKAGES {
        assert_eq!(
            dpkg_status(p).as_deref(),
            Some("install ok installed"),
            "{p}"
        );
    }
    let so = libdir.join(format!("libtryvox.so.{VERSION}"));
    let s = sections(&so);
    assert!(
        !s.contains(".debug_") && s.contains(".gnu_debuglink"),
        "{s}"
    );
    // readelf looks where gdb does: /usr/lib/debug/<the library's directory>/.
    let links = run(
        Command::new("readelf").arg("--debug-dump=links").arg(&so),
        Duration::from_secs(30),
    );
    let text = String::from_utf8_lossy(&links.stdout).into_owned()
        + &String::from_utf8_lossy(&links.stderr);
    assert!(text.contains("Found separate debug info file"), "{text}");
    println!(
        "packaged {} is {} bytes",
        so.display(),
        std::fs::metadata(&so).unwrap().len()
    );

    // A C program built with pkg-config only, run against the packaged simulator.
    let pc = run(
        Command::new("pkg-config")
            .args(["--cflags", "--libs", "tryvox"])
            .env_remove("PKG_CONFIG_PATH"),
        Duration::from_secs(30),
    );
    let flags = check("pkg-config", pc);
    let exe = dir.join("hangup-pc");
    let mut cc = Command::new("cc");
    cc.args(["-std=c99", "-Wall", "-Wextra", "-Werror"])
        .arg(root().join("examples/tryvox-hangup.c"))
        .arg("-o")
        .arg(&exe)
        .args(flags.split_whitespace())
        .env_remove("LIBRARY_PATH")
        .env_remove("CPATH")
        .env_remove("C_INCLUDE_PATH");
    check(
        "cc with pkg-config flags",
        run(&mut cc, Duration::from_secs(60)),
    );
    assert!(needed(&exe).contains("libtryvox.so.0"));
    let (sim_proc, url) = start_sim(Path::new("/usr/bin/tryvox-sim"));
    let ids = seed(&url, 7);
    let out = run(
        with_api(&mut Command::new(&exe), &url).args(&ids[..2]),
        Duration::from_secs(30),
    );
    check("pkg-config-built tryvox-hangup", out);
    let out = run(
        with_api(&mut Command::new("/usr/bin/tryvox-hangup"), &url).arg(&ids[2]),
        Duration::from_secs(30),
    );
    check("packaged tryvox-hangup", out);
    let out = run(
        with_api(&mut Command::new("/usr/bin/tryvox-hangup"), &url).arg(&ids[2]),
        Duration::from_secs(30),
    );
    assert_eq!(out.status.code(), Some(2), "already ended");

    // CMake finds the packaged library without being told where.
    if have_tool("cmake") && have_tool("c++") {
        let build = cmake_examples(&dir, "cmake-system", None, false);
        let out = run(
            with_api(&mut Command::new(build.join("hangup-cpp")), &url).args(&ids[3..]),
            Duration::from_secs(60),
        );
        check("CMake-built hangup-cpp (system package)", out);
    }
    drop(sim_proc);

    // Remove them cleanly: nothing of theirs is left.
    let out = run(
        Command::new("dpkg").arg("--purge").args(PACKAGES),
        Duration::from_secs(120),
    );
    check("dpkg --purge", out);
    guard.armed = false;
    for p in PACKAGES {
        assert_eq!(dpkg_status(p), None, "{p} is still known to dpkg");
    }
    for f in [
        so.clone(),
        libdir.join("libtryvox.so.0"),
        libdir.join("libtryvox.a"),
        libdir.join("cmake/tryvox"),
        PathBuf::from("/usr/include/tryvox.h"),
        PathBuf::from("/usr/bin/tryvox-sim"),
        PathBuf::from(format!(
            "/usr/lib/debug{}/libtryvox.so.{VERSION}.debug",
            libdir.display()
        )),
    ] {
        assert!(f.symlink_metadata().is_err(), "{} is left", f.display());
    }
}
