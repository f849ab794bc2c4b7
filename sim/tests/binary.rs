//! The `tryvox-sim` binary itself: the base URL is the first line on stdout, flags work,
//! and SIGINT or SIGTERM ends it cleanly.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn start(args: &[&str]) -> (std::process::Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tryvox-sim"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    (child, first.trim().to_owned())
}

fn stop(mut child: std::process::Child, signal: i32) -> Option<i32> {
    unsafe { libc_kill(child.id() as i32, signal) };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st.code();
        }
        assert!(Instant::now() < deadline, "the simulator did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
}

extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

#[test]
fn first_line_is_the_base_url_and_signals_stop_it() {
    for (signal, name) in [(15, "SIGTERM"), (2, "SIGINT")] {
        let (child, url) = start(&["--listen", "127.0.0.1:0", "--api-key", "tvx_sk_test_bin"]);
        assert!(url.starts_with("http://127.0.0.1:"), "{url}");
        let r = ureq::get(format!("{url}/_sim/health")).call().unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(stop(child, signal), Some(0), "{name} exits with 0");
    }
}

#[test]
fn tls_flags_and_bad_flags() {
    let fx = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/tls");
    let (child, url) = start(&[
        "--tls-cert",
        &format!("{fx}/server.pem"),
        "--tls-key",
        &format!("{fx}/server.key"),
    ]);
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");
    assert_eq!(stop(child, 15), Some(0));
    let out = Command::new(env!("CARGO_BIN_EXE_tryvox-sim"))
        .arg("--bogus")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown option"));
    let out = Command::new(env!("CARGO_BIN_EXE_tryvox-sim"))
        .args(["--error-rate", "2"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}
