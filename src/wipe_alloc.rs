//! Zero-on-free for every allocation the library makes (feature `wipe-freed-memory`, on by
//! default for the C library).
//!
//! Our own copy of the API key is wiped on drop (`contract::secret`), but the HTTP stack copies
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

/// Zeroes `len` bytes at `ptr`, in a way the compiler may not remove even though the
/// block is freed right after (a plain memset before `free` is a dead store to LLVM).
///
/// Raw-pointer writes, never a `&mut [u8]`: the block may hold uninitialized bytes
/// (a buffer never filled, padding), and a reference to those would be undefined
/// behaviour. The barrier is an empty `asm!` that takes the pointer and, lacking the
/// `nomem` option, counts as reading the memory behind it, so the stores must happen.
///
/// # Safety
/// `ptr` is valid for writes of `len` bytes.
unsafe fn wipe(ptr: *mut u8, len: usize) {
    // SAFETY: per this function's contract.
    unsafe { std::ptr::write_bytes(ptr, 0, len) };
    barrier(ptr);
}

#[cfg(any(
    target_arch = "x86",
    target_arch = "x86_64",
    target_arch = "arm",
    target_arch = "aarch64",
    target_arch = "riscv64",
    target_arch = "loongarch64",
    target_arch = "s390x"
))]
#[inline(always)]
fn barrier(ptr: *mut u8) {
    // SAFETY: an empty instruction sequence; it only makes the compiler assume `ptr`'s
    // memory is read.
    unsafe { std::arch::asm!("/* {0} */", in(reg) ptr, options(nostack, preserves_flags)) };
}

#[cfg(not(any(
    target_arch = "x86",
    target_arch = "x86_64",
    target_arch = "arm",
    target_arch = "aarch64",
    target_arch = "riscv64",
    target_arch = "loongarch64",
    target_arch = "s390x"
)))]
#[inline(always)]
fn barrier(ptr: *mut u8) {
    std::hint::black_box(ptr);
    std::sync::atomic::compiler_fence(std::sync::atomic::Ordering::SeqCst);
}

#[cfg(test)]
mod tests {
    #[test]
    fn wipe_zeroes_every_byte() {
        let mut buf = *b"Bearer tvx_sk_live_0123456789abcdef";
        unsafe { super::wipe(buf.as_mut_ptr(), buf.len()) };
        assert!(buf.iter().all(|&b| b == 0));
    }

    #[test]
    fn freeing_an_uninitialized_block_is_fine() {
        use std::alloc::{GlobalAlloc, Layout};
        let a = super::WipingAllocator;
        let layout = Layout::from_size_align(4096, 8).unwrap();
        // A block never written: the wipe must not read or reference it as bytes.
        unsafe {
            let p = a.alloc(layout);
            assert!(!p.is_null());
            a.dealloc(p, layout);
        }
    }
}
