//! The contract's vocabulary: what the C API and the Rust API speak in. Statuses and
//! errors, the rules for ids and keys, the key itself, the options, and the statistics
//! a client keeps. Nothing here knows about sockets, threads or retries.

pub(crate) mod error;
pub(crate) mod options;
pub(crate) mod secret;
pub(crate) mod stats;
pub(crate) mod status;
pub(crate) mod validate;
