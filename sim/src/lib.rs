//! tryvox-sim: a local TryVox voice API for offline development and tests.
//!
//! It follows the documented API (create, get, list and hang up calls, with the hangup
//! page's exact semantics and webhooks), adds control endpoints under `/_sim/` to drive
//! calls and inject faults, and runs over plain HTTP or TLS.

pub mod app;
pub mod auth;
pub mod calls;
pub mod faults;
pub mod rng;
pub mod server;
pub mod tls;
pub mod webhooks;

pub use server::{spawn, Config, Running};
