//! The engine's HTTP reading (ureq-proto framing, 1xx skipped, obs-fold unfolded, head
//! and body bounds): any bytes, handed over in pieces of any size, end in an answer or an
//! error, never a panic, and never hold more than one head plus one piece unread or a
//! body past its bound.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tryvox_core::fuzzing::read_in_pieces;

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let step = 1 + data[0] as usize * 7;
    let limit = 1 + data[1] as usize * 64;
    let bytes = &data[2..];
    if let Some((status, body)) = read_in_pieces(bytes, step, limit) {
        assert!((100..=999).contains(&status));
        assert!(body <= limit);
    }
});
