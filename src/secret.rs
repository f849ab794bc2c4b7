//! The API key: never formatted, wiped when the last holder drops it.

use bytes::Bytes;
use ureq::http::HeaderValue;
use zeroize::Zeroize;

/// Owns the `Bearer <key>` header bytes and wipes them on drop.
struct WipeOnDrop(Vec<u8>);

impl AsRef<[u8]> for WipeOnDrop {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl Drop for WipeOnDrop {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

/// The API key, held only as a ready `Authorization` header value.
///
/// Cloning the header value shares the same wiped-on-drop buffer (no copy per request),
/// and `HeaderValue`'s sensitive flag keeps it out of `Debug` output. This type has no
/// `Debug` or `Display` of its own.
pub(crate) struct ApiKey {
    header: HeaderValue,
    /// The raw key bytes, kept only so messages can be scrubbed of it.
    raw: Bytes,
}

impl ApiKey {
    /// The caller has validated `key` (visible ASCII only).
    pub(crate) fn new(key: &str) -> ApiKey {
        let mut buf = Vec::with_capacity(7 + key.len());
        buf.extend_from_slice(b"Bearer ");
        buf.extend_from_slice(key.as_bytes());
        let bytes = Bytes::from_owner(WipeOnDrop(buf));
        let raw = bytes.slice(7..);
        let mut header =
            HeaderValue::from_maybe_shared(bytes).expect("validated key is a valid header value");
        header.set_sensitive(true);
        ApiKey { header, raw }
    }

    pub(crate) fn header(&self) -> &HeaderValue {
        &self.header
    }

    /// Replaces any occurrence of the key in `text` (a hostile server may echo it back).
    pub(crate) fn scrub(&self, text: &str) -> String {
        match std::str::from_utf8(&self.raw) {
            Ok(k) if !k.is_empty() && text.contains(k) => text.replace(k, "[REDACTED]"),
            _ => text.to_owned(),
        }
    }
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKey([REDACTED])")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_shown() {
        let k = ApiKey::new("tvx_sk_test_hush");
        assert_eq!(k.header().as_bytes(), b"Bearer tvx_sk_test_hush");
        assert!(!format!("{k:?} {:?}", k.header()).contains("hush"));
        assert_eq!(k.scrub("echo tvx_sk_test_hush!"), "echo [REDACTED]!");
    }
}
