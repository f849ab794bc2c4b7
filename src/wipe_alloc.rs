//! Zero-on-free for every allocation the library makes (feature `wipe-freed-memory`, on by
//! default for the C library).
//!
//! Our own copy of the API key is wiped on drop (`secret.rs`), but the HTTP stack copies
//! the `Authorization` header into each connection's output buffer, and that buffer is
//! freed without wiping. Zeroing every block as it is freed means no copy of the key
//! outlives the client. The cost is a memset per free: a few hundred bytes per hangup.
//!
//! Rust programs that link the `rlib` and have their own global allocator can disable
//! the feature (`default-features = false`).

use std::alloc::{GlobalAlloc, Layout, System};

pub struct WipingAllocator;

unsafe impl GlobalAlloc for WipingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded unchanged.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded unchanged.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` is a live block of `layout.size()` bytes that we allocated.
        unsafe {
            wipe(ptr, layout.size());
            System.dealloc(ptr, layout)
        }
    }
    // `realloc` keeps the default: allocate, copy, then `dealloc` (which wipes) the old
    // block, so a grown buffer leaves no copy behind either.
}

/// Zeroes `len` bytes at `ptr` with volatile writes, which the compiler may not remove
/// even though the memory is freed right after.
///
/// # Safety
/// `ptr` is valid for writes of `len` bytes.
unsafe fn wipe(ptr: *mut u8, len: usize) {
    use zeroize::Zeroize;
    // SAFETY: per this function's contract.
    unsafe { std::slice::from_raw_parts_mut(ptr, len) }.zeroize();
}

#[cfg(test)]
mod tests {
    #[test]
    fn wipe_zeroes_every_byte() {
        let mut buf = *b"Bearer tvx_sk_live_0123456789abcdef";
        unsafe { super::wipe(buf.as_mut_ptr(), buf.len()) };
        assert!(buf.iter().all(|&b| b == 0));
    }
}
