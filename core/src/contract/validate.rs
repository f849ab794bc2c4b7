//! The input rules of the contract, in one place. Every check runs before anything is
//! sent, so a hostile id can never reach another path and a bad key never reaches a header.

use crate::contract::error::Error;

/// Longest `auth_id` or `call_uuid` accepted.
pub const MAX_ID_LEN: usize = 128;
/// Longest API key or tenant id accepted.
pub const MAX_TOKEN_LEN: usize = 512;

/// `auth_id` and `call_uuid`: 1 to 128 characters from `A-Z a-z 0-9 - _ . ~`, and not
/// `.` or `..` (which a URL resolver would treat as path navigation).
pub fn id(what: &str, value: &str) -> Result<(), Error> {
    if value.is_empty() {
        return Err(Error::invalid(format!("{what} is empty")));
    }
    if value.len() > MAX_ID_LEN {
        return Err(Error::invalid(format!(
            "{what} is {} bytes long; the limit is {MAX_ID_LEN}",
            value.len()
        )));
    }
    if let Some((pos, c)) = value
        .char_indices()
        .find(|&(_, c)| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '~')))
    {
        return Err(Error::invalid(format!(
            "{what} has a character that is not allowed ({}) at byte {pos}; \
             allowed are A-Z a-z 0-9 - _ . ~",
            describe_char(c)
        )));
    }
    if value == "." || value == ".." {
        return Err(Error::invalid(format!("{what} may not be \".\" or \"..\"")));
    }
    Ok(())
}

/// API key and tenant id: 1 to 512 visible ASCII characters (0x21 to 0x7E).
/// The message never quotes the value: for the key, that would leak it.
pub fn token(what: &str, value: &[u8]) -> Result<(), Error> {
    if value.is_empty() {
        return Err(Error::invalid(format!("{what} is empty")));
    }
    if value.len() > MAX_TOKEN_LEN {
        return Err(Error::invalid(format!(
            "{what} is {} bytes long; the limit is {MAX_TOKEN_LEN}",
            value.len()
        )));
    }
    if let Some(pos) = value.iter().position(|b| !(0x21..=0x7e).contains(b)) {
        return Err(Error::invalid(format!(
            "{what} has a byte outside visible ASCII (0x21-0x7E) at position {pos}"
        )));
    }
    Ok(())
}

/// The product text appended to the User-Agent: 1 to 256 printable ASCII characters
/// (spaces allowed), so it can never split or inject a header.
pub fn user_agent_product(value: &str) -> Result<(), Error> {
    if value.is_empty() || value.len() > 256 {
        return Err(Error::invalid(
            "user agent product must be 1 to 256 characters",
        ));
    }
    if let Some(pos) = value.bytes().position(|b| !(0x20..=0x7e).contains(&b)) {
        return Err(Error::invalid(format!(
            "user agent product has a byte outside printable ASCII at position {pos}"
        )));
    }
    Ok(())
}

fn describe_char(c: char) -> String {
    if c.is_ascii_graphic() {
        format!("'{c}'")
    } else {
        format!("U+{:04X}", c as u32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        for ok in [
            "a",
            "650e8400-e29b-41d4-a716-446655440000",
            "A.b_c~d-1",
            "...",
            &"x".repeat(128),
        ] {
            assert!(id("call_uuid", ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            ".",
            "..",
            "a/b",
            "a b",
            "a%2F",
            "a?b",
            "a#b",
            "é",
            "a\nb",
            &"x".repeat(129),
        ] {
            assert!(id("call_uuid", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn tokens_never_quote_the_value() {
        let e = token("api_key", b"tvx_sk_test_sec ret").unwrap_err();
        assert!(!e.message().contains("sec"), "{}", e.message());
        assert!(token("api_key", b"tvx_sk_test_abc").is_ok());
        assert!(token("api_key", b"").is_err());
        assert!(token("api_key", &[b'a'; 513]).is_err());
        assert!(token("api_key", &[b'a'; 512]).is_ok());
        assert!(token("api_key", b"a\x7f").is_err());
        assert!(token("api_key", b"a\r\nX-Evil: 1").is_err());
    }
}
