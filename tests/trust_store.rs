//! The system's trust store (issue 21): by default a client trusts what the system
//! trusts (a company CA installed with `update-ca-certificates`), Mozilla's bundled roots
//! where the system has none; `set_trust_store` chooses; a CA file replaces both. Real TLS
//! servers on 127.0.0.1 with the fixtures' private CA.
//!
//! Where a test needs the environment that OpenSSL's lookup reads (`SSL_CERT_FILE`,
//! `SSL_CERT_DIR`), it runs one of the `child_*` tests (ignored on their own) in a child
//! process of this binary: setting the environment of a process whose other threads run
//! tests would race with them.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tryvox_core::{Client, Error, LogLevel, Options, Status, TrustStore};

mod support;

const KEY: &str = "tvx_sk_test_trust_0123456789";

fn server() -> (u16, support::TlsSeen) {
    support::tls_204_server(support::tls_server_config(&[&rustls::version::TLS13], None))
}

/// A client of the server on `port` trusting `store`; also returns its log lines.
fn client(
    port: u16,
    store: Option<TrustStore>,
) -> (Result<Client, Error>, Arc<Mutex<Vec<String>>>) {
    let lines: Arc<Mutex<Vec<String>>> = Arc::default();
    let l2 = lines.clone();
    let mut o = Options::new();
    o.set_base_url(&format!("https://localhost:{port}"))
        .unwrap();
    o.set_max_retries(0).unwrap();
    o.set_timeout(Duration::from_secs(5)).unwrap();
    o.set_log_fn(Some(Arc::new(move |level: LogLevel, line: &str| {
        l2.lock().unwrap().push(format!("{level:?}: {line}"));
    })));
    if let Some(s) = store {
        o.set_trust_store(s);
    }
    (Client::with_options("AC123456", KEY, &o), lines)
}

/// The outcome of one hangup against the server, and how many requests it received.
fn hangup(port: u16, seen: &support::TlsSeen, store: Option<TrustStore>) -> (Status, usize) {
    let before = seen.lock().unwrap().len();
    let (c, lines) = client(port, store);
    let c = c.unwrap();
    let status = match c.hangup("trust-call") {
        Ok(_) => Status::Ok,
        Err(e) => {
            assert!(!e.message().contains(KEY));
            e.status()
        }
    };
    for l in lines.lock().unwrap().iter() {
        assert!(!l.contains(KEY), "{l}");
    }
    (status, seen.lock().unwrap().len() - before)
}

/// Runs the ignored test `name` of this binary in a child with this environment for
/// OpenSSL's trust-store lookup (None: removed), and asserts that it passed.
fn in_child(name: &str, cert_file: Option<&Path>, cert_dir: Option<&Path>) {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "--ignored",
        "--exact",
        name,
        "--nocapture",
        "--test-threads=1",
    ]);
    for (var, value) in [("SSL_CERT_FILE", cert_file), ("SSL_CERT_DIR", cert_dir)] {
        match value {
            Some(v) => cmd.env(var, v),
            None => cmd.env_remove(var),
        };
    }
    let out = cmd.output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{name} failed:\n{text}");
    assert!(text.contains("1 passed"), "{name} ran:\n{text}");
}

#[test]
fn the_system_store_is_where_openssl_looks() {
    // The system's store holds just the private CA (as SSL_CERT_FILE names it).
    let empty = support::scratch("trust", "empty-dir");
    std::fs::create_dir_all(&empty).unwrap();
    in_child(
        "child_system_store_is_the_private_ca",
        Some(&support::tls_fixtures().join("ca.pem")),
        Some(&empty),
    );
}

#[test]
#[ignore = "run by the_system_store_is_where_openssl_looks, in its environment"]
fn child_system_store_is_the_private_ca() {
    let (port, seen) = server();
    // The default and System trust it: the hangup is sent and ends the call.
    assert_eq!(hangup(port, &seen, None), (Status::Ok, 1));
    assert_eq!(
        hangup(port, &seen, Some(TrustStore::System)),
        (Status::Ok, 1)
    );
    // Bundled ignores the system: Mozilla's roots do not know the CA; nothing sent.
    assert_eq!(
        hangup(port, &seen, Some(TrustStore::Bundled)),
        (Status::TlsError, 0)
    );
    // The log says which roots a client trusts.
    let (_, lines) = client(port, None);
    let lines = lines.lock().unwrap().join("\n");
    assert!(
        lines.contains("Info: TLS: trusting 1 roots of the system's trust store"),
        "{lines}"
    );
    let (_, lines) = client(port, Some(TrustStore::Bundled));
    let lines = lines.lock().unwrap().join("\n");
    assert!(
        lines.contains("TLS: trusting the ") && lines.contains(" bundled roots (Mozilla's)"),
        "{lines}"
    );
}

