//! What belongs to the process rather than to a client: fork() and its generations.
//!
//! After `fork()` the child has the parent's memory but only the thread that forked: the
//! engine, timer, callback and DNS threads do not exist there, a lock another thread held
//! stays locked, and every socket is shared with the parent (a request the child wrote
//! on a pooled keep-alive connection could be answered to the parent). So:
//!
//! - A `pthread_atfork` child handler (`host::init`, registered once, with the first
//!   client) bumps the process [`generation`] and closes every descriptor the library opened
//!   (`fds::after_fork_in_child`: `close()` is async-signal-safe; nothing is sent or read
//!   on them).
//! - Whatever holds threads, queued work, locks or descriptors lives in a [`PerProcess`]
//!   cell: used in a later generation, the cell starts a fresh value and leaks the old one
//!   without running or dropping it (its memory belongs to threads that do not exist; its
//!   descriptors are closed and their numbers may be the host's already). A bounded,
//!   one-time cost per client per fork.
//! - The hot path pays one relaxed atomic load per cell it touches (no `getpid()`).

use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering};

static GENERATION: AtomicU64 = AtomicU64::new(0);

/// Bumped in every child of a `fork()` (once the handler is registered).
#[inline]
pub(crate) fn generation() -> u64 {
    GENERATION.load(Ordering::Relaxed)
}

/// Called by the fork handler (`host::init`) in the child of a `fork()`: atomics only.
pub(crate) fn bump_generation() {
    GENERATION.fetch_add(1, Ordering::Relaxed);
}

struct Gen<T> {
    generation: u64,
    value: T,
}

/// A value of one process generation: in a forked child, the first use makes a fresh one
/// and the parent's is leaked, never used, run or dropped there.
pub(crate) struct PerProcess<T> {
    ptr: AtomicPtr<Gen<T>>,
}

// SAFETY: a shared reference hands out `&T` (needs T: Sync) to any thread, and the value
// is dropped on whichever thread drops the cell (needs T: Send).
unsafe impl<T: Send + Sync> Sync for PerProcess<T> {}
unsafe impl<T: Send> Send for PerProcess<T> {}

impl<T: Default> Default for PerProcess<T> {
    fn default() -> Self {
        PerProcess::new(T::default())
    }
}

impl<T> PerProcess<T> {
    pub(crate) fn new(value: T) -> PerProcess<T> {
        PerProcess {
            ptr: AtomicPtr::new(Box::into_raw(Box::new(Gen {
                generation: generation(),
                value,
            }))),
        }
    }

    /// This process's value; made by `make` on the first use after a fork.
    #[inline]
    pub(crate) fn get(&self, make: impl FnOnce() -> T) -> &T {
        let p = self.ptr.load(Ordering::Acquire);
        // SAFETY: `ptr` always points to a live `Gen`: it is freed only by `drop` (which
        // has the cell to itself), and a replaced one is leaked, never freed.
        let g = unsafe { &*p };
        if g.generation == generation() {
            return &g.value;
        }
        self.renew(p, make)
    }

    #[cold]
    fn renew(&self, old: *mut Gen<T>, make: impl FnOnce() -> T) -> &T {
        let fresh = Box::into_raw(Box::new(Gen {
            generation: generation(),
            value: make(),
        }));
        match self
            .ptr
            .compare_exchange(old, fresh, Ordering::AcqRel, Ordering::Acquire)
        {
            // The parent's value is leaked: see the module's documentation.
            // SAFETY: `fresh` is now the cell's, live until the cell is dropped.
            Ok(_) => unsafe { &(*fresh).value },
            Err(current) => {
                // Another thread of this process renewed it first: use theirs.
                // SAFETY: `fresh` was never shared; `current` is live (as in `get`).
                unsafe {
                    drop(Box::from_raw(fresh));
                    &(*current).value
                }
            }
        }
    }

    /// The value if it belongs to this process (None: made before a fork, or never).
    pub(crate) fn current(&self) -> Option<&T> {
        // SAFETY: as in `get`.
        let g = unsafe { &*self.ptr.load(Ordering::Acquire) };
        (g.generation == generation()).then_some(&g.value)
    }
}

impl<T> Drop for PerProcess<T> {
    fn drop(&mut self) {
        // SAFETY: the cell owns the pointer; nobody else can reach it now.
        let g = unsafe { Box::from_raw(*self.ptr.get_mut()) };
        if g.generation != generation() {
            // The parent's: its threads, locks and descriptors are not this process's.
            std::mem::forget(g);
        }
    }
}
