//! The roots a client trusts for the API's certificate: the system's trust store (what
//! `update-ca-certificates` writes: a company CA, a TLS-inspecting proxy's), Mozilla's
//! roots compiled in, or a caller's CA file. Read once per client, when it is built.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::RootCertStore;

use crate::error::Error;

/// Which roots a client trusts when no CA file is set ([`crate::Options::set_trust_store`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TrustStore {
    /// The system's trust store (as OpenSSL finds it: `SSL_CERT_FILE`, `SSL_CERT_DIR`, or
    /// the distribution's bundle); Mozilla's roots compiled into the library where the
    /// system has none. The default: what libcurl, Go and .NET do on Linux.
    #[default]
    SystemOrBundled,
    /// The system's trust store only: building a client fails if it has no certificate.
    System,
    /// Mozilla's roots compiled into the library only (as of its build).
    Bundled,
}

/// The roots, and where they came from (for the client's log).
pub(crate) struct Roots {
    pub(crate) store: RootCertStore,
    pub(crate) source: String,
}

/// The roots for `store`, or the certificates of a CA file's contents when one is set.
pub(crate) fn roots(store: TrustStore, ca_pem: Option<&[u8]>) -> Result<Roots, Error> {
    if let Some(pem) = ca_pem {
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(pem).flatten() {
            roots.add(cert).map_err(|e| {
                Error::invalid(format!("CA file holds a certificate rustls refuses: {e}"))
            })?;
        }
        if roots.is_empty() {
            return Err(Error::invalid("CA file holds no PEM certificate"));
        }
        let source = format!("{} certificate(s) of the CA file", roots.len());
        return Ok(Roots {
            store: roots,
            source,
        });
    }
    let bundled = || {
        let mut roots = RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        roots
    };
    if store == TrustStore::Bundled {
        let roots = bundled();
        let source = format!("the {} bundled roots (Mozilla's)", roots.len());
        return Ok(Roots {
            store: roots,
            source,
        });
    }
    let (system, why_none) = system_roots();
    if !system.is_empty() {
        let source = format!("{} roots of the system's trust store", system.len());
        return Ok(Roots {
            store: system,
            source,
        });
    }
    if store == TrustStore::System {
        return Err(Error::new(
            crate::error::Status::TlsError,
            format!(
                "the system's trust store has no certificate ({why_none}); install the \
             ca-certificates package, or trust the bundled roots or a CA file"
            ),
        ));
    }
    let roots = bundled();
    let source = format!(
        "the {} bundled roots (Mozilla's): the system's trust store has none ({why_none})",
        roots.len()
    );
    Ok(Roots {
        store: roots,
        source,
    })
}

/// The largest file of the system's store read: Debian's bundle is about 220 KiB.
const MAX_STORE_FILE: u64 = 4 << 20;
/// The most entries of a certificate directory looked at (Debian's has about 300).
const MAX_DIR_ENTRIES: usize = 10_000;

/// The system's roots as OpenSSL finds them (`SSL_CERT_FILE`, `SSL_CERT_DIR` split on
/// ':', else the distribution's bundle and directory), and why there are none when so.
/// Every file is read bounded, as a CA file is (a FIFO or `/dev/zero` named by a stray
/// `SSL_CERT_FILE` must not hang or exhaust the host building a client); a directory is
/// read one level deep, each file once (its entries are mostly links to one bundle's
/// certificates), and a certificate rustls cannot use is skipped, as OpenSSL would.
fn system_roots() -> (RootCertStore, String) {
    let env_file = std::env::var_os("SSL_CERT_FILE").map(std::path::PathBuf::from);
    let env_dirs: Vec<std::path::PathBuf> = std::env::var_os("SSL_CERT_DIR")
        .map(|d| {
            std::env::split_paths(&d)
                .filter(|p| !p.as_os_str().is_empty())
                .collect()
        })
        .unwrap_or_default();
    let (file, dirs) = if env_file.is_some() || !env_dirs.is_empty() {
        (env_file, env_dirs)
    } else {
        let probed = openssl_probe::probe();
        (probed.cert_file, probed.cert_dir)
    };
    let mut roots = RootCertStore::empty();
    let mut problems: Vec<String> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    // A distribution's directory holds the bundle's certificates again, one a file.
    let mut known: std::collections::HashSet<Vec<u8>> = std::collections::HashSet::new();
    let mut add =
        |path: &std::path::Path, problems: &mut Vec<String>| match crate::options::read_bounded(
            path,
            MAX_STORE_FILE,
        ) {
            Ok(pem) => {
                let certs = CertificateDer::pem_slice_iter(&pem)
                    .flatten()
                    .filter(|c| known.insert(c.to_vec()));
                roots.add_parsable_certificates(certs);
            }
            Err(why) => problems.push(format!("{}: {why}", path.display())),
        };
    if let Some(f) = &file {
        if let Ok(m) = std::fs::metadata(f) {
            seen.insert(file_id(&m));
        }
        add(f, &mut problems);
    }
    for dir in &dirs {
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) => {
                problems.push(format!("{}: {e}", dir.display()));
                continue;
            }
        };
        for entry in entries.take(MAX_DIR_ENTRIES).flatten() {
            let path = entry.path();
            // Regular files only (links followed): no FIFO is opened, no subdirectory read.
            match std::fs::metadata(&path) {
                Ok(m) if m.is_file() && seen.insert(file_id(&m)) => add(&path, &mut problems),
                _ => {}
            }
        }
    }
    let why = match (problems.first(), &file, dirs.is_empty()) {
        (Some(p), _, _) => p.clone(),
        (None, None, true) => "no certificate file or directory found".to_owned(),
        (None, _, _) => {
            let mut places: Vec<String> = file.iter().map(|f| f.display().to_string()).collect();
            places.extend(dirs.iter().map(|d| d.display().to_string()));
            format!("no usable certificate in {}", places.join(", "))
        }
    };
    (roots, why)
}

/// A file's identity, to read each file once however many links name it.
fn file_id(m: &std::fs::Metadata) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    (m.dev(), m.ino())
}
