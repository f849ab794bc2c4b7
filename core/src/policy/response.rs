//! Pure mapping of one HTTP response to an outcome: status, both error envelopes, empty
//! and non-JSON bodies, and `Retry-After`. No I/O here, so it is unit-tested and fuzzed.

use std::time::{Duration, SystemTime};

use serde::Deserialize;

use crate::contract::error::{Error, Status};

/// The most of a response body the library ever reads. An error page larger than this is
/// cut off (and its connection dropped), so a hostile 100 MB answer costs 64 KiB.
pub const MAX_BODY: usize = 64 * 1024;
/// Longest server message quoted in an error, in characters.
pub const MAX_MESSAGE: usize = 300;
/// Longest server error code kept, in characters.
pub const MAX_CODE: usize = 64;

#[derive(Deserialize)]
struct Envelope {
    error: Option<ErrorField>,
    message: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum ErrorField {
    /// The hangup page's form: `"error": "call_not_found"`.
    Flat(String),
    /// The errors page's form: `"error": {"code": "NOT_FOUND", "message": ...}`.
    Nested {
        code: Option<String>,
        message: Option<String>,
    },
}

/// The server's error code and message from a body, decoded but not yet cleaned or cut
/// (redaction must see the whole text), "" where absent or unreadable.
pub fn parse_error_body(body: &[u8]) -> (String, String) {
    let Ok(env) = serde_json::from_slice::<Envelope>(body) else {
        return (String::new(), String::new());
    };
    let (code, nested_msg) = match env.error {
        Some(ErrorField::Flat(c)) => (c, None),
        Some(ErrorField::Nested { code, message }) => (code.unwrap_or_default(), message),
        None => (String::new(), None),
    };
    let msg = nested_msg.or(env.message).unwrap_or_default();
    (code, msg)
}

/// Printable, bounded text: a server's words go into our messages, never its control bytes.
fn clean(s: &str, max: usize) -> String {
    s.chars()
        .take(max)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .trim()
        .to_owned()
}

/// What a response means for a hangup of `call_uuid`.
pub fn classify(http_status: u16, body: &[u8], call_uuid: &str) -> Result<(), Error> {
    classify_with(http_status, body, call_uuid, &|s: &str| s.to_owned())
}

/// As [`classify`], passing the server's own words (decoded code and message) through
/// `redact` first: a hostile server may echo the API key, in any JSON escaping. They are
/// cleaned and cut to length only after redaction, so a cut cannot split the key into a
/// piece that no longer matches.
pub fn classify_with(
    http_status: u16,
    body: &[u8],
    call_uuid: &str,
    redact: &dyn Fn(&str) -> String,
) -> Result<(), Error> {
    if (200..300).contains(&http_status) {
        return Ok(());
    }
    let (code, server_msg) = parse_error_body(body);
    let code = clean(&redact(&code), MAX_CODE);
    let server_msg = clean(&redact(&server_msg), MAX_MESSAGE);
    let status = match http_status {
        404 if is_already_ended(&code) => Status::AlreadyEnded,
        404 => Status::NotFound,
        401 => Status::Unauthorized,
        403 => Status::Forbidden,
        429 => Status::RateLimited,
        500..=599 => Status::ServerError,
        _ => Status::ProtocolError,
    };
    let what = match status {
        Status::NotFound => format!("call {call_uuid} not found"),
        Status::AlreadyEnded => format!("call {call_uuid} has already ended"),
        Status::Unauthorized => "the API key was refused; check the key and the account id".into(),
        Status::Forbidden => "the API key may not hang up this call (forbidden)".into(),
        Status::RateLimited => "rate limited by the server".into(),
        Status::ServerError => "the TryVox server failed".into(),
        _ => "unexpected response from the server".into(),
    };
    let mut message = format!("{what} (HTTP {http_status}");
    if !code.is_empty() {
        message.push_str(", ");
        message.push_str(&code);
    }
    message.push(')');
    if !server_msg.is_empty() {
        message.push_str(": ");
        message.push_str(&server_msg);
    }
    Err(Error::new(status, message).with_http(http_status, code))
}

fn is_already_ended(code: &str) -> bool {
    code.eq_ignore_ascii_case("call_already_ended")
}

/// `Retry-After` as delay-seconds or an HTTP date, relative to `now`. A date in the past
/// means "now"; anything unparseable is `None` (the caller falls back to backoff).
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let v = value.trim();
    if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
        // Saturate absurd values instead of failing: they simply will not fit a deadline.
        let secs = v.parse::<u64>().unwrap_or(u64::MAX).min(u64::MAX / 2);
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate::parse_http_date(v).ok()?;
    Some(when.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(code: u16, body: &str) -> Status {
        match classify(code, body.as_bytes(), "c1") {
            Ok(()) => Status::Ok,
            Err(e) => e.status(),
        }
    }

    #[test]
    fn statuses() {
        assert_eq!(st(204, ""), Status::Ok);
        assert_eq!(st(200, "{}"), Status::Ok);
        assert_eq!(
            st(404, r#"{"error":"call_not_found","message":"nope"}"#),
            Status::NotFound
        );
        assert_eq!(
            st(
                404,
                r#"{"error":"call_already_ended","message":"Call has already ended"}"#
            ),
            Status::AlreadyEnded
        );
        assert_eq!(
            st(404, r#"{"error":{"code":"NOT_FOUND","message":"x"}}"#),
            Status::NotFound
        );
        assert_eq!(
            st(404, r#"{"error":{"code":"call_already_ended"}}"#),
            Status::AlreadyEnded
        );
        assert_eq!(
            st(404, r#"{"error":{"code":"CALL_ALREADY_ENDED"}}"#),
            Status::AlreadyEnded
        );
        assert_eq!(st(404, ""), Status::NotFound);
        assert_eq!(st(404, "<html>nginx</html>"), Status::NotFound);
        assert_eq!(st(404, r#"{"error":42}"#), Status::NotFound);
        assert_eq!(st(401, ""), Status::Unauthorized);
        assert_eq!(st(403, ""), Status::Forbidden);
        assert_eq!(st(429, ""), Status::RateLimited);
        assert_eq!(st(500, ""), Status::ServerError);
        assert_eq!(st(501, ""), Status::ServerError);
        assert_eq!(st(400, ""), Status::ProtocolError);
        assert_eq!(st(418, ""), Status::ProtocolError);
        assert_eq!(st(301, ""), Status::ProtocolError);
        assert_eq!(st(100, ""), Status::ProtocolError);
    }

    #[test]
    fn messages_carry_code_and_server_text() {
        let e = classify(
            404,
            br#"{"error":"call_not_found","message":"Call with UUID c1 not found"}"#,
            "c1",
        )
        .unwrap_err();
        assert_eq!(e.server_code(), "call_not_found");
        assert_eq!(e.http_status(), 404);
        assert_eq!(
            e.message(),
            "call c1 not found (HTTP 404, call_not_found): Call with UUID c1 not found"
        );
        let e = classify(
            401,
            b"{\"error\":{\"code\":\"UNAUTHORIZED\",\"message\":\"bad\\r\\nkey\"}}",
            "c1",
        )
        .unwrap_err();
        assert_eq!(e.server_code(), "UNAUTHORIZED");
        assert!(!e.message().contains('\n'));
    }

    #[test]
    fn server_words_are_redacted_after_decoding() {
        let body =
            br#"{"error":{"code":"UNAUTHORIZED","message":"key tvx\u005fsk_test_x is bad"}}"#;
        let e = classify_with(401, body, "c1", &|s: &str| {
            s.replace("tvx_sk_test_x", "[REDACTED]")
        })
        .unwrap_err();
        assert_eq!(e.message(), "the API key was refused; check the key and the account id (HTTP 401, UNAUTHORIZED): key [REDACTED] is bad");
    }

    #[test]
    fn retry_after() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(parse_retry_after("3", now), Some(Duration::from_secs(3)));
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        assert!(
            parse_retry_after("99999999999999999999999", now).unwrap()
                > Duration::from_secs(1 << 40)
        );
        let later = httpdate::fmt_http_date(now + Duration::from_secs(5));
        assert_eq!(parse_retry_after(&later, now), Some(Duration::from_secs(5)));
        let past = httpdate::fmt_http_date(now - Duration::from_secs(5));
        assert_eq!(parse_retry_after(&past, now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-1", now), None);
        assert_eq!(parse_retry_after("", now), None);
    }
}
