//! Post-quantum key exchange (issue 21): the ClientHello offers the hybrid X25519MLKEM768
//! first, in supported_groups and in key_share, with the classical groups after it; a
//! server that speaks only TLS 1.2, or TLS 1.3 with classical groups only (one that
//! answers with a HelloRetryRequest included), still gets its hangup. Real TLS servers
//! (rustls) on 127.0.0.1; the client verifies them with the test CA.

use std::io::Read;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::crypto::aws_lc_rs::kx_group;
use rustls::{NamedGroup, ProtocolVersion};
use support::TlsSeen;
use tryvox_core::{Client, Options, Status};

mod support;

const X25519MLKEM768: u16 = 0x11ec;
const X25519: u16 = 0x001d;
const SECP256R1: u16 = 0x0017;
const SECP384R1: u16 = 0x0018;
/// ML-KEM-768's encapsulation key (1184 bytes) and an X25519 share (32).
const HYBRID_SHARE_LEN: usize = 1184 + 32;

fn client(port: u16, bulk: bool) -> Client {
    let mut o = Options::new();
    o.set_base_url(&format!("https://127.0.0.1:{port}"))
        .unwrap();
    o.set_ca_file(support::tls_fixtures().join("ca.pem").to_str().unwrap())
        .unwrap();
    o.set_max_retries(0).unwrap();
    o.set_timeout(Duration::from_secs(5)).unwrap();
    if bulk {
        o.set_max_connections(2).unwrap();
    }
    Client::with_options("AC123456", "tvx_sk_test_groups", &o).unwrap()
}

