//! The network: one connection's state machine (`conn`: proxy tunnel, TLS, one HTTP/1.1
//! exchange), the HTTP framing on ureq-proto (`wire`), connecting with Happy Eyeballs
//! (`transport`), DNS with merged lookups and a bounded cache (`resolve`), the roots a
//! client trusts (`trust`), and the caller's-thread path's keep-alive connections
//! (`idle`). Sans runtime: the engine and the caller's-thread path drive it.

pub(crate) mod conn;
pub(crate) mod idle;
pub(crate) mod resolve;
pub(crate) mod transport;
pub(crate) mod trust;
pub(crate) mod wire;
