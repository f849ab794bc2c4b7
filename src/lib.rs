//! libtryvox: the C library over [`tryvox_core`].
//!
//! This crate owns everything C-specific and nothing else: the C ABI ([`ffi`], whose doc
//! comments become `include/tryvox.h`), its panic boundary and per-thread last error, the
//! C status enum and texts generated from the core's status table (see `build.rs`), and
//! the key-wiping allocator of the C artifacts. Rust programs use `tryvox-core` directly.

pub mod ffi;
#[cfg(feature = "wipe-freed-memory")]
mod wipe_alloc;

/// Every block the C library frees is zeroed first, so no copy of the API key (ours or
/// the HTTP stack's) outlives the client. See `wipe_alloc.rs`; this crate's rlib exists
/// for its own tests, and Rust programs depend on `tryvox-core`, which has no allocator.
#[cfg(feature = "wipe-freed-memory")]
#[global_allocator]
static ALLOCATOR: wipe_alloc::WipingAllocator = wipe_alloc::WipingAllocator;
