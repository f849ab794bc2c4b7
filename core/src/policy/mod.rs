//! The policy: pure decisions, no I/O. What a response means (`response`: status, server
//! code, message, `Retry-After`), and whether and when to try again within the deadline
//! (`retry`: the retry rules, backoff, pacing and deadline arithmetic, in one place).

pub(crate) mod response;
pub(crate) mod retry;
