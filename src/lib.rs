//! libtryvox: hang up calls on the TryVox voice API.
//!
//! A safe Rust core ([`Client`], [`Options`], [`Error`]) and, over it, a C ABI (`ffi`)
//! whose header is `include/tryvox.h`. Every C status number is a [`Status`].
//!
//! ```no_run
//! let client = tryvox::Client::new("AC123456", "tvx_sk_test_...").unwrap();
//! match client.hangup("650e8400-e29b-41d4-a716-446655440000") {
//!     Ok(http) => println!("call ended (HTTP {http})"),
//!     Err(e) if e.call_is_gone() => println!("nothing to hang up: {e}"),
//!     Err(e) => eprintln!("hangup failed: {e}"),
//! }
//! ```

mod client;
mod error;
pub mod ffi;
mod options;
mod pool;
mod resolve;
mod response;
mod retry;
mod secret;
mod transport;
mod validate;
#[cfg(feature = "wipe-freed-memory")]
mod wipe_alloc;

/// Every block the library frees is zeroed first, so no copy of the API key (ours or
/// the HTTP stack's) outlives the client. See `wipe_alloc.rs`.
#[cfg(feature = "wipe-freed-memory")]
#[global_allocator]
static ALLOCATOR: wipe_alloc::WipingAllocator = wipe_alloc::WipingAllocator;

pub use client::{Client, HangupResult, DEFAULT_PARALLEL};
pub use error::{Error, Status};
pub use options::{
    LogFn, LogLevel, Options, DEFAULT_BASE_URL, DEFAULT_CONNECT_TIMEOUT, DEFAULT_MAX_RETRIES,
    DEFAULT_TIMEOUT,
};
pub use pool::MAX_WORKERS;

/// Pure pieces exposed for the fuzz targets; not a stable API.
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::response::{
        classify, classify_with, parse_error_body, parse_retry_after, MAX_CODE, MAX_MESSAGE,
    };
    pub use crate::secret::{redact as redact_key, LEAK_RUN};
    pub use crate::validate::{id as validate_id, token as validate_token};
}
