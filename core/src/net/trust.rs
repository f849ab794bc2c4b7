//! The roots a client trusts for the API's certificate: the system's trust store (what
//! `update-ca-certificates` writes: a company CA, a TLS-inspecting proxy's), Mozilla's
//! roots compiled in, or a caller's CA file. Read once per client, when it is built.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::RootCertStore;

use crate::contract::error::Error;
use crate::contract::options::TrustStore;

/// The roots, and where they came from (for the client's log).
pub(crate) struct Roots {
    pub(crate) store: RootCertStore,
    pub(crate) source: String,
    /// What the administrator should know: the system's store was read only in part.
    pub(crate) warning: Option<String>,
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
            warning: None,
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
            warning: None,
        });
    }
    let (system, why_none, warning) = system_roots();
    if !system.is_empty() {
        let source = format!("{} roots of the system's trust store", system.len());
        return Ok(Roots {
            store: system,
            source,
            warning,
        });
    }
    if store == TrustStore::System {
        return Err(Error::new(
            crate::contract::error::Status::TlsError,
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
        warning,
    })
}

/// The largest file of the system's store read: Debian's bundle is about 220 KiB.
const MAX_STORE_FILE: u64 = 4 << 20;
/// What reading the system's store may cost at most, in bytes read and in files looked at
/// (Debian's: 220 KiB in its bundle, 300 entries in its directory): a directory of every
/// public and private CA fits many times over; a wrong path (a home directory, a mount
/// of data) stops here, said in the log, rather than stalling the host's start.
const MAX_STORE_BYTES: u64 = 64 << 20;
const MAX_STORE_ENTRIES: usize = 100_000;

/// The system's roots as OpenSSL finds them (`SSL_CERT_FILE`, `SSL_CERT_DIR` split on
/// ':', else the distribution's bundle and directory): the roots, why there are none when
/// so, and what was left unread if a bound stopped the reading. Every file is read
/// bounded, as a CA file is (a FIFO or `/dev/zero` named by a stray `SSL_CERT_FILE` must
/// not hang or exhaust the host building a client); a directory is read one level deep,
/// each file once (its entries are mostly links to one bundle's certificates), and a
/// certificate rustls cannot use is skipped, as OpenSSL would.
fn system_roots() -> (RootCertStore, String, Option<String>) {
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
    let mut r = StoreReader::default();
    if let Some(f) = &file {
        if let Ok(m) = std::fs::metadata(f) {
            r.seen.insert(file_id(&m));
        }
        r.add(f);
    }
    'dirs: for dir in &dirs {
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) => {
                r.problems.push(format!("{}: {e}", dir.display()));
                continue;
            }
        };
        for entry in entries {
            let m = match &entry {
                // Regular files only (links followed): no FIFO is opened, no subdirectory
                // read.
                Ok(e) if r.entries < MAX_STORE_ENTRIES => match std::fs::metadata(e.path()) {
                    Ok(m) if m.is_file() => Some(m),
                    _ => None,
                },
                _ => None,
            };
            if r.entries == MAX_STORE_ENTRIES
                || m.as_ref()
                    .is_some_and(|m| r.bytes + m.len().min(MAX_STORE_FILE) > MAX_STORE_BYTES)
            {
                r.cut = Some(format!(
                    "the system's trust store was read only in part: {MAX_STORE_ENTRIES} \
                     files and {MAX_STORE_BYTES} bytes are the most read, and {} holds more \
                     (a CA past them is not trusted)",
                    dir.display()
                ));
                break 'dirs;
            }
            r.entries += 1;
            if let (Ok(e), Some(m)) = (entry, m) {
                if r.seen.insert(file_id(&m)) {
                    r.add(&e.path());
                }
            }
        }
    }
    let why = match (r.problems.first(), &file, dirs.is_empty()) {
        (Some(p), _, _) => p.clone(),
        (None, None, true) => "no certificate file or directory found".to_owned(),
        (None, _, _) => {
            let mut places: Vec<String> = file.iter().map(|f| f.display().to_string()).collect();
            places.extend(dirs.iter().map(|d| d.display().to_string()));
            format!("no usable certificate in {}", places.join(", "))
        }
    };
    (r.roots, why, r.cut)
}

/// The system's store as it is read: its roots and what reading them cost.
struct StoreReader {
    roots: RootCertStore,
    /// Files read, by identity.
    seen: std::collections::HashSet<(u64, u64)>,
    /// Certificates added: a distribution's directory holds its bundle's again.
    known: std::collections::HashSet<Vec<u8>>,
    problems: Vec<String>,
    entries: usize,
    bytes: u64,
    cut: Option<String>,
}

impl Default for StoreReader {
    fn default() -> Self {
        StoreReader {
            roots: RootCertStore::empty(),
            seen: Default::default(),
            known: Default::default(),
            problems: Vec::new(),
            entries: 0,
            bytes: 0,
            cut: None,
        }
    }
}

impl StoreReader {
    fn add(&mut self, path: &std::path::Path) {
        match crate::contract::options::read_bounded(path, MAX_STORE_FILE) {
            Ok(pem) => {
                self.bytes += pem.len() as u64;
                let known = &mut self.known;
                let certs = CertificateDer::pem_slice_iter(&pem)
                    .flatten()
                    .filter(|c| known.insert(c.to_vec()));
                self.roots.add_parsable_certificates(certs);
            }
            Err(why) => self.problems.push(format!("{}: {why}", path.display())),
        }
    }
}

/// A file's identity, to read each file once however many links name it.
fn file_id(m: &std::fs::Metadata) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    (m.dev(), m.ino())
}
