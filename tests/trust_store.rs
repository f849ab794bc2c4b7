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

/// The server's CA is in the system's store, not among Mozilla's roots: the default and
/// System trust it (the hangup is sent and ends the call), Bundled does not (nothing sent).
fn trusted_through_the_system_store_only(port: u16, seen: &support::TlsSeen) {
    assert_eq!(hangup(port, seen, None), (Status::Ok, 1));
    assert_eq!(
        hangup(port, seen, Some(TrustStore::System)),
        (Status::Ok, 1)
    );
    assert_eq!(
        hangup(port, seen, Some(TrustStore::Bundled)),
        (Status::TlsError, 0)
    );
}

/// Runs the ignored test `name` of this binary in a child with this environment for
/// OpenSSL's trust-store lookup (None: removed), and asserts that it passed.
fn in_child(name: &str, cert_file: Option<&Path>, cert_dir: Option<&Path>) {
    in_child_with(name, cert_file, cert_dir, None)
}

/// As [`in_child`], telling the child where the CA made for it is.
fn in_child_with(
    name: &str,
    cert_file: Option<&Path>,
    cert_dir: Option<&Path>,
    made_ca: Option<&Path>,
) {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    if let Some(d) = made_ca {
        cmd.env(MADE_CA, d);
    }
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
    // Bounded: a child stuck building a client (a FIFO's open, an endless read) fails here.
    let dir = support::scratch("trust-out", name);
    let (out, err) = (dir.join("stdout"), dir.join("stderr"));
    cmd.stdout(std::fs::File::create(&out).unwrap());
    cmd.stderr(std::fs::File::create(&err).unwrap());
    let status = support::wait_bounded(&mut cmd.spawn().unwrap(), name, Duration::from_secs(120));
    let text = std::fs::read_to_string(&out).unwrap() + &std::fs::read_to_string(&err).unwrap();
    assert!(status.success(), "{name} failed:\n{text}");
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
    trusted_through_the_system_store_only(port, &seen);
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

#[test]
fn a_stray_store_path_never_hangs_or_exhausts_the_host() {
    let dir = support::scratch("trust", "stray");
    let fifo = dir.join("fifo.pem");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let huge = dir.join("huge.pem");
    std::fs::File::create(&huge)
        .unwrap()
        .set_len(64 << 20)
        .unwrap();
    let garbage = dir.join("garbage.pem");
    std::fs::write(&garbage, "not a certificate\n").unwrap();
    let empty = dir.join("empty-dir");
    std::fs::create_dir_all(&empty).unwrap();
    // A FIFO nobody writes to (open would wait for a writer forever), a device read until
    // memory ran out, a 64 MiB file: each is refused unread, and the bundled roots serve.
    for (file, why) in [
        (fifo.as_path(), "not a regular file"),
        (Path::new("/dev/zero"), "not a regular file"),
        (huge.as_path(), "bytes or more"),
    ] {
        in_child_with_why("child_stray_store", file, &empty, why);
    }
    // A file of no certificate: said so, with its path.
    in_child_with_why(
        "child_stray_store",
        &garbage,
        &empty,
        "no usable certificate in",
    );
    // A directory holding the FIFO and the huge file: skipped or refused, never waited on.
    in_child_with_why("child_stray_store", &garbage, &dir, "bytes or more");
}

#[test]
fn a_store_past_the_bounds_is_read_in_part_and_the_log_says_so() {
    // 68 MiB of files in the directory (more than the 64 MiB read at most), the CA in the
    // bundle file, which is read first.
    let dir = support::scratch("trust", "big-dir");
    let filler = vec![b'#'; 4 << 20];
    for i in 0..17 {
        std::fs::write(dir.join(format!("filler-{i}.pem")), &filler).unwrap();
    }
    in_child(
        "child_big_store",
        Some(&support::tls_fixtures().join("ca.pem")),
        Some(&dir),
    );
}

#[test]
#[ignore = "run by a_store_past_the_bounds_is_read_in_part_and_the_log_says_so"]
fn child_big_store() {
    let (port, seen) = server();
    let (c, lines) = client(port, None);
    assert!(c.is_ok());
    let lines = lines.lock().unwrap().join("\n");
    let dir = std::env::var("SSL_CERT_DIR").unwrap();
    assert!(
        lines.contains("Info: TLS: trusting 1 roots of the system's trust store")
            && lines.contains("Warn: TLS: the system's trust store was read only in part")
            && lines.contains(&dir),
        "{lines}"
    );
    assert_eq!(hangup(port, &seen, None), (Status::Ok, 1));
}

/// Runs `child_stray_store` with this store, expecting `why` in the reason given.
fn in_child_with_why(name: &str, file: &Path, dir: &Path, why: &str) {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "--ignored",
        "--exact",
        name,
        "--nocapture",
        "--test-threads=1",
    ])
    .env("SSL_CERT_FILE", file)
    .env("SSL_CERT_DIR", dir)
    .env("TRYVOX_TEST_WHY", why)
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::null());
    let status = support::wait_bounded(
        &mut cmd.spawn().unwrap(),
        &format!("a client with SSL_CERT_FILE={}", file.display()),
        Duration::from_secs(60),
    );
    assert!(
        status.success(),
        "{name} with {}: {status:?}",
        file.display()
    );
}

