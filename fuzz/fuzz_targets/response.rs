//! Response handling: any status, `Retry-After` value and body must map to an outcome
//! without a panic, with a printable message, and with the contract's status classes.
//! The key oracle: with a key taken from the input, no run of `LEAK_RUN` characters of
//! the key appears in the message or the server code, whatever the body holds.
#![no_main]

use std::time::{Duration, SystemTime};

use libfuzzer_sys::fuzz_target;
use tryvox_core::fuzzing::{
    classify, classify_with, parse_error_body, parse_retry_after, redact_key, LEAK_RUN, MAX_CODE,
    MAX_MESSAGE,
};
use tryvox_core::Status;

/// Key characters: none of our own message text has 8 of them in a row ("HTTP" and
/// "TLS" are the longest such runs), so any run found came from the server's words.
const KEY_ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ~^";

fn shows_key(text: &str, key: &[u8]) -> bool {
    let run = LEAK_RUN.min(key.len());
    text.as_bytes()
        .windows(run)
        .any(|w| key.windows(run).any(|k| k == w))
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 4 {
        return;
    }
    let http = u16::from_le_bytes([data[0], data[1]]) % 1000;
    let key_len = (data[3] as usize % 64).min(data.len() - 4);
    let (key_bytes, rest) = data[4..].split_at(key_len);
    let mut key: Vec<u8> = key_bytes
        .iter()
        .map(|b| KEY_ALPHABET[*b as usize % KEY_ALPHABET.len()])
        .collect();
    // Shorter keys are redacted only whole, and may well occur in our own text ("429").
    while key.len() < LEAK_RUN {
        key.extend_from_slice(b"K3Y");
    }
    let split = (data[2] as usize).min(rest.len());
    let (retry_after, body) = rest.split_at(split);

    // Never panics, whatever the body.
    let _ = parse_error_body(body);

    let keyed = std::str::from_utf8(&key).unwrap();
    match classify_with(http, body, "fuzz-call", &|s: &str| redact_key(&key, s)) {
        Ok(()) => assert!((200..300).contains(&http)),
        Err(e) => {
            assert!(e.server_code().chars().count() <= MAX_CODE);
            assert!(!e.server_code().chars().any(char::is_control));
            // The text is not printed on failure: it would show the key.
            assert!(
                !shows_key(e.message(), &key),
                "message shows the key {keyed}"
            );
            assert!(
                !shows_key(e.server_code(), &key),
                "code shows the key {keyed}"
            );
        }
    }

    match classify(http, body, "fuzz-call") {
        Ok(()) => assert!((200..300).contains(&http)),
        Err(e) => {
            assert!(!(200..300).contains(&http));
            assert!(
                !e.message().chars().any(char::is_control),
                "{:?}",
                e.message()
            );
            assert!(e.server_code().chars().count() <= MAX_CODE);
            // Our words, the code and the message (cut to MAX_MESSAGE characters).
            assert!(e.message().chars().count() <= 200 + MAX_CODE + MAX_MESSAGE);
            let want = match http {
                404 => &[Status::NotFound, Status::AlreadyEnded][..],
                401 => &[Status::Unauthorized],
                403 => &[Status::Forbidden],
                429 => &[Status::RateLimited],
                500..=599 => &[Status::ServerError],
                _ => &[Status::ProtocolError],
            };
            assert!(want.contains(&e.status()), "{http} -> {:?}", e.status());
            assert_eq!(e.http_status(), http);
        }
    }

    if let Ok(v) = std::str::from_utf8(retry_after) {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        if let Some(d) = parse_retry_after(v, now) {
            // Plain seconds parse exactly (saturating); dates are never before "now".
            if let Ok(secs) = v.trim().parse::<u64>() {
                assert_eq!(d, Duration::from_secs(secs.min(u64::MAX / 2)));
            }
        }
    }
});
