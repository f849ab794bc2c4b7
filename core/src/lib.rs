#![doc = include_str!("../README.md")]
//!
//! ## Module map
//!
//! Layers, bottom to top; a module uses only its own layer and those below it, with no
//! cycle (`tools/layers.py` checks both, and `make test` runs it):
//!
//! | layer | modules | holds |
//! |---|---|---|
//! | host | `host/`: `process`, `fds`, `pool` | fork generations and the fork handler, the process's descriptor budget, callback threads |
//! | vocabulary | `contract/`: `status`, `error`, `validate`, `secret`, `options`, `stats` | the status table, errors, id and key rules, the key, options, statistics counters |
//! | policy | `policy/`: `retry`, `response` | the retry rules, backoff, pacing and deadline arithmetic; what a response means |
//! | network | `net/`: `conn`, `wire`, `transport`, `resolve`, `trust`, `idle` | one connection's state machine, HTTP/1.1 framing, Happy Eyeballs, DNS, trusted roots, keep-alive stack |
//! | shared state | `state/` (`Core`), `state/attempt` | what every path of a client shares, the retry loop; one attempt's outcome judged |
//! | paths | `blocking`, `engine/`: `turn`, `admission`, `slots`, `timers`, `delivery` | the caller's-thread path; the event loop under async and bulk |
//! | operations | `ops/`: `bulk`, `sweep`, `scheduled` | `hangup_many`, `hangup_all`/`hangup_each`, `hangup_after` |
//! | facade | `client` | [`Client`]: each public method a call into the layers below |
//!
//! ## Bad input is refused before anything is sent
//!
//! ```
//! use tryvox_core::{Client, Options, Status};
//!
//! let client = Client::new("AC123456", "tvx_sk_test_key").unwrap();
//! // An id that is not 1-128 characters of A-Z a-z 0-9 - _ . ~ never reaches the network.
//! let e = client.hangup("../accounts").unwrap_err();
//! assert_eq!(e.status(), Status::InvalidArgument);
//! assert!(e.message().contains("call_uuid"));
//!
//! // Plain http leaves loopback only when allowed: the key must not cross a network in
//! // clear text.
//! let mut o = Options::new();
//! o.set_base_url("http://api.example.com").unwrap();
//! let e = Client::with_options("AC123456", "tvx_sk_test_key", &o).unwrap_err();
//! assert_eq!(e.status(), Status::InvalidArgument);
//! o.allow_insecure_http(true);
//! assert!(Client::with_options("AC123456", "tvx_sk_test_key", &o).is_ok());
//! ```
//!
//! ## Every failure has a status, and the deadline bounds it
//!
//! ```
//! use std::time::Duration;
//! use tryvox_core::{Client, Options, Status};
//!
//! // A port on this machine that nobody listens on.
//! let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
//! let mut o = Options::new();
//! o.set_base_url(&format!("http://127.0.0.1:{port}")).unwrap();
//! o.set_timeout(Duration::from_secs(2)).unwrap();
//! let client = Client::with_options("AC123456", "tvx_sk_test_key", &o).unwrap();
//! let e = client.hangup("650e8400-e29b-41d4-a716-446655440000").unwrap_err();
//! assert_eq!(e.status(), Status::NetworkError);
//! assert_eq!(e.http_status(), 0); // no response arrived
//! assert!(!e.call_is_gone());
//! ```

// The layers, bottom to top; each module uses only its own layer and those below it
// (`tools/layers.py`, run by `make test`, fails on an import upward or a cycle).
mod blocking;
mod client;
mod contract;
mod engine;
mod host;
mod net;
mod ops;
mod policy;
mod state;

pub use client::Client;
pub use contract::error::{Error, HangupResult, Status};
#[doc(hidden)]
pub use contract::options::LookupFn;
pub use contract::options::{
    LogFn, LogLevel, Options, TrustStore, DEFAULT_BASE_URL, DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_MAX_RETRIES, DEFAULT_TIMEOUT, MAX_BASE_URL, MAX_CA_FILE,
};
pub use contract::options::{ASYNC_PARALLEL, DEFAULT_MAX_CONNECTIONS, MAX_CONNECTIONS};
pub use contract::stats::{Stats, STATUS_SLOTS};
pub use engine::MAX_CONNECTING;
pub use host::pool::MAX_WORKERS;
pub use ops::bulk::{DEFAULT_PARALLEL, MAX_PARALLEL};
pub use ops::scheduled::ScheduledHangup;
pub use ops::sweep::{Sweep, SweepObserver, SweepReport, DEFAULT_SWEEP_TIMEOUT, LIST_PAGE};

/// Pure pieces exposed for the fuzz targets; not a stable API.
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::contract::secret::{redact as redact_key, LEAK_RUN};
    pub use crate::contract::validate::{id as validate_id, token as validate_token};
    pub use crate::net::wire::read_in_pieces;
    pub use crate::policy::response::{
        classify, classify_with, parse_error_body, parse_retry_after, MAX_CODE, MAX_MESSAGE,
    };
}
