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

/// The system's roots, and why there are none when so. A certificate rustls cannot use
/// (an expired or odd one a distribution still ships) is skipped, as OpenSSL would.
fn system_roots() -> (RootCertStore, String) {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    roots.add_parsable_certificates(found.certs);
    let why = match found.errors.first() {
        Some(e) => e.to_string(),
        None => "no file or directory found".to_owned(),
    };
    (roots, why)
}
