//! A Rust program with its own `#[global_allocator]` builds and runs against tryvox-core:
//! the core brings no allocator of its own (two would not link: "the
//! `#[global_allocator]` ... conflicts"). The key-wiping allocator lives in the C library.

use std::alloc::{GlobalAlloc, Layout, System};
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded with the caller's layout.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded with the caller's pointer and layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

#[test]
fn the_programs_allocator_serves_the_core() {
    // A port with nobody listening: the hangup fails fast, after the whole client path
    // (options, agent, resolver, connector) ran on this program's allocator.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut o = tryvox_core::Options::default();
    o.set_base_url(&format!("http://127.0.0.1:{port}")).unwrap();
    o.set_max_retries(0).unwrap();
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    let c = tryvox_core::Client::with_options("AC123", "tvx_sk_test_allocator", &o).unwrap();
    let e = c.hangup("some-call").unwrap_err();
    assert_eq!(e.status(), tryvox_core::Status::NetworkError, "{e}");
    assert!(ALLOCATIONS.load(Ordering::Relaxed) > before);
}
