//! The host process's resources, shared by every client in it: fork detection
//! (`process`), the library's share of the file descriptors (`fds`), and the callback
//! threads (`pool`).

use std::sync::Once;

pub(crate) mod fds;
pub(crate) mod pool;
pub(crate) mod process;

/// Registers the fork handler (once per process, by the first client) and makes the
/// process-wide lazy values: this layer's, then those `make` makes (the layers above).
pub(crate) fn init(make: fn()) {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: registers a handler with no preconditions. Registered from a shared
        // object, glibc removes it when that object is unloaded.
        unsafe {
            libc::pthread_atfork(None, None, Some(in_child));
        }
        // The process-wide lazy values a hangup reaches are made now, before any client
        // exists: a fork taken while another thread was making one would leave the
        // child waiting for it forever.
        fds::init();
        make();
    });
}

/// Runs in the child of a `fork()`, before `fork()` returns there: single-threaded, only
/// async-signal-safe work (atomics, `close()`).
extern "C" fn in_child() {
    process::bump_generation();
    fds::after_fork_in_child();
}