#[test]
fn without_a_system_store_the_bundled_roots_serve() {
    let nowhere = support::scratch("trust", "nowhere");
    in_child(
        "child_no_system_store",
        Some(&nowhere.join("no-such-bundle.pem")),
        Some(&nowhere.join("no-such-dir")),
    );
}

#[test]
#[ignore = "run by without_a_system_store_the_bundled_roots_serve, in its environment"]
fn child_no_system_store() {
    let (port, seen) = server();
    // The default falls back to Mozilla's roots, and says so and why.
    let (c, lines) = client(port, None);
    assert!(c.is_ok());
    let lines = lines.lock().unwrap().join("\n");
    assert!(
        lines.contains("bundled roots (Mozilla's): the system's trust store has none"),
        "{lines}"
    );
    // They do not know the private CA: a TLS error, nothing sent.
    assert_eq!(hangup(port, &seen, None), (Status::TlsError, 0));
    // System only: the client is refused at once, saying why.
    let (c, _) = client(port, Some(TrustStore::System));
    let Err(e) = c else { panic!("refused") };
    assert_eq!(e.status(), Status::TlsError, "{e}");
    assert!(
        e.message()
            .contains("the system's trust store has no certificate"),
        "{e}"
    );
    assert!(!e.message().contains(KEY));
    // A CA file replaces every store.
    let mut o = Options::new();
    o.set_base_url(&format!("https://localhost:{port}"))
        .unwrap();
    o.set_trust_store(TrustStore::System);
    o.set_ca_file(support::tls_fixtures().join("ca.pem").to_str().unwrap())
        .unwrap();
    let c = Client::with_options("AC123456", KEY, &o).unwrap();
    assert!(c.hangup("trust-ca-file").is_ok());
}

/// Installs the private CA into the system's store, and removes it when dropped.
struct InstalledCa(PathBuf);

impl InstalledCa {
    fn install() -> InstalledCa {
        let to = PathBuf::from(format!(
            "/usr/local/share/ca-certificates/tryvox-test-ca-{}.crt",
            std::process::id()
        ));
        std::fs::copy(support::tls_fixtures().join("ca.pem"), &to).unwrap();
        let installed = InstalledCa(to);
        update_ca_certificates(false);
        installed
    }
}

impl Drop for InstalledCa {
    fn drop(&mut self) {
        if std::fs::remove_file(&self.0).is_ok() {
            update_ca_certificates(true);
        }
    }
}

fn update_ca_certificates(fresh: bool) {
    let mut cmd = Command::new("update-ca-certificates");
    if fresh {
        cmd.arg("--fresh");
    }
    let out = cmd.output().expect("update-ca-certificates runs");
    assert!(out.status.success(), "{out:?}");
}

#[test]
fn a_ca_installed_with_update_ca_certificates_is_trusted_until_removed() {
    // Root, and Debian's ca-certificates: what CI has (.ci/run). Elsewhere it says why.
    let root = unsafe { libc::geteuid() } == 0;
    if !root || !support::have_tool("update-ca-certificates") {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must run this test: as root, with update-ca-certificates"
        );
        eprintln!("SKIPPED: needs root and update-ca-certificates");
        return;
    }
    // The children read the distribution's store: nothing in the environment redirects it.
    in_child("child_private_ca_not_yet_installed", None, None);
    let installed = InstalledCa::install();
    in_child("child_private_ca_installed", None, None);
    drop(installed);
    in_child("child_private_ca_not_yet_installed", None, None);
}

#[test]
#[ignore = "run by a_ca_installed_with_update_ca_certificates_is_trusted_until_removed"]
fn child_private_ca_not_yet_installed() {
    let (port, seen) = server();
    assert_eq!(hangup(port, &seen, None), (Status::TlsError, 0));
    assert_eq!(
        hangup(port, &seen, Some(TrustStore::System)),
        (Status::TlsError, 0)
    );
}

#[test]
#[ignore = "run by a_ca_installed_with_update_ca_certificates_is_trusted_until_removed"]
fn child_private_ca_installed() {
    let (port, seen) = server();
    assert_eq!(hangup(port, &seen, None), (Status::Ok, 1));
    assert_eq!(
        hangup(port, &seen, Some(TrustStore::System)),
        (Status::Ok, 1)
    );
    assert_eq!(
        hangup(port, &seen, Some(TrustStore::Bundled)),
        (Status::TlsError, 0)
    );
    // The distribution's store holds Mozilla's roots as well as ours.
    let (_, lines) = client(port, None);
    let lines = lines.lock().unwrap().join("\n");
    let n: usize = lines
        .split("TLS: trusting ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("a count of roots: {lines}"));
    assert!(n > 100, "{lines}");
}
