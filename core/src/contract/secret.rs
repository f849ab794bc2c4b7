//! The API key: never formatted, wiped when the last holder drops it.

use bytes::Bytes;
use ureq_proto::http::HeaderValue;
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

    /// `text` with every run of [`LEAK_RUN`] or more characters of the key replaced (a
    /// hostile server may echo the key back, whole or in pieces).
    pub(crate) fn redact(&self, text: &str) -> String {
        redact(&self.raw, text)
    }
}

/// The shortest run of the key's characters that counts as a leak. A shorter key is
/// redacted only where it appears whole.
pub const LEAK_RUN: usize = 8;
const MARK: &str = "[REDACTED]";
/// For a key that contains text of `MARK`: no ASCII, so it can be no part of a key run.
const MARK_NON_ASCII: &str = "\u{2026}";

/// `text` with every substring of `key` that is [`LEAK_RUN`] bytes or longer (the whole
/// key, if shorter) replaced by `[REDACTED]` (or by "…" for the odd key that would form a
/// run with the marker's own letters). Apply it to decoded text, before any truncation:
/// truncating first could cut the key so that the remaining piece no longer matches.
pub fn redact(key: &[u8], text: &str) -> String {
    let run = LEAK_RUN.min(key.len());
    if run == 0 || text.len() < run {
        return text.to_owned();
    }
    let grams: std::collections::HashSet<&[u8]> = key.windows(run).collect();
    let bytes = text.as_bytes();
    // Byte ranges to hide, merged; each starts and ends on ASCII bytes of the key, so on
    // char boundaries.
    let mut hide: Vec<(usize, usize)> = Vec::new();
    for (i, w) in bytes.windows(run).enumerate() {
        if grams.contains(w) {
            match hide.last_mut() {
                Some((_, end)) if *end >= i => *end = i + run,
                _ => hide.push((i, i + run)),
            }
        }
    }
    if hide.is_empty() {
        return text.to_owned();
    }
    let replace = |mark: &str| {
        let mut out = String::with_capacity(text.len());
        let mut at = 0;
        for &(start, end) in &hide {
            out.push_str(&text[at..start]);
            out.push_str(mark);
            at = end;
        }
        out.push_str(&text[at..]);
        out
    };
    let out = replace(MARK);
    // Text left between marks holds no run (it would have been marked), so a run can
    // only form across or inside a mark's own letters (a short key such as "REDACT");
    // a non-ASCII mark cannot be part of one: keys are visible ASCII.
    if out.as_bytes().windows(run).any(|w| grams.contains(w)) {
        return replace(MARK_NON_ASCII);
    }
    out
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
    fn a_key_inside_the_marker_is_not_shown_by_it() {
        for key in ["REDACT", "DAC", "[REDACTED]", "EDACTED]"] {
            let out = redact(key.as_bytes(), &format!("bad key {key} sent"));
            assert!(!out.contains(key), "{key}: {out}");
            assert!(out.contains('\u{2026}'), "{key}: {out}");
        }
    }

    #[test]
    fn never_shown() {
        let k = ApiKey::new("tvx_sk_test_hush");
        assert_eq!(k.header().as_bytes(), b"Bearer tvx_sk_test_hush");
        assert!(!format!("{k:?} {:?}", k.header()).contains("hush"));
        assert_eq!(k.redact("echo tvx_sk_test_hush!"), "echo [REDACTED]!");
    }

    #[test]
    fn every_run_of_eight_is_redacted() {
        let key = b"tvx_sk_live_0123456789abcdef";
        assert_eq!(redact(key, "no key here"), "no key here");
        // A piece of the key, cut at either end, is still hidden.
        assert_eq!(redact(key, "x tvx_sk_live_0123 y"), "x [REDACTED] y");
        assert_eq!(redact(key, "456789abcdef."), "[REDACTED].");
        // Seven characters are not a leak; two pieces around other text are two marks.
        assert_eq!(redact(key, "tvx_sk_"), "tvx_sk_");
        assert_eq!(redact(key, "tvx_sk_live|89abcdef"), "[REDACTED]|[REDACTED]");
        // Overlapping and repeated runs merge into one mark; multibyte text survives.
        assert_eq!(
            redact(key, "é tvx_sk_live_0123456789abcdeftvx_sk_live_0 é"),
            "é [REDACTED] é"
        );
        // A short key is hidden only whole; a marker that holds it is not used.
        assert_eq!(redact(b"abc", "xabcx ab"), "x[REDACTED]x ab");
        assert_eq!(redact(b"C", "Connection"), "\u{2026}onnection");
        // A key that contains the marker cannot be rebuilt around it.
        let odd = b"[REDACTED]tail0";
        assert_eq!(redact(odd, "[REDACTE[REDACTED]tail0"), "\u{2026}");
        let odd = b"tvx)nnection[REDACTED]";
        assert_eq!(redact(odd, "Connection refused"), "Co\u{2026} refused");
    }
}