#[test]
#[ignore = "run by a_stray_store_path_never_hangs_or_exhausts_the_host, in its environment"]
fn child_stray_store() {
    let why = std::env::var("TRYVOX_TEST_WHY").unwrap();
    let (port, _seen) = server();
    let (c, lines) = client(port, None);
    assert!(c.is_ok());
    let lines = lines.lock().unwrap().join("\n");
    assert!(
        lines.contains("bundled roots (Mozilla's): the system's trust store has none")
            && lines.contains(&why),
        "{lines}"
    );
    let (c, _) = client(port, Some(TrustStore::System));
    let Err(e) = c else { panic!("refused") };
    assert_eq!(e.status(), Status::TlsError);
    assert!(e.message().contains(&why), "{e}");
}

/// The environment variable naming, to a child, the directory of a CA made for it.
const MADE_CA: &str = "TRYVOX_TEST_MADE_CA";

/// A CA made for this run (its key deleted with the directory), and a certificate it
/// signed for localhost: installing the fixtures' CA instead would make it trusted, for a
/// moment, by tests in other binaries that expect it not to be (e2e_sim, engine_hostile)
/// under a runner that runs binaries at once.
fn make_ca(dir: &Path) {
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl runs");
        assert!(out.status.success(), "openssl {args:?}: {out:?}");
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    openssl(
        &[
            &["req", "-x509"][..],
            &ec,
            &["-keyout", "ca.key", "-out", "ca.pem", "-days", "2"],
            &["-subj", "/CN=libtryvox trust-store test CA (temporary)"],
            &["-addext", "basicConstraints=critical,CA:TRUE"],
            &["-addext", "keyUsage=critical,keyCertSign,cRLSign"],
        ]
        .concat(),
    );
    openssl(
        &[
            &["req"][..],
            &ec,
            &[
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
                "-subj",
                "/CN=localhost",
            ],
        ]
        .concat(),
    );
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    ]);
    std::fs::remove_file(dir.join("ca.key")).unwrap();
}

/// Installs a CA into the system's store, and removes it when dropped.
struct InstalledCa(PathBuf);

impl InstalledCa {
    fn install(ca: &Path) -> InstalledCa {
        let to = PathBuf::from(format!(
            "/usr/local/share/ca-certificates/libtryvox-test-ca-{}.crt",
            std::process::id()
        ));
        std::fs::copy(ca, &to).unwrap();
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
    // Root, Debian's ca-certificates and openssl: what CI has (.ci/run). Elsewhere it
    // says why it did not run.
    let root = unsafe { libc::geteuid() } == 0;
    if !root || !support::have_tool("update-ca-certificates") || !support::have_tool("openssl") {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must run this test: as root, with update-ca-certificates and openssl"
        );
        eprintln!("SKIPPED: needs root, update-ca-certificates and openssl");
        return;
    }
    let dir = support::scratch("trust", "made-ca");
    make_ca(&dir);
    // The children read the distribution's store: nothing in the environment redirects it.
    let child = |name: &str| in_child_with(name, None, None, Some(&dir));
    child("child_made_ca_not_installed");
    let installed = InstalledCa::install(&dir.join("ca.pem"));
    child("child_made_ca_installed");
    drop(installed);
    child("child_made_ca_not_installed");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// In a child: a server with the certificate the parent's CA signed.
fn made_ca_server() -> (u16, support::TlsSeen) {
    let dir = PathBuf::from(std::env::var_os(MADE_CA).expect("run by the parent test"));
    support::tls_204_server(support::tls_server_config_in(
        &dir,
        &[&rustls::version::TLS13],
        None,
    ))
}

#[test]
#[ignore = "run by a_ca_installed_with_update_ca_certificates_is_trusted_until_removed"]
fn child_made_ca_not_installed() {
    let (port, seen) = made_ca_server();
    assert_eq!(hangup(port, &seen, None), (Status::TlsError, 0));
    assert_eq!(
        hangup(port, &seen, Some(TrustStore::System)),
        (Status::TlsError, 0)
    );
}

#[test]
#[ignore = "run by a_ca_installed_with_update_ca_certificates_is_trusted_until_removed"]
fn child_made_ca_installed() {
    let (port, seen) = made_ca_server();
    trusted_through_the_system_store_only(port, &seen);
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
