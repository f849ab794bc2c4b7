//! tryvox-core: hang up calls on the TryVox voice API, from Rust.
//!
//! The safe library under libtryvox: [`Client`] (blocking, asynchronous and bulk
//! hangups with one deadline, retries and redaction), [`Options`], [`Error`] and
//! [`Status`]. It has no C interface, no global allocator and no build script: the C
//! library (the `tryvox` crate at the repository root) is a thin layer over it.
//!
//! ```no_run
//! let client = tryvox_core::Client::new("AC123456", "tvx_sk_test_...").unwrap();
//! match client.hangup("650e8400-e29b-41d4-a716-446655440000") {
//!     Ok(http) => println!("call ended (HTTP {http})"),
//!     Err(e) if e.call_is_gone() => println!("nothing to hang up: {e}"),
//!     Err(e) => eprintln!("hangup failed: {e}"),
//! }
//! ```

mod attempt;
mod bulk;
mod client;
mod error;
mod options;
mod pool;
mod resolve;
mod response;
mod retry;
mod secret;
mod status;
#[cfg(unix)]
mod transport;
mod validate;

pub use bulk::DEFAULT_PARALLEL;
pub use client::{Client, HangupResult};
pub use error::{Error, Status};
pub use options::{
    LogFn, LogLevel, Options, DEFAULT_BASE_URL, DEFAULT_CONNECT_TIMEOUT, DEFAULT_MAX_RETRIES,
    DEFAULT_TIMEOUT,
};
pub use pool::MAX_WORKERS;
#[doc(hidden)]
pub use resolve::LookupFn;

/// Pure pieces exposed for the fuzz targets; not a stable API.
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::response::{
        classify, classify_with, parse_error_body, parse_retry_after, MAX_CODE, MAX_MESSAGE,
    };
    pub use crate::secret::{redact as redact_key, LEAK_RUN};
    pub use crate::validate::{id as validate_id, token as validate_token};
}
