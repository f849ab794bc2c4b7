//! Client CPU per full TLS 1.3 handshake: rustls with ring (X25519 first, what libtryvox
//! used before issue 21) against aws-lc-rs offering X25519MLKEM768 first and then X25519
//! (now), aws-lc-rs as rustls 0.23.48 orders its groups by default (P-384 second), and
//! aws-lc-rs with X25519 only. Client and server run in memory in one thread (no socket, no
//! scheduler); the server is aws-lc-rs with the fixtures' ECDSA P-256 certificate, once
//! with rustls's default groups (X25519MLKEM768, P-384, X25519, P-256: a post-quantum
//! front end) and once classical, X25519 preferred (as OpenSSL 3.0's default, e.g. nginx
//! on Debian 12). Only the client's calls are timed.
//!
//!     cargo run --release --example handshake [-- N]

use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::crypto::{aws_lc_rs, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

fn fixtures() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tls")
}

fn server(
    groups: Option<Vec<&'static dyn rustls::crypto::SupportedKxGroup>>,
) -> Arc<rustls::ServerConfig> {
    let pem = std::fs::read(fixtures().join("server.pem")).unwrap();
    let certs: Vec<CertificateDer> = CertificateDer::pem_slice_iter(&pem)
        .map(|c| c.unwrap())
        .collect();
    let key = PrivateKeyDer::from_pem_slice(&std::fs::read(fixtures().join("server.key")).unwrap())
        .unwrap();
    let mut provider = aws_lc_rs::default_provider();
    if let Some(g) = groups {
        provider.kx_groups = g;
    }
    let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    cfg.send_tls13_tickets = 0;
    Arc::new(cfg)
}

fn client(provider: CryptoProvider) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(fixtures().join("ca.pem")).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.resumption = rustls::client::Resumption::disabled();
    Arc::new(cfg)
}

/// One handshake; returns the time spent in the client's calls, and the group.
fn handshake(c: &Arc<rustls::ClientConfig>, s: &Arc<rustls::ServerConfig>) -> (Duration, String) {
    let name = ServerName::try_from("localhost").unwrap();
    let mut spent = Duration::ZERO;
    let t = Instant::now();
    let mut cl = rustls::ClientConnection::new(c.clone(), name).unwrap();
    spent += t.elapsed();
    let mut sv = rustls::ServerConnection::new(s.clone()).unwrap();
    let mut buf = Vec::new();
    while cl.is_handshaking() || sv.is_handshaking() {
        buf.clear();
        let t = Instant::now();
        while cl.wants_write() {
            cl.write_tls(&mut buf).unwrap();
        }
        spent += t.elapsed();
        if !buf.is_empty() {
            sv.read_tls(&mut &buf[..]).unwrap();
            sv.process_new_packets().unwrap();
        }
        buf.clear();
        while sv.wants_write() {
            sv.write_tls(&mut buf).unwrap();
        }
        if !buf.is_empty() {
            let t = Instant::now();
            let mut rd = &buf[..];
            while !rd.is_empty() {
                cl.read_tls(&mut rd).unwrap();
                cl.process_new_packets().unwrap();
            }
            spent += t.elapsed();
        }
    }
    let group = format!("{:?}", cl.negotiated_key_exchange_group().unwrap().name());
    (spent, group)
}

fn main() {
    let n: u32 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(2000);
    use aws_lc_rs::kx_group as g;
    let servers = [
        ("post-quantum server", server(None)),
        (
            "classical server",
            server(Some(vec![g::X25519, g::SECP256R1, g::SECP384R1])),
        ),
    ];
    #[allow(deprecated)]
    let mut ring = rustls::crypto::ring::default_provider();
    // rustls 0.23.46's order for ring, which libtryvox used (0.23.48 puts P-384 first).
    {
        use rustls::crypto::ring::kx_group as r;
        ring.kx_groups = vec![r::X25519, r::SECP256R1, r::SECP384R1];
    }
    // What tryvox-core offers (core/src/net/conn.rs: KX_GROUPS).
    let mut ours = aws_lc_rs::default_provider();
    ours.kx_groups = vec![g::X25519MLKEM768, g::X25519, g::SECP256R1, g::SECP384R1];
    let mut classical = aws_lc_rs::default_provider();
    classical.kx_groups = vec![aws_lc_rs::kx_group::X25519];
    let cases = [
        ("ring, X25519 first (before)", client(ring)),
        ("aws-lc-rs, ours (now)", client(ours)),
        (
            "aws-lc-rs, rustls 0.23.48 default",
            client(aws_lc_rs::default_provider()),
        ),
        ("aws-lc-rs, X25519 only", client(classical)),
    ];
    println!("{n} full TLS 1.3 handshakes each (ECDSA P-256 certificate), client CPU only, median of 5 rounds");
    for ((what, c), (against, s)) in cases
        .iter()
        .flat_map(|c| servers.iter().map(move |s| (c, s)))
    {
        for _ in 0..100 {
            handshake(c, s);
        }
        let mut rounds = Vec::new();
        let mut group = String::new();
        for _ in 0..5 {
            let mut total = Duration::ZERO;
            for _ in 0..n {
                let (d, g) = handshake(c, s);
                total += d;
                group = g;
            }
            rounds.push(total / n);
        }
        rounds.sort();
        println!(
            "{what:<38} {against:<20} {group:<15} {:>7.1} us/handshake (rounds {:.1}-{:.1})",
            rounds[2].as_secs_f64() * 1e6,
            rounds[0].as_secs_f64() * 1e6,
            rounds[4].as_secs_f64() * 1e6
        );
    }
}