fn tls_server(
    versions: &[&'static rustls::SupportedProtocolVersion],
    groups: Option<Vec<&'static dyn rustls::crypto::SupportedKxGroup>>,
) -> (u16, TlsSeen) {
    support::tls_204_server(support::tls_server_config(versions, groups))
}

/// Every hangup path (the caller's thread, and the engine's through a bulk call) ends its
/// call against the server; returns what the server negotiated.
fn hangups_succeed(port: u16, seen: &TlsSeen) -> Vec<(ProtocolVersion, NamedGroup)> {
    let c = client(port, false);
    c.hangup("groups-sync").unwrap();
    let c = client(port, true);
    let ids: Vec<String> = (0..4).map(|i| format!("groups-bulk-{i}")).collect();
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    for r in c.hangup_many(&ids, 2).unwrap() {
        assert!(r.is_ok(), "{r:?}");
    }
    let s = seen.lock().unwrap().clone();
    assert_eq!(s.len(), 5, "one request seen per hangup: {s:?}");
    s
}

#[test]
fn a_post_quantum_server_negotiates_x25519mlkem768() {
    let (port, seen) = tls_server(&[&rustls::version::TLS13], None);
    for (v, g) in hangups_succeed(port, &seen) {
        assert_eq!(v, ProtocolVersion::TLSv1_3);
        assert_eq!(g, NamedGroup::X25519MLKEM768);
    }
}

#[test]
fn a_tls12_only_server_still_works() {
    let (port, seen) = tls_server(&[&rustls::version::TLS12], None);
    for (v, g) in hangups_succeed(port, &seen) {
        assert_eq!(v, ProtocolVersion::TLSv1_2);
        // TLS 1.2 has no hybrid group: the server picks a classical one.
        assert_ne!(g, NamedGroup::X25519MLKEM768);
    }
}

#[test]
fn a_classical_only_tls13_server_still_works() {
    // X25519 only: the client's second key share serves at once.
    let (port, seen) = tls_server(&[&rustls::version::TLS13], Some(vec![kx_group::X25519]));
    for (v, g) in hangups_succeed(port, &seen) {
        assert_eq!((v, g), (ProtocolVersion::TLSv1_3, NamedGroup::X25519));
    }
    // P-256 only: no share of the client's fits, the server asks again for one
    // (HelloRetryRequest) and the handshake completes.
    let (port, seen) = tls_server(&[&rustls::version::TLS13], Some(vec![kx_group::SECP256R1]));
    for (v, g) in hangups_succeed(port, &seen) {
        assert_eq!((v, g), (ProtocolVersion::TLSv1_3, NamedGroup::secp256r1));
    }
}

/// The extensions of a ClientHello record, as (type, body).
fn hello_extensions(record: &[u8]) -> Vec<(u16, Vec<u8>)> {
    let u16_at = |b: &[u8], i: usize| u16::from_be_bytes([b[i], b[i + 1]]);
    assert_eq!(record[0], 22, "a handshake record");
    let hs = &record[5..];
    assert_eq!(hs[0], 1, "a ClientHello");
    let mut i = 4 + 2 + 32; // handshake header, legacy_version, random
    i += 1 + hs[i] as usize; // legacy_session_id
    i += 2 + u16_at(hs, i) as usize; // cipher_suites
    i += 1 + hs[i] as usize; // legacy_compression_methods
    let end = i + 2 + u16_at(hs, i) as usize;
    i += 2;
    let mut out = Vec::new();
    while i < end {
        let (ty, len) = (u16_at(hs, i), u16_at(hs, i + 2) as usize);
        out.push((ty, hs[i + 4..i + 4 + len].to_vec()));
        i += 4 + len;
    }
    out
}

/// Captures the first TLS record each connection sends (the ClientHello), then closes it.
fn capture_hellos() -> (u16, Arc<Mutex<Vec<Vec<u8>>>>) {
    let hellos: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
    let h2 = hellos.clone();
    // One connection at a time, on the accept thread.
    let server = support::accept_each(move |_, mut sock| {
        let _ = sock.set_read_timeout(Some(Duration::from_secs(10)));
        let mut head = [0u8; 5];
        if sock.read_exact(&mut head).is_err() {
            return;
        }
        let len = u16::from_be_bytes([head[3], head[4]]) as usize;
        let mut record = head.to_vec();
        record.resize(5 + len, 0);
        if sock.read_exact(&mut record[5..]).is_ok() {
            h2.lock().unwrap().push(record);
        }
    });
    (server.port(), hellos)
}

#[test]
fn the_client_hello_offers_x25519mlkem768_first_with_classical_fallbacks() {
    let (port, hellos) = capture_hellos();
    let e = client(port, false).hangup("hello-sync").unwrap_err();
    assert_eq!(e.status(), Status::NetworkError, "{e}");
    let r = client(port, true).hangup_many(&["hello-bulk"], 1).unwrap();
    assert!(r[0].is_err());
    let hellos = hellos.lock().unwrap().clone();
    assert_eq!(hellos.len(), 2, "one ClientHello per path");
    for hello in hellos {
        let ext = hello_extensions(&hello);
        let find = |ty: u16| {
            ext.iter()
                .find(|(t, _)| *t == ty)
                .map(|(_, b)| b.clone())
                .unwrap_or_else(|| panic!("extension {ty:#06x} offered"))
        };
        // supported_groups (10): a u16 length, then the groups in preference order.
        let sg = find(10);
        let groups: Vec<u16> = sg[2..]
            .chunks(2)
            .map(|c| u16::from_be_bytes([c[0], c[1]]))
            .collect();
        // The hybrid first, then the classical groups, the cheapest first (not rustls
        // 0.23.48's default, which ranks P-384 second).
        assert_eq!(
            groups,
            [X25519MLKEM768, X25519, SECP256R1, SECP384R1],
            "{groups:04x?}"
        );
        // key_share (51): a u16 length, then (group, u16 length, key) entries.
        let ks = find(51);
        let mut shares = Vec::new();
        let mut i = 2;
        while i < ks.len() {
            let g = u16::from_be_bytes([ks[i], ks[i + 1]]);
            let n = u16::from_be_bytes([ks[i + 2], ks[i + 3]]) as usize;
            shares.push((g, n));
            i += 4 + n;
        }
        assert_eq!(shares[0], (X25519MLKEM768, HYBRID_SHARE_LEN), "{shares:?}");
        assert!(
            shares.contains(&(X25519, 32)),
            "a classical share too: {shares:?}"
        );
    }
}

/// A host that defines aws-lc's (BoringSSL's) allocator hooks for its own copy of that
/// library: libtryvox's TLS allocations never reach them (found by the review of issue 21:
/// libtryvox.so imported the hooks, and the host's ran 82 times in one hangup).
#[test]
fn a_hosts_crypto_allocator_hooks_never_see_our_allocations() {
    let (port, _seen) = tls_server(&[&rustls::version::TLS13], None);
    let exe = support::compile_c("tests/c/alloc_hooks.c", "alloc_hooks");
    let out = std::process::Command::new(exe)
        .arg(port.to_string())
        .arg(support::tls_fixtures().join("ca.pem"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(text.contains("hangup rc=0 "), "{text}");
    assert!(text.contains("host_alloc=0 host_free=0"), "{text}");
}

/// A program that defines the hooks for its own (shared) crypto library and links
/// libtryvox.a statically, with the flags res_tryvox uses: its library still calls its
/// hooks (hidden definitions of ours would have made the host's local, the second review
/// found).
#[test]
fn a_static_host_keeps_its_own_hooks_for_its_own_crypto_library() {
    let a = support::target_dir().join("libtryvox.a");
    let dir = support::scratch("tls-groups", "static-hooks");
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let cc = |args: &[&std::ffi::OsStr]| {
        let out = std::process::Command::new("cc")
            .args(["-std=c99", "-Wall", "-Wextra", "-Werror", "-O2"])
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
    };
    let lib = dir.join("libhostcrypto.so");
    cc(&[
        "-shared".as_ref(),
        "-fPIC".as_ref(),
        root.join("tests/c/static_hooks_crypto.c").as_os_str(),
        "-o".as_ref(),
        lib.as_os_str(),
    ]);
    let exe = dir.join("host");
    let include = format!("-I{}", root.join("include").display());
    let libdir = format!("-L{}", dir.display());
    let rpath = format!("-Wl,-rpath,{}", dir.display());
    cc(&[
        include.as_ref(),
        root.join("tests/c/static_hooks_host.c").as_os_str(),
        libdir.as_ref(),
        "-lhostcrypto".as_ref(),
        rpath.as_ref(),
        a.as_os_str(),
        "-pthread".as_ref(),
        "-lgcc_s".as_ref(),
        "-lutil".as_ref(),
        "-lrt".as_ref(),
        "-ldl".as_ref(),
        "-lm".as_ref(),
        "-o".as_ref(),
        exe.as_os_str(),
    ]);
    let out = std::process::Command::new(&exe).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("hooks: yes"),
        "{text}"
    );
}
