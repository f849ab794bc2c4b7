//! libtryvox: the C library over [`tryvox_core`].
//!
//! This crate owns everything C-specific and nothing else: the C ABI ([`ffi`], whose doc
//! comments become `include/tryvox.h`), its panic boundary and per-thread last error, the
//! C status enum and texts generated from the core's status table (see `build.rs`), and
//! the key-wiping allocator of the C artifacts. Rust programs use `tryvox-core` directly.

pub mod ffi;

// aws-lc's allocator hooks (src/aws_lc_mem.c). aws-lc refers to them only weakly, and a
// weak reference pulls nothing out of an archive: this static's strong references do, so
// that the definitions are in the library and aws-lc's references bind to them.
extern "C" {
    fn OPENSSL_memory_alloc(size: usize) -> *mut std::ffi::c_void;
    fn OPENSSL_memory_free(ptr: *mut std::ffi::c_void);
    fn OPENSSL_memory_get_size(ptr: *mut std::ffi::c_void) -> usize;
    fn OPENSSL_memory_realloc(ptr: *mut std::ffi::c_void, size: usize) -> *mut std::ffi::c_void;
}
type AllocHooks = (
    unsafe extern "C" fn(usize) -> *mut std::ffi::c_void,
    unsafe extern "C" fn(*mut std::ffi::c_void),
    unsafe extern "C" fn(*mut std::ffi::c_void) -> usize,
    unsafe extern "C" fn(*mut std::ffi::c_void, usize) -> *mut std::ffi::c_void,
);
#[used]
static AWS_LC_ALLOC_HOOKS: AllocHooks = (
    OPENSSL_memory_alloc,
    OPENSSL_memory_free,
    OPENSSL_memory_get_size,
    OPENSSL_memory_realloc,
);
#[cfg(feature = "wipe-freed-memory")]
mod wipe_alloc;

/// Every block the C library frees is zeroed first, so no copy of the API key (ours or
/// the HTTP stack's) outlives the client. See `wipe_alloc.rs`; this crate's rlib exists
/// for its own tests, and Rust programs depend on `tryvox-core`, which has no allocator.
#[cfg(feature = "wipe-freed-memory")]
#[global_allocator]
static ALLOCATOR: wipe_alloc::WipingAllocator = wipe_alloc::WipingAllocator;
