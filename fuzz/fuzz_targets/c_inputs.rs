//! The C entry points fed arbitrary bytes as ids, keys, tenant ids and URLs, exactly as a
//! C caller would pass them (NUL-terminated). Invalid input must be refused with
//! TRYVOX_INVALID_ARGUMENT and a message; nothing may panic, crash or leak the key.
//! Valid ids do reach the network: the client points at a closed loopback port.
#![no_main]

use std::ffi::{c_char, CStr, CString};
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use tryvox::ffi::*;

const INVALID: i32 = 3;

/// A loopback port with nothing listening (bound once, then released).
fn dead_base() -> &'static CString {
    static BASE: OnceLock<CString> = OnceLock::new();
    BASE.get_or_init(|| {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        CString::new(format!("http://127.0.0.1:{port}")).unwrap()
    })
}

fn is_valid_id(b: &[u8]) -> bool {
    (1..=128).contains(&b.len())
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || b"-_.~".contains(c))
        && b != b"."
        && b != b".."
}

fn is_valid_token(b: &[u8]) -> bool {
    (1..=512).contains(&b.len()) && b.iter().all(|c| (0x21..=0x7e).contains(c))
}

/// The key with every letter and digit rotated: the same shape, other content. Messages
/// must be identical for both, which shows no message depends on the key's content.
fn rotated(key: &[u8]) -> Vec<u8> {
    key.iter()
        .map(|&b| match b {
            b'a'..=b'y' | b'A'..=b'Y' | b'0'..=b'8' => b + 1,
            b'z' => b'a',
            b'Z' => b'A',
            b'9' => b'0',
            other => other,
        })
        .collect()
}

/// Builds a client with `key` (options as in the target) and hangs up `call`: returns
/// (constructor message, hangup message).
unsafe fn messages(
    auth: &CString,
    key: &[u8],
    tenant: &CString,
    call: &CString,
) -> (String, String) {
    let key = CString::new(key.to_vec()).unwrap();
    let o = tryvox_options_new();
    unsafe {
        tryvox_options_set_base_url(o, dead_base().as_ptr());
        tryvox_options_set_tenant_id(o, tenant.as_ptr());
        tryvox_options_set_max_retries(o, 0);
        tryvox_options_set_timeout_ms(o, 200);
    }
    let client = unsafe { tryvox_client_new_with_options(auth.as_ptr(), key.as_ptr(), o) };
    unsafe { tryvox_options_free(o) };
    let made = last_error();
    if client.is_null() {
        return (made, String::new());
    }
    unsafe { tryvox_hangup(client, call.as_ptr()) };
    let hung = last_error();
    unsafe { tryvox_client_free(client) };
    (made, hung)
}

/// True when `text` shows a run of 8 characters of `key`.
fn shows_key(text: &str, key: &[u8]) -> bool {
    text.as_bytes()
        .windows(8)
        .any(|w| key.windows(8).any(|k| k == w))
}

/// The key oracle: the messages of a client with `key` and of one with the same key
/// rotated are identical, unless one needed redaction (the OS's words may hold a run of a
/// strange key, such as "111"); a redacted message shows no run of its key. (Our own
/// words may hold a run of a key by chance, "call_uuid" in "xcall_uuidx": equality, not
/// a search, is what shows they do not quote it.)
fn same_but_redaction(auth: &CString, key: &[u8], tenant: &CString, call: &CString) {
    let other = rotated(key);
    let a = unsafe { messages(auth, key, tenant, call) };
    let b = unsafe { messages(auth, &other, tenant, call) };
    let mut redacted = false;
    for (m, k) in [
        (&a.0, key),
        (&a.1, key),
        (&b.0, &other[..]),
        (&b.1, &other[..]),
    ] {
        if m.contains("[REDACTED]") || m.contains('\u{2026}') {
            redacted = true;
            assert!(
                !shows_key(m, k),
                "a redacted message shows the key ({} bytes)",
                m.len()
            );
        }
    }
    if !redacted {
        assert_eq!(a, b, "a message depends on the key's content");
    }
}

fn last_error() -> String {
    unsafe { CStr::from_ptr(tryvox_last_error()) }
        .to_string_lossy()
        .into_owned()
}

fuzz_target!(|data: &[u8]| {
    // Five fields separated by 0xFF bytes: auth_id, api_key, tenant, call_uuid, base url.
    let mut parts = data.split(|&b| b == 0xff);
    let mut next = || -> Vec<u8> {
        parts
            .next()
            .unwrap_or(b"")
            .iter()
            .copied()
            .filter(|&b| b != 0)
            .collect()
    };
    let (auth, key, tenant, call, url) = (next(), next(), next(), next(), next());
    let c = |v: &Vec<u8>| CString::new(v.clone()).unwrap();
    let (auth_c, key_c, tenant_c, call_c, url_c) =
        (c(&auth), c(&key), c(&tenant), c(&call), c(&url));

    unsafe {
        let o = tryvox_options_new();
        assert!(!o.is_null());
        // Arbitrary URL: must be accepted or refused cleanly.
        let rc = tryvox_options_set_base_url(o, url_c.as_ptr());
        assert!(rc == 0 || rc == INVALID);
        assert!(tryvox_options_set_base_url(o, dead_base().as_ptr()) == 0);
        let rc = tryvox_options_set_tenant_id(o, tenant_c.as_ptr());
        assert_eq!(rc == 0, is_valid_token(&tenant), "tenant {tenant:?}");
        let rc = tryvox_options_set_proxy(o, url_c.as_ptr());
        assert!(rc == 0 || rc == INVALID);
        if rc == 0 {
            // Keep the fuzz loop on loopback: undo an accepted proxy.
            tryvox_options_free(o);
            return;
        }
        tryvox_options_set_max_retries(o, 0);
        tryvox_options_set_timeout_ms(o, 200);
        let client = tryvox_client_new_with_options(auth_c.as_ptr(), key_c.as_ptr(), o);
        tryvox_options_free(o);
        let valid_client = is_valid_id(&auth) && is_valid_token(&key);
        assert_eq!(
            !client.is_null(),
            valid_client,
            "auth {auth:?}: {}",
            last_error()
        );
        if client.is_null() {
            assert!(!last_error().is_empty());
            same_but_redaction(&auth_c, &key, &tenant_c, &call_c);
            return;
        }
        let rc = tryvox_hangup(client, call_c.as_ptr() as *const c_char);
        if is_valid_id(&call) {
            // Sent to a closed port: refused connection, never a panic.
            assert_eq!(rc, 9, "{call:?}: {}", last_error());
        } else {
            assert_eq!(rc, INVALID, "{call:?}");
            assert_eq!(tryvox_last_http_status(), 0);
        }
        tryvox_client_free(client);
        same_but_redaction(&auth_c, &key, &tenant_c, &call_c);
    }
});
