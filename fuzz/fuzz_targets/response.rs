//! Response handling: any status, `Retry-After` value and body must map to an outcome
//! without a panic, with a printable message, and with the contract's status classes.
#![no_main]

use std::time::{Duration, SystemTime};

use libfuzzer_sys::fuzz_target;
use tryvox::fuzzing::{classify, parse_error_body, parse_retry_after};
use tryvox::Status;

fuzz_target!(|data: &[u8]| {
    if data.len() < 3 {
        return;
    }
    let http = u16::from_le_bytes([data[0], data[1]]) % 1000;
    let split = (data[2] as usize).min(data.len() - 3);
    let (retry_after, body) = data[3..].split_at(split);

    let (code, message) = parse_error_body(body);
    assert!(code.chars().count() <= 64 && message.chars().count() <= 300);
    assert!(!code.chars().chain(message.chars()).any(char::is_control));

    match classify(http, body, "fuzz-call") {
        Ok(()) => assert!((200..300).contains(&http)),
        Err(e) => {
            assert!(!(200..300).contains(&http));
            assert!(!e.message().chars().any(char::is_control), "{:?}", e.message());
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
